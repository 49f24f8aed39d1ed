"""Class names and the few-shot class splits of PASCAL-5i, COCO-20i and the synthetic set.

PASCAL-5i fold i holds out classes 5i+1..5i+5 as novel (Shaban et al. 2017). COCO-20i
comes in the two conventions of the literature: ``"contiguous"`` blocks 1-20, 21-40, ...
(PFENet, RePRI's default) and the ``"interleaved"`` split of Nguyen & Todorovic 2019, where
fold i holds out i+1, i+5, ..., i+77 (CWT's ``use_split_coco``). Class ids are 1-based, 0 is
background, as in the masks.
"""

import dataclasses

from cwt_jax.errors import DataError

PASCAL_CLASSES = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)

# COCO's 80 categories in the order of their official ids, renumbered 1..80.
COCO_CLASSES = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
)

# Shape and appearance of each synthetic class (see synthetic.py); folds of 5 as in PASCAL.
SYNTHETIC_CLASSES = (
    "circle",
    "square",
    "triangle",
    "diamond",
    "pentagon",
    "hexagon",
    "star",
    "cross",
    "ring",
    "crescent",
    "ellipse",
    "arrow",
    "ell",
    "tee",
    "semicircle",
    "trapezoid",
    "bowtie",
    "octagon",
    "heart",
    "frame",
)

CLASS_NAMES = {"pascal": PASCAL_CLASSES, "coco": COCO_CLASSES, "synthetic": SYNTHETIC_CLASSES}

# PASCAL names that COCO spells differently, for cross-dataset filtering.
_PASCAL_TO_COCO_NAME = {
    "aeroplane": "airplane",
    "diningtable": "dining table",
    "motorbike": "motorcycle",
    "pottedplant": "potted plant",
    "sofa": "couch",
    "tvmonitor": "tv",
}

COCO_CONVENTIONS = ("contiguous", "interleaved")


@dataclasses.dataclass(frozen=True)
class ClassSplit:
    """Novel and base classes of one fold.

    Attributes:
      novel: Novel (held-out, test) class ids, sorted.
      base: Base (training) class ids, sorted; stage-1 label ``base[j]`` becomes ``j + 1``.
      names: Class id -> name for every class of the dataset.

    """

    novel: tuple[int, ...]
    base: tuple[int, ...]
    names: dict[int, str]


def class_split(dataset: str, fold: int | str, convention: str = "contiguous") -> ClassSplit:
    """Returns the novel and base classes of a fold.

    Args:
      dataset: ``"pascal"``, ``"coco"`` or ``"synthetic"``.
      fold: Fold index in 0..3, or ``"all"``: every class a base class, none novel (the
        training of cross-domain runs, which test on another dataset).
      convention: COCO only: ``"contiguous"`` (fold i holds out 20i+1..20i+20) or
        ``"interleaved"`` (fold i holds out i+1, i+5, ..., i+77). Must stay
        ``"contiguous"`` for the 4-fold datasets with 20 classes.

    Returns:
      The fold's ClassSplit.

    Raises:
      DataError: for an unknown dataset, fold or convention.

    """
    if dataset not in CLASS_NAMES:
        raise DataError(f"Unknown dataset {dataset!r}; expected one of {sorted(CLASS_NAMES)}.")
    if fold != "all" and fold not in range(4):
        raise DataError(f"Fold {fold!r} of {dataset} does not exist; folds are 0, 1, 2, 3 and all.")
    if convention not in COCO_CONVENTIONS or (dataset != "coco" and convention != "contiguous"):
        raise DataError(
            f"Split convention {convention!r} is not defined for {dataset}; use 'contiguous'"
            + (" or 'interleaved'." if dataset == "coco" else ".")
        )
    names = CLASS_NAMES[dataset]
    num_classes = len(names)
    if fold == "all":
        novel = ()
    elif convention == "interleaved":
        novel = tuple(range(fold + 1, num_classes + 1, 4))
    else:
        per_fold = num_classes // 4
        novel = tuple(range(fold * per_fold + 1, (fold + 1) * per_fold + 1))
    base = tuple(c for c in range(1, num_classes + 1) if c not in novel)
    return ClassSplit(novel=novel, base=base, names=dict(enumerate(names, start=1)))


def cross_dataset_classes(
    train_dataset: str, train_fold: int, test_dataset: str, convention: str = "contiguous"
) -> tuple[int, ...]:
    """Test classes of a cross-dataset evaluation (e.g. train on COCO fold i, test on PASCAL).

    As in RePRI and CWT, every class of the test dataset is kept unless a class of the
    same name was among the base classes seen in training.

    Args:
      train_dataset: Dataset trained on (``"coco"`` or ``"pascal"``).
      train_fold: Fold trained on.
      test_dataset: Dataset tested on.
      convention: Split convention of the training dataset (see ``class_split``).

    Returns:
      Sorted class ids of ``test_dataset`` whose names were not seen in training.

    """
    seen_split = class_split(train_dataset, train_fold, convention)
    seen = {_canonical_name(train_dataset, seen_split.names[c]) for c in seen_split.base}
    test_names = class_split(test_dataset, 0).names
    return tuple(
        c for c, name in test_names.items() if _canonical_name(test_dataset, name) not in seen
    )


def _canonical_name(dataset: str, name: str) -> str:
    return _PASCAL_TO_COCO_NAME.get(name, name) if dataset == "pascal" else name
