"""Cuts the DeepGlobe land-cover release into PATNet's cross-domain layout.

PATNet (Lei et al., ECCV 2022, `data/preprocess.py`) made the Deepglobe benchmark of
cross-domain few-shot segmentation from the 803 labelled images of the DeepGlobe 2018
land-cover challenge (`train/<id>_sat.jpg`, 2448 x 2448, and `train/<id>_mask.png`, one
colour per land-cover class). This script redoes its three steps:

1. each image and mask is cut into 6 x 6 tiles (408 x 408 for the official size; the
   boundaries of row i are ``int(i * height / 6)``, as PATNet's);
2. a tile is dropped when its mask has a single colour, or when its rarest colour
   (unknown land included) covers at most 4.8 % of the tile;
3. for each of the six classes, every kept tile where the class occurs is written to the
   class's folder, with a binary mask of that class (255 foreground, 0 elsewhere).

The result, under ``--root``, is the layout `data.dataset=deepglobe` reads::

  root/<class 1..6>/test/origin/<id>_<row><column>.jpg
  root/<class 1..6>/test/groundtruth/<id>_<row><column>.png

Class k is PATNet's k-th colour, which its code compares with masks read by OpenCV (BGR):
1 agriculture (RGB 255,255,0), 2 urban (0,255,255), 3 rangeland (255,0,255), 4 forest
(0,255,0), 5 water (0,0,255), 6 barren (255,255,255); unknown land (0,0,0) is no class.
Mask channels are read as set where >= 128, so that a colour off by JPEG-like noise
still counts as its class; on masks of exact colours the tiles are PATNet's (its code
compares exact colours).
Tiles are written as OpenCV writes JPEGs (quality 95), as PATNet's.

Usage::

  python scripts/prepare_deepglobe.py --source=deepglobe/train --root=data/Deepglobe
"""

import argparse
import os

import cv2
import numpy as np
import tqdm

GRID = 6  # tiles per side
MIN_COLOUR_FRACTION = 0.048  # a kept tile's rarest colour covers more than this
# PATNet's class colours in RGB, in class order 1..6.
CLASS_COLOURS = (
    (255, 255, 0),  # agriculture
    (0, 255, 255),  # urban
    (255, 0, 255),  # rangeland
    (0, 255, 0),  # forest
    (0, 0, 255),  # water
    (255, 255, 255),  # barren
)


def tiles(array: np.ndarray, grid: int = GRID):
    """Yields ((row, column), tile) for the grid x grid tiles of an image, as PATNet cuts."""
    height, width = array.shape[:2]
    for row in range(grid):
        for column in range(grid):
            top, bottom = int(row * height / grid), int((row + 1) * height / grid)
            left, right = int(column * width / grid), int((column + 1) * width / grid)
            yield (row, column), array[top:bottom, left:right]


def keep_tile(mask_tile: np.ndarray) -> bool:
    """PATNet's filter: more than one colour, and the rarest covers > 4.8 % of the tile.

    Args:
      mask_tile: (h, w, 3) uint8 RGB mask tile, channels already binarised.

    Returns:
      Whether the tile is kept.
    """
    _, counts = np.unique(mask_tile.reshape(-1, 3), axis=0, return_counts=True)
    return len(counts) > 1 and counts.min() / counts.sum() > MIN_COLOUR_FRACTION


def prepare(source: str, root: str) -> dict[int, int]:
    """Writes the tiles of every `<id>_sat.jpg` / `<id>_mask.png` pair of `source` to `root`.

    Args:
      source: the release's `train` folder.
      root: the Deepglobe root to write (class folders 1..6).

    Returns:
      Class -> number of tiles written for it.

    Raises:
      SystemExit: when `source` holds no pair, or an image has no mask.
    """
    if not os.path.isdir(source):
        raise SystemExit(f"--source={source} is not a folder; give the release's train/ folder.")
    image_names = sorted(name for name in os.listdir(source) if name.endswith("_sat.jpg"))
    if not image_names:
        raise SystemExit(
            f"{source} holds no <id>_sat.jpg image; give the DeepGlobe land-cover release's "
            "train/ folder (images <id>_sat.jpg with masks <id>_mask.png)."
        )
    for name in image_names:
        mask_path = os.path.join(source, name[: -len("_sat.jpg")] + "_mask.png")
        if not os.path.isfile(mask_path):
            raise SystemExit(f"{mask_path} does not exist; every <id>_sat.jpg needs its mask.")
    for class_id in range(1, len(CLASS_COLOURS) + 1):
        for folder in ("origin", "groundtruth"):
            os.makedirs(os.path.join(root, str(class_id), "test", folder), exist_ok=True)
    written = dict.fromkeys(range(1, len(CLASS_COLOURS) + 1), 0)
    for name in tqdm.tqdm(image_names, desc="deepglobe"):
        image_id = name[: -len("_sat.jpg")]
        image = cv2.imread(os.path.join(source, name), cv2.IMREAD_COLOR)
        mask = cv2.imread(os.path.join(source, image_id + "_mask.png"), cv2.IMREAD_COLOR)
        if image is None or mask is None or image.shape != mask.shape:
            raise SystemExit(f"{image_id}: image and mask must be readable and of one size.")
        mask = np.where(cv2.cvtColor(mask, cv2.COLOR_BGR2RGB) >= 128, 255, 0).astype(np.uint8)
        for ((row, column), image_tile), (_, mask_tile) in zip(
            tiles(image), tiles(mask), strict=True
        ):
            if not keep_tile(mask_tile):
                continue
            tile_id = f"{image_id}_{row}{column}"
            for class_id, colour in enumerate(CLASS_COLOURS, start=1):
                foreground = np.all(mask_tile == colour, axis=-1)
                if not foreground.any():
                    continue
                class_dir = os.path.join(root, str(class_id), "test")
                cv2.imwrite(os.path.join(class_dir, "origin", tile_id + ".jpg"), image_tile)
                cv2.imwrite(
                    os.path.join(class_dir, "groundtruth", tile_id + ".png"),
                    foreground.astype(np.uint8) * 255,
                )
                written[class_id] += 1
    return written


def main(argv=None) -> None:
    """Parses the command line and writes the tiles."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", required=True, help="the release's train/ folder")
    parser.add_argument("--root", required=True, help="Deepglobe root to write")
    args = parser.parse_args(argv)
    written = prepare(args.source, args.root)
    counts = ", ".join(f"class {c}: {n}" for c, n in written.items())
    print(f"Wrote the tiles to {args.root} ({counts}).")


if __name__ == "__main__":
    main()
