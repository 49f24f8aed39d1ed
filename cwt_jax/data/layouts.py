"""The on-disk layouts of PASCAL VOC 2012 (+SBD) and COCO 2014, and their image lists.

PASCAL (PFENet/RePRI/CWT)::

  root/JPEGImages/<id>.jpg
  root/SegmentationClassAug/<id>.png      class ids 1..20, 0 background, 255 ignore
  root/ImageSets/Segmentation/val.txt     only needed without a val list file

COCO (RePRI's data/coco after its create_masks.py, or scripts/create_coco_masks.py)::

  root/train2014/<id>.jpg   root/train/<id>.png     class ids 1..80
  root/val2014/<id>.jpg     root/val/<id>.png

A list file has one image per line, ``<image path> <mask path>`` relative to the root, e.g.
``JPEGImages/2007_000032.jpg SegmentationClassAug/2007_000032.png``.
"""

import dataclasses
import os

from cwt_jax.errors import DataError

DOCS_HINT = "see docs/data.md"

_PASCAL_DIRS = ("JPEGImages", "SegmentationClassAug")
_COCO_DIRS = {"train": ("train2014", "train"), "val": ("val2014", "val")}


@dataclasses.dataclass(frozen=True)
class Item:
    """One listed image.

    Attributes:
      id: Image file stem, unique within a split; for the cross-domain datasets, the
        image's path relative to the root (`cross_domain`).
      image_path: Absolute path of the JPEG/PNG image.
      mask_path: Absolute path of the PNG mask: class ids, or a binary mask (`cross_domain`).

    """

    id: str
    image_path: str
    mask_path: str


def pascal_items(root: str, split: str, list_file: str | None) -> list[Item]:
    """Lists the images of a PASCAL-5i split.

    Args:
      root: VOC2012 folder holding JPEGImages/ and SegmentationClassAug/.
      split: ``"train"`` or ``"val"``.
      list_file: A list file in the PFENet format, or None for the default: VOC's
        ImageSets/Segmentation/val.txt for val, every other SegmentationClassAug mask for
        train.

    Returns:
      The split's items in list order.

    Raises:
      DataError: for a missing root, folder, list file or listed file, or a bad line.

    """
    _check_root(root, "PASCAL", _PASCAL_DIRS, "JPEGImages/*.jpg and SegmentationClassAug/*.png")
    if list_file is not None:
        return read_list_file(root, list_file)
    val_file = os.path.join(root, "ImageSets", "Segmentation", "val.txt")
    if not os.path.isfile(val_file):
        raise DataError(
            f"{val_file} does not exist; it defines the default PASCAL val split. Provide it "
            f"(it ships with VOC2012) or pass list files ({DOCS_HINT})."
        )
    with open(val_file) as f:
        val_ids = [line.strip() for line in f if line.strip()]
    if split == "val":
        ids = val_ids
    else:
        excluded = set(val_ids)
        masks = sorted(os.listdir(os.path.join(root, "SegmentationClassAug")))
        ids = [m[:-4] for m in masks if m.endswith(".png") and m[:-4] not in excluded]
    items = [
        Item(
            i,
            os.path.join(root, "JPEGImages", i + ".jpg"),
            os.path.join(root, "SegmentationClassAug", i + ".png"),
        )
        for i in ids
    ]
    return _checked(items, val_file if split == "val" else os.path.join(root, _PASCAL_DIRS[1]))


def coco_items(root: str, split: str, list_file: str | None) -> list[Item]:
    """Lists the images of a COCO-20i split.

    Args:
      root: COCO folder holding train2014/, val2014/ and the mask folders train/, val/.
      split: ``"train"`` or ``"val"``.
      list_file: A list file in the RePRI format, or None for every mask of the split's
        mask folder (images without annotations have no mask and are left out).

    Returns:
      The split's items in list order.

    Raises:
      DataError: for a missing root, folder, list file or listed file, or a bad line.

    """
    image_dir, mask_dir = _COCO_DIRS[split]
    _check_root(
        root,
        "COCO",
        (image_dir, mask_dir),
        f"{image_dir}/*.jpg and the masks {mask_dir}/*.png made by scripts/create_coco_masks.py",
    )
    if list_file is not None:
        return read_list_file(root, list_file)
    masks = sorted(m for m in os.listdir(os.path.join(root, mask_dir)) if m.endswith(".png"))
    items = [
        Item(
            m[:-4],
            os.path.join(root, image_dir, m[:-4] + ".jpg"),
            os.path.join(root, mask_dir, m),
        )
        for m in masks
    ]
    return _checked(items, os.path.join(root, mask_dir))


def read_list_file(root: str, list_file: str) -> list[Item]:
    """Reads a list file of ``<image path> <mask path>`` lines relative to ``root``.

    Args:
      root: Data root the paths are relative to.
      list_file: Path of the list file.

    Returns:
      The listed items in order; the id of an item is its image file stem.

    Raises:
      DataError: if the file is missing, a line does not parse, or a listed file is missing.

    """
    if not os.path.isfile(list_file):
        raise DataError(
            f"List file {list_file} does not exist; give the path of a file with lines "
            f"'<image path> <mask path>' relative to the data root ({DOCS_HINT})."
        )
    items = []
    with open(list_file) as f:
        for line_number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2:
                raise DataError(
                    f"{list_file}, line {line_number}: {line.strip()!r} does not parse; "
                    "expected '<image path> <mask path>' separated by a space."
                )
            image_path, mask_path = (os.path.join(root, p) for p in fields)
            items.append(Item(_stem(fields[0]), image_path, mask_path))
    if not items:
        raise DataError(f"List file {list_file} lists no images.")
    return _checked(items, list_file)


def _check_root(root: str, dataset: str, folders, expected: str) -> None:
    if not root:
        raise DataError(
            f"No {dataset} data root is set; set data.root (data.test_root for the test "
            f"dataset of a cross-dataset run) to the folder that holds {expected} "
            f"({DOCS_HINT} for the download and layout)."
        )
    for folder in folders:
        if not os.path.isdir(os.path.join(root, folder)):
            raise DataError(
                f"{dataset} data root {root} has no folder {folder}/; expected {expected} "
                f"under the root ({DOCS_HINT} for the download and layout)."
            )


def _checked(items: list[Item], source: str) -> list[Item]:
    seen = set()
    for item in items:
        if item.id in seen:
            raise DataError(f"Image id {item.id!r} appears twice in {source}; ids must be unique.")
        seen.add(item.id)
        for path in (item.image_path, item.mask_path):
            if not os.path.isfile(path):
                raise DataError(f"{path} does not exist (listed by {source}).")
    if not items:
        raise DataError(f"{source} lists no images.")
    return items


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]
