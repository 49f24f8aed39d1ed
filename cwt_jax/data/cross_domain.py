"""The one-class-per-image datasets of cross-domain few-shot segmentation, in their layouts.

PATNet's (ECCV 2022) layouts, each under its own ``data.root``::

  fss1000     <root>/<class>/<n>.jpg, mask <root>/<class>/<n>.png      (520/240/240 classes)
  deepglobe   <root>/<1..6>/test/origin/<id>.jpg, mask <root>/<c>/test/groundtruth/<id>.png
  isic        <root>/ISIC2018_Task1-2_Training_Input/<1..3>/<id>.jpg,
              mask <root>/ISIC2018_Task1_Training_GroundTruth/<id>_segmentation.png
  chest_xray  <root>/CXR_png/<id>.png, mask <root>/masks/<id>_mask.png
  folder      <root>/<class>/<name>.jpg, mask <root>/<class>/<name>.png (one's own classes)

Each image shows one class; its mask is foreground where its grey level is >= 128
(`codec.decode_binary_mask`). An image's id is its path relative to the root, e.g.
``ISIC2018_Task1-2_Training_Input/2/ISIC_0000202.jpg``. Class ids are 1-based in the
order of a split's classes: sorted names for fss1000 and folder, the folders 1..6 and 1..3
for deepglobe and isic (named `DEEPGLOBE_CLASS_NAMES` and `ISIC_CLASS_NAMES`, as the
preparation scripts fill them), and the one class ``lung`` of chest_xray.

Chest X-ray's release holds more images in CXR_png/ than masks in masks/: as PATNet's
loader, the dataset is its masks, each with its image (an image without a mask is not
part of it). In the other layouts the images are listed and each needs its mask.
"""

import dataclasses
import os
from collections.abc import Mapping, Sequence

from cwt_jax.data import layouts
from cwt_jax.errors import DataError

DATASETS = ("fss1000", "deepglobe", "isic", "chest_xray", "folder")
# PATNet's episodes of these: the class of episode i is class i mod the number of classes,
# its query and supports drawn at random among the class's images, 600 episodes a run.
CLASS_CYCLED = ("deepglobe", "isic", "chest_xray")
# Every dataset's evaluation split: fss1000 and folder also have "train" and "val" (those
# their class lists name), the others only this.
EVALUATION_SPLIT = "test"
# HSNet's data/splits/fss/{trn,val,test}.txt, shipped in the package.
FSS1000_LISTS = {
    split: os.path.join(os.path.dirname(__file__), "fss1000_splits", f"{name}.txt")
    for split, name in (("train", "trn"), ("val", "val"), ("test", "test"))
}
DOCS_HINT = "see docs/cross_domain.md"

_DEEPGLOBE_CLASSES = ("1", "2", "3", "4", "5", "6")
# The land cover of each folder: PATNet's colours in its order, which its code compares with
# masks read by OpenCV, in BGR (scripts/prepare_deepglobe.py).
DEEPGLOBE_CLASS_NAMES = ("agriculture", "urban", "rangeland", "forest", "water", "barren")
_ISIC_IMAGES = "ISIC2018_Task1-2_Training_Input"
_ISIC_MASKS = "ISIC2018_Task1_Training_GroundTruth"
_ISIC_CLASSES = ("1", "2", "3")
# The diagnosis of each folder, as IFA's preparation numbers them (scripts/prepare_isic.py).
ISIC_CLASS_NAMES = ("nevus", "seborrheic_keratosis", "melanoma")


@dataclasses.dataclass(frozen=True)
class LabelledSplit:
    """The images of one split, each of one class.

    Attributes:
      class_names: Name of class id c at ``class_names[c - 1]``.
      class_folders: The folder holding each class's images (for messages).
      items: The images, class by class; ``Item.id`` is the path relative to the root.
      labels: The class id of each item.

    """

    class_names: tuple[str, ...]
    class_folders: tuple[str, ...]
    items: tuple[layouts.Item, ...]
    labels: tuple[int, ...]


def splits(
    dataset: str,
    root: str,
    class_lists: Mapping[str, str | Sequence[str]],
    wanted: Sequence[str] = ("train", "val", "test"),
) -> dict[str, LabelledSplit]:
    """Lists the images of a dataset's splits.

    Args:
      dataset: One of `DATASETS`.
      root: The dataset's own folder (``data.root``).
      class_lists: fss1000 and folder only: split -> a class list file (one name a line)
        or the class names; a split left out is fss1000's shipped list, and for folder
        is empty (with no split given at all, every class folder is a test class).
      wanted: The splits to list (a test dataset needs its test split only).

    Returns:
      Split name -> its images, for the splits that hold classes.

    Raises:
      DataError: for a root without the layout, a listed class without images, an image
        without its mask or a mask without its image (chest_xray).

    """
    _check_root(dataset, root)
    if dataset == "deepglobe":
        return {"test": _deepglobe(root)}
    if dataset == "isic":
        return {"test": _isic(root)}
    if dataset == "chest_xray":
        return {"test": _chest_xray(root)}
    if dataset == "fss1000":
        names = {split: class_lists.get(split, FSS1000_LISTS[split]) for split in wanted}
    elif class_lists:
        names = {split: class_lists[split] for split in wanted if split in class_lists}
    else:
        names = {
            "test": sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        }
        if not names["test"]:
            raise DataError(
                f"folder data root {root} holds no class folder; expected <class>/<name>.jpg "
                f"with masks <class>/<name>.png ({DOCS_HINT})."
            )
    listed = {split: _class_names(value) for split, value in names.items()}
    return {
        split: _class_folders(root, sorted(classes)) for split, classes in listed.items() if classes
    }


def _check_root(dataset: str, root: str) -> None:
    expected = {
        "fss1000": "<class>/<n>.jpg with masks <class>/<n>.png",
        "folder": "<class>/<name>.jpg with masks <class>/<name>.png",
        "deepglobe": "1..6/test/origin/<id>.jpg and 1..6/test/groundtruth/<id>.png",
        "isic": f"{_ISIC_IMAGES}/1..3/<id>.jpg and {_ISIC_MASKS}/<id>_segmentation.png",
        "chest_xray": "CXR_png/<id>.png and masks/<id>_mask.png",
    }[dataset]
    if not root:
        raise DataError(
            f"No {dataset} data root is set; set data.test_root (data.root where {dataset} is "
            f"data.dataset) to the folder holding {expected} ({DOCS_HINT})."
        )
    if not os.path.isdir(root):
        raise DataError(
            f"{dataset} data root {root} does not exist; expected a folder holding {expected} "
            f"({DOCS_HINT})."
        )
    folders = {
        "deepglobe": [os.path.join(c, "test", "origin") for c in _DEEPGLOBE_CLASSES],
        "isic": [os.path.join(_ISIC_IMAGES, c) for c in _ISIC_CLASSES] + [_ISIC_MASKS],
        "chest_xray": ["CXR_png", "masks"],
    }.get(dataset, [])
    for folder in folders:
        if not os.path.isdir(os.path.join(root, folder)):
            raise DataError(
                f"{dataset} data root {root} has no folder {folder}/; expected {expected} "
                f"under the root ({DOCS_HINT})."
            )


def _class_names(value: str | Sequence[str]) -> list[str]:
    """The class names of a list file, or the names themselves."""
    if not isinstance(value, str):
        return [str(name) for name in value]
    if not os.path.isfile(value):
        raise DataError(
            f"Class list file {value} does not exist; give a file with one class folder "
            f"name a line ({DOCS_HINT})."
        )
    with open(value) as f:
        return [line.strip() for line in f if line.strip()]


def _class_folders(root: str, class_names: Sequence[str]) -> LabelledSplit:
    """FSS-1000's layout: `<root>/<class>/<n>.jpg`, each with `<n>.png` beside it."""
    items, labels = [], []
    for class_id, name in enumerate(class_names, start=1):
        folder = os.path.join(root, name)
        images = (
            sorted(f for f in os.listdir(folder) if f.endswith(".jpg"))
            if os.path.isdir(folder)
            else []
        )
        if not images:
            raise DataError(
                f"Class {name!r} has no images: {folder}/ should hold <n>.jpg images with "
                f"<n>.png masks ({DOCS_HINT})."
            )
        for image in images:
            mask = os.path.join(folder, image[:-4] + ".png")
            items.append(_item(root, os.path.join(folder, image), mask))
            labels.append(class_id)
    return LabelledSplit(
        tuple(class_names),
        tuple(os.path.join(root, name) for name in class_names),
        tuple(items),
        tuple(labels),
    )


def _deepglobe(root: str) -> LabelledSplit:
    items, labels, folders = [], [], []
    for class_id, name in enumerate(_DEEPGLOBE_CLASSES, start=1):
        folder = os.path.join(root, name, "test")
        folders.append(os.path.join(folder, "origin"))
        for image in _listed(folders[-1], ".jpg"):
            mask = os.path.join(folder, "groundtruth", image[:-4] + ".png")
            items.append(_item(root, os.path.join(folder, "origin", image), mask))
            labels.append(class_id)
    return LabelledSplit(DEEPGLOBE_CLASS_NAMES, tuple(folders), tuple(items), tuple(labels))


def _isic(root: str) -> LabelledSplit:
    items, labels, folders = [], [], []
    for class_id, name in enumerate(_ISIC_CLASSES, start=1):
        folders.append(os.path.join(root, _ISIC_IMAGES, name))
        for image in _listed(folders[-1], ".jpg"):
            mask = os.path.join(root, _ISIC_MASKS, image[:-4] + "_segmentation.png")
            items.append(_item(root, os.path.join(folders[-1], image), mask))
            labels.append(class_id)
    return LabelledSplit(ISIC_CLASS_NAMES, tuple(folders), tuple(items), tuple(labels))


def _chest_xray(root: str) -> LabelledSplit:
    items = []
    for mask in _listed(os.path.join(root, "masks"), ".png"):
        image_id = mask[: -len("_mask.png")] if mask.endswith("_mask.png") else mask[:-4]
        image = os.path.join(root, "CXR_png", image_id + ".png")
        if not os.path.isfile(image):
            raise DataError(
                f"Mask {os.path.join(root, 'masks', mask)} has no image {image}; every "
                "masks/<id>_mask.png needs CXR_png/<id>.png."
            )
        items.append(
            layouts.Item(os.path.relpath(image, root), image, os.path.join(root, "masks", mask))
        )
    return LabelledSplit(("lung",), (os.path.join(root, "masks"),), tuple(items), (1,) * len(items))


def _listed(folder: str, extension: str) -> list[str]:
    """The files of a folder with the extension, sorted; an error where there is none."""
    names = sorted(f for f in os.listdir(folder) if f.endswith(extension))
    if not names:
        raise DataError(f"{folder}/ holds no {extension} file; expected the class's images.")
    return names


def _item(root: str, image: str, mask: str) -> layouts.Item:
    if not os.path.isfile(mask):
        raise DataError(f"Image {image} has no mask {mask}; each image needs its mask there.")
    return layouts.Item(os.path.relpath(image, root), image, mask)
