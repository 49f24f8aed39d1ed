"""TFDS builders (array_record) for PASCAL-5i, COCO-20i, synthetic and cross-domain sets.

The cross-domain sets are the one-class-per-image datasets of `cross_domain`.

Records are ``{"id": str, "image": encoded JPEG/PNG bytes, "mask": PNG bytes}``: storing
the files' own bytes keeps TensorFlow out of both writing and reading (TFDS image features
need it). Records keep the order of the image list (``disable_shuffling``), and the
dataset's metadata.json holds, per split, the image ids and each image's class pixel
counts, so episodes can be indexed without reading the images. Every image and mask is
decoded and checked once, when the dataset is prepared. A one-class-per-image dataset's
metadata also holds, per split, its class names and folders and each image's class id
(``labels``); its masks are stored as read and thresholded when decoded.
"""

import concurrent.futures
import functools
import hashlib
import json
import os
from collections.abc import Callable

import cv2
import numpy as np
import tensorflow_datasets as tfds

from cwt_jax.data import codec, cross_domain, layouts, synthetic
from cwt_jax.data.classes import CLASS_NAMES
from cwt_jax.errors import DataError

SPLITS = ("train", "val")


class _SegmentationBuilder(tfds.core.GeneratorBasedBuilder):
    """Shared features and metadata of the segmentation builders."""

    VERSION = tfds.core.Version("1.0.0")
    DATASET = ""  # key of classes.CLASS_NAMES
    # Nothing is downloaded, so no checksums file; tfds' lookup of one next to the code
    # needs the importlib_resources backport, which we do not depend on.
    code_path = None

    @classmethod
    def get_builder_config(cls, name: str, version=None) -> tfds.core.BuilderConfig:
        """Any name is a config: it fingerprints the builder's inputs (`prepare_*`)."""
        del version
        return _builder_config(name)

    # TFDS announces a "download" of unknown size; nothing is downloaded here (`_prepared`
    # says what is prepared instead).
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self.DATASET} images and masks as encoded bytes.",
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "image": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "mask": tfds.features.Tensor(shape=(), dtype=np.object_),
                }
            ),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Data are local: the user's folders, or generated.
        scanned = {split: self._scan(split) for split in SPLITS}
        self.info.metadata.update(
            dataset=self.DATASET,
            num_classes=len(CLASS_NAMES[self.DATASET]),
            splits={
                split: {
                    "ids": [entry[0] for entry in entries],
                    "class_pixels": [sorted(entry[1].items()) for entry in entries],
                }
                for split, entries in scanned.items()
            },
        )
        return {split: self._generate_examples(entries) for split, entries in scanned.items()}

    def _scan(self, split: str) -> list[tuple]:
        """Returns (id, class pixel counts, payload) per image of the split, in list order."""
        raise NotImplementedError


class _FileBuilder(_SegmentationBuilder):
    """A builder over a user's image and mask files."""

    def __init__(self, *, items: dict[str, list[layouts.Item]], **kwargs):
        self._items = items
        super().__init__(**kwargs)

    def _scan(self, split):
        num_classes = len(CLASS_NAMES[self.DATASET])
        # cv2 releases the GIL while decoding, so threads scale.
        with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            counts = pool.map(lambda item: _check_item(item, num_classes), self._items[split])
            return [(item.id, c, item) for item, c in zip(self._items[split], counts, strict=True)]

    def _generate_examples(self, entries):
        for index, (image_id, _, item) in enumerate(entries):
            yield (
                index,
                {"id": image_id, "image": _read(item.image_path), "mask": _read(item.mask_path)},
            )


class Pascal5i(_FileBuilder):
    """PASCAL VOC 2012 with the SBD-augmented masks (SegmentationClassAug)."""

    DATASET = "pascal"


class Coco20i(_FileBuilder):
    """COCO 2014 with per-image class-id masks (ids 1..80)."""

    DATASET = "coco"


class Synthetic(_SegmentationBuilder):
    """The embedded synthetic benchmark (see synthetic.py)."""

    DATASET = "synthetic"

    def __init__(self, *, seed: int, num_images: dict[str, int], image_size: int, **kwargs):
        self._seed, self._num_images, self._image_size = seed, num_images, image_size
        super().__init__(**kwargs)

    def _scan(self, split):
        entries = []
        for index in range(self._num_images[split]):
            image, mask = synthetic.generate_example(self._seed, split, index, self._image_size)
            payload = (_encode_png(cv2.cvtColor(image, cv2.COLOR_RGB2BGR)), _encode_png(mask))
            entries.append((f"{split}_{index:06d}", codec.class_pixel_counts(mask), payload))
        return entries

    def _generate_examples(self, entries):
        for index, (image_id, _, (image, mask)) in enumerate(entries):
            yield index, {"id": image_id, "image": image, "mask": mask}


class CrossDomain(_SegmentationBuilder):
    """A one-class-per-image dataset (`cross_domain`): binary masks stored as read."""

    def __init__(self, *, dataset: str, splits: dict[str, cross_domain.LabelledSplit], **kwargs):
        self.DATASET, self._splits = dataset, splits
        super().__init__(**kwargs)

    def _split_generators(self, dl_manager):
        del dl_manager  # The user's folders.
        scanned = {name: self._scan(name) for name in self._splits}
        self.info.metadata.update(
            dataset=self.DATASET,
            splits={
                name: {
                    "ids": [item.id for item in split.items],
                    "class_pixels": [sorted(counts.items()) for counts in scanned[name]],
                    "labels": list(split.labels),
                    "class_names": list(split.class_names),
                    "class_folders": list(split.class_folders),
                }
                for name, split in self._splits.items()
            },
        )
        return {name: self._generate_examples(name) for name in self._splits}

    def _scan(self, split):
        """Class pixel counts of each image, each image and mask decoded and checked once."""
        labelled = self._splits[split]
        with concurrent.futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            return list(pool.map(_check_binary_item, labelled.items, labelled.labels))

    def _generate_examples(self, split):
        for index, item in enumerate(self._splits[split].items):
            yield (
                index,
                {"id": item.id, "image": _read(item.image_path), "mask": _read(item.mask_path)},
            )


def prepare_pascal(
    root: str,
    data_dir: str,
    train_list: str | None = None,
    val_list: str | None = None,
    report: Callable[[str], None] | None = None,
) -> str:
    """Builds (once) the ``pascal5i`` TFDS dataset from a VOC2012 folder.

    Args:
      root: Folder with JPEGImages/ and SegmentationClassAug/ (see layouts.py).
      data_dir: TFDS data dir to write to; a second call with the same inputs reuses it.
      train_list: PFENet-format list file of the train images, or None for every
        SegmentationClassAug mask not in VOC's val.txt.
      val_list: List file of the val images, or None for ImageSets/Segmentation/val.txt.
      report: Shows a line to the user when the dataset is built (the first call); None
        says nothing.

    Returns:
      The dataset directory, to pass to ``open_split``.

    Raises:
      DataError: for a missing or malformed input (named in the message).

    """
    lists = {"train": train_list, "val": val_list}
    items = {split: layouts.pascal_items(root, split, lists[split]) for split in SPLITS}
    return _prepare(Pascal5i, items, data_dir, report)


def prepare_coco(
    root: str,
    data_dir: str,
    train_list: str | None = None,
    val_list: str | None = None,
    report: Callable[[str], None] | None = None,
) -> str:
    """Builds (once) the ``coco20i`` TFDS dataset from a COCO 2014 folder.

    Args:
      root: Folder with train2014/, val2014/ and the masks train/, val/ (see layouts.py).
      data_dir: TFDS data dir to write to; a second call with the same inputs reuses it.
      train_list: RePRI-format list file of the train images, or None for every mask in
        train/.
      val_list: List file of the val images, or None for every mask in val/.
      report: Shows a line to the user when the dataset is built (the first call); None
        says nothing.

    Returns:
      The dataset directory, to pass to ``open_split``.

    Raises:
      DataError: for a missing or malformed input (named in the message).

    """
    lists = {"train": train_list, "val": val_list}
    items = {split: layouts.coco_items(root, split, lists[split]) for split in SPLITS}
    return _prepare(Coco20i, items, data_dir, report)


def prepare_synthetic(
    data_dir: str,
    seed: int = 0,
    num_train: int = 1500,
    num_val: int = 500,
    image_size: int = 128,
    report: Callable[[str], None] | None = None,
) -> str:
    """Generates (once) the ``synthetic`` TFDS dataset.

    Args:
      data_dir: TFDS data dir to write to; a second call with the same arguments reuses it.
      seed: Generation seed; the dataset is a pure function of the arguments.
      num_train: Number of train images.
      num_val: Number of val images.
      image_size: Side length of the square images.
      report: Shows a line to the user when the dataset is generated (the first call);
        None says nothing.

    Returns:
      The dataset directory, to pass to ``open_split``.

    """
    if min(num_train, num_val, image_size) <= 0:
        raise DataError(
            f"Synthetic sizes must be positive, got num_train={num_train}, num_val={num_val}, "
            f"image_size={image_size}."
        )
    builder = Synthetic(
        seed=seed,
        num_images={"train": num_train, "val": num_val},
        image_size=image_size,
        config=f"s{seed}_n{num_train}_{num_val}_{image_size}px_{synthetic.GENERATOR_VERSION}",
        data_dir=data_dir,
        file_format="array_record",
    )
    return _prepared(builder, report)


def prepare_cross_domain(
    dataset: str,
    root: str,
    data_dir: str,
    class_lists: dict | None = None,
    report: Callable[[str], None] | None = None,
    wanted: tuple[str, ...] = ("train", "val", "test"),
) -> str:
    """Builds (once) the TFDS dataset of a one-class-per-image dataset's folder.

    Args:
      dataset: One of `cross_domain.DATASETS`.
      root: The dataset's folder, in its layout (see cross_domain.py).
      data_dir: TFDS data dir to write to; a second call with the same inputs reuses it.
      class_lists: fss1000 and folder: split -> class list file or class names
        (`cross_domain.splits`); None for the defaults.
      report: Shows a line to the user when the dataset is built (the first call); None
        says nothing.
      wanted: The splits to prepare, of those the dataset has.

    Returns:
      The dataset directory, to pass to ``open_split``.

    Raises:
      DataError: for a missing or malformed input (named in the message).

    """
    splits = cross_domain.splits(dataset, root, class_lists or {}, wanted)
    listing = {
        name: {"classes": s.class_names, "items": [vars(i) for i in s.items], "labels": s.labels}
        for name, s in splits.items()
    }
    fingerprint = json.dumps({"dataset": dataset, "splits": listing}, sort_keys=True)
    builder = CrossDomain(
        dataset=dataset,
        splits=splits,
        config="lists_" + hashlib.sha256(fingerprint.encode()).hexdigest()[:12],
        data_dir=data_dir,
        file_format="array_record",
    )
    return _prepared(builder, report)


def _prepare(builder_class, items, data_dir, report):
    # The config name fingerprints the image lists, so changed lists build a new dataset.
    fingerprint = json.dumps({s: [vars(i) for i in items[s]] for s in SPLITS}, sort_keys=True)
    name = "lists_" + hashlib.sha256(fingerprint.encode()).hexdigest()[:12]
    builder = builder_class(
        items=items,
        config=name,
        data_dir=data_dir,
        file_format="array_record",
    )
    return _prepared(builder, report)


def _prepared(builder: _SegmentationBuilder, report: Callable[[str], None] | None) -> str:
    """Builds the dataset unless it is there, saying so; returns its directory."""
    # TFDS's `is_prepared` logs a warning for a folder that does not exist yet.
    if report is not None and not (builder.data_path.exists() and builder.is_prepared()):
        report(f"Preparing the {builder.DATASET} dataset in {builder.data_dir}, once.")
    builder.download_and_prepare()
    return os.fspath(builder.data_path)


@functools.cache
def _builder_config(name: str) -> tfds.core.BuilderConfig:
    return tfds.core.BuilderConfig(name=name)


def _check_item(item, num_classes):
    mask = codec.decode_mask(_read(item.mask_path), item.mask_path)
    codec.check_mask_values(mask, num_classes, item.mask_path)
    image = codec.decode_image(_read(item.image_path), item.image_path)
    if image.shape[:2] != mask.shape:
        raise DataError(
            f"Image {item.image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
            f"{item.mask_path} is {mask.shape[1]}x{mask.shape[0]}; they must match."
        )
    return codec.class_pixel_counts(mask)


def _check_binary_item(item, label):
    mask = codec.decode_binary_mask(_read(item.mask_path), item.mask_path)
    image = codec.decode_image(_read(item.image_path), item.image_path)
    if image.shape[:2] != mask.shape:
        raise DataError(
            f"Image {item.image_path} is {image.shape[1]}x{image.shape[0]} but its mask "
            f"{item.mask_path} is {mask.shape[1]}x{mask.shape[0]}; they must match."
        )
    return {label: int(mask.sum())}


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _encode_png(array):
    ok, data = cv2.imencode(".png", array)
    assert ok
    return data.tobytes()
