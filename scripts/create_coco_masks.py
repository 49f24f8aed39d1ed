"""Writes COCO-20i class-id masks from the official COCO 2014 instance annotations.

Reproduces RePRI's data/coco/create_masks.py (the masks every COCO-20i number of
PFENet/RePRI/CWT was measured on): for each image with at least one non-crowd annotation,
a uint8 PNG where each annotation's first polygon is filled, in annotation order, with its
category's rank among the 80 categories (1..80); 0 is background. Images without non-crowd
annotations get no mask (and so are not in the dataset). ``--all_polygons`` fills every
polygon of an annotation instead, which is more faithful to COCO but not what the
published numbers used.

The annotations are read with the json module; pycocotools is not needed.

Usage::

  python scripts/create_coco_masks.py --root /data/coco

with ``/data/coco/annotations/instances_{train,val}2014.json``; writes
``/data/coco/{train,val}/<image stem>.png`` next to ``train2014/`` and ``val2014/``.
"""

import argparse
import json
import os

import cv2
import numpy as np
import tqdm

SPLITS = {"train2014": "train", "val2014": "val"}


def class_id_mask(image: dict, annotations: list[dict], rank: dict, all_polygons: bool):
    """Draws one image's mask.

    Args:
      image: COCO image entry (``height``, ``width``).
      annotations: The image's non-crowd annotations, in file order.
      rank: COCO category id -> class id 1..80.
      all_polygons: Fill every polygon of an annotation, not only its first.

    Returns:
      uint8 array (height, width) of class ids.

    """
    mask = np.zeros((image["height"], image["width"]), np.uint8)
    for annotation in annotations:
        polygons = annotation["segmentation"] if all_polygons else annotation["segmentation"][:1]
        for polygon in polygons:
            points = np.array(polygon).reshape(-1, 2).astype(np.int32)
            cv2.fillPoly(mask, points[np.newaxis], rank[annotation["category_id"]])
    return mask


def write_masks(annotation_file: str, output_dir: str, all_polygons: bool = False) -> int:
    """Writes the masks of one instances_*.json file.

    Args:
      annotation_file: Path of ``instances_<split>2014.json``.
      output_dir: Folder to write ``<image stem>.png`` files to (created if needed).
      all_polygons: See the module docstring.

    Returns:
      The number of masks written.

    """
    with open(annotation_file) as f:
        coco = json.load(f)
    rank = {category["id"]: i for i, category in enumerate(coco["categories"], start=1)}
    by_image = {}
    for annotation in coco["annotations"]:
        if not annotation["iscrowd"]:
            by_image.setdefault(annotation["image_id"], []).append(annotation)
    os.makedirs(output_dir, exist_ok=True)
    written = 0
    for image in tqdm.tqdm(coco["images"], desc=os.path.basename(annotation_file)):
        if image["id"] not in by_image:
            continue
        mask = class_id_mask(image, by_image[image["id"]], rank, all_polygons)
        stem = os.path.splitext(image["file_name"])[0]
        cv2.imwrite(os.path.join(output_dir, stem + ".png"), mask)
        written += 1
    return written


def main(argv=None) -> None:
    """Parses the command line and writes the masks of both splits."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="COCO folder holding annotations/")
    parser.add_argument("--all_polygons", action="store_true", help="fill every polygon")
    args = parser.parse_args(argv)
    for coco_split, mask_dir in SPLITS.items():
        annotation_file = os.path.join(args.root, "annotations", f"instances_{coco_split}.json")
        if not os.path.isfile(annotation_file):
            raise SystemExit(
                f"{annotation_file} does not exist; download annotations_trainval2014.zip from "
                "cocodataset.org and unzip it in the root (see docs/data.md)."
            )
        count = write_masks(annotation_file, os.path.join(args.root, mask_dir), args.all_polygons)
        print(f"{count} masks written to {os.path.join(args.root, mask_dir)}")


if __name__ == "__main__":
    main()
