"""Reading a prepared dataset split: records by index, ids and class statistics."""

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from cwt_jax.data import codec
from cwt_jax.data.classes import CLASS_NAMES
from cwt_jax.errors import DataError

# An image counts for a class only if the class covers this many pixels of its mask
# (PFENet/RePRI/CWT's 2 * 32 * 32 rule, on the mask at its stored resolution).
MIN_CLASS_PIXELS = 2 * 32 * 32
# Images of each split that `fingerprint` hashes.
FINGERPRINT_IMAGES = 20


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split of a prepared dataset.

    An image counts for a class (is eligible) where the class covers MIN_CLASS_PIXELS
    pixels of its class-id mask; in a one-class-per-image dataset (``labels`` given),
    where it is an image of the class, whatever its mask.

    Attributes:
      dataset: ``"pascal"``, ``"coco"``, ``"synthetic"`` or one of
        ``cross_domain.DATASETS``.
      name: Split name: ``"train"``, ``"val"`` or ``"test"``.
      source: TFDS array_record data source; ``source[i]`` is ``{"id", "image", "mask"}``.
      ids: Image id of each record.
      class_pixels: Class id -> pixel count of each record.
      class_names: Name of class id c at ``class_names[c - 1]``.
      labels: The class id of each record of a one-class-per-image dataset, whose masks
        are binary files; None where masks hold class ids.
      class_folders: Where each class's images lie, for messages; empty unless
        ``labels`` is given.

    """

    dataset: str
    name: str
    source: Any
    ids: tuple[str, ...]
    class_pixels: tuple[dict[int, int], ...]
    class_names: tuple[str, ...]
    labels: tuple[int, ...] | None = None
    class_folders: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def class_ids(self) -> tuple[int, ...]:
        """Every class id of the dataset: 1..len(class_names)."""
        return tuple(range(1, len(self.class_names) + 1))

    @functools.cached_property
    def index_of(self) -> dict[str, int]:
        """Image id -> record index."""
        return {image_id: index for index, image_id in enumerate(self.ids)}

    def eligible_images(self, class_id: int) -> np.ndarray:
        """Record indices of the images where ``class_id`` covers MIN_CLASS_PIXELS pixels.

        Args:
          class_id: Class id.

        Returns:
          int64 array of record indices, in record order.

        """
        return self._eligible.get(class_id, np.zeros((0,), np.int64))

    def counts_for(self, index: int, class_id: int) -> bool:
        """Whether record `index` is eligible for `class_id` (see the class docstring)."""
        return int(index) in self._eligible_sets.get(class_id, ())

    @functools.cached_property
    def _eligible_sets(self) -> dict[int, frozenset]:
        return {c: frozenset(indices.tolist()) for c, indices in self._eligible.items()}

    @functools.cached_property
    def _eligible(self) -> dict[int, np.ndarray]:
        eligible = {}
        if self.labels is not None:
            for index, label in enumerate(self.labels):
                eligible.setdefault(label, []).append(index)
            return {c: np.array(indices, np.int64) for c, indices in eligible.items()}
        for index, counts in enumerate(self.class_pixels):
            for class_id, count in counts.items():
                if count >= MIN_CLASS_PIXELS:
                    eligible.setdefault(class_id, []).append(index)
        return {c: np.array(indices, np.int64) for c, indices in eligible.items()}

    def subset(self, indices: Sequence[int], name: str) -> "Split":
        """The records at `indices` (in that order) as a split of their own, named `name`."""
        indices = tuple(int(index) for index in indices)
        return Split(
            dataset=self.dataset,
            name=name,
            source=_Records(self.source, indices),
            ids=tuple(self.ids[index] for index in indices),
            class_pixels=tuple(self.class_pixels[index] for index in indices),
            class_names=self.class_names,
            labels=None if self.labels is None else tuple(self.labels[i] for i in indices),
            class_folders=self.class_folders,
        )

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decodes one record.

        Args:
          index: Record index.

        Returns:
          image float32 (H, W, 3) RGB on 0..255, mask uint8 (H, W) of class ids; in a
          one-class-per-image split, {0, 1}, 1 the record's class (`mask_id`).

        """
        record = self.source[int(index)]
        name = f"record {self.ids[index]!r} of {self.dataset}/{self.name}"
        image = codec.decode_image(record["image"], name).astype(np.float32)
        return image, self._decode_mask(record["mask"], name)

    def _decode_mask(self, data: bytes, name: str) -> np.ndarray:
        if self.labels is None:
            return codec.decode_mask(data, name)
        return codec.decode_binary_mask(data, name)

    def mask_id(self, class_id: int) -> int:
        """The value of `class_id`'s pixels in the masks `load` returns.

        The class id itself, or 1 in a one-class-per-image split, whose masks are binary
        (its class ids may pass 255, which masks reserve for ignore).
        """
        return class_id if self.labels is None else 1

    def mask_shape(self, index: int) -> tuple[int, int]:
        """(height, width) of one record's mask (and image), without decoding it."""
        record = self.source[int(index)]
        return codec.mask_shape(record["mask"], f"record {self.ids[index]!r} of {self.name}")


@dataclasses.dataclass(frozen=True)
class _Records:
    """Some records of a data source, by index."""

    source: Any
    indices: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.source[self.indices[index]]


def fingerprint(splits: Sequence[Split], count: int = FINGERPRINT_IMAGES) -> str:
    """SHA-256 (hex) of the first `count` decoded images and masks of each split, in order.

    Two runs whose fingerprints agree read the same pixels (`codec.fingerprint`): for the
    synthetic benchmark, the same generated images.
    """

    def examples():
        for split in splits:
            for index in range(min(count, len(split))):
                record = split.source[index]
                name = f"record {split.ids[index]!r} of {split.dataset}/{split.name}"
                yield (
                    codec.decode_image(record["image"], name),
                    split._decode_mask(record["mask"], name),
                )

    return codec.fingerprint(examples())


def hold_out(split: Split, fraction: float) -> tuple[Split, Split]:
    """Splits a split's images into a kept part and a held-out part.

    Every `round(1 / fraction)`-th image is held out, so both parts span the list.

    Args:
      split: e.g. the train split.
      fraction: the part held out, in (0, 1).

    Returns:
      (kept, held out), named `<name>` and `<name>_holdout`.
    """
    every = round(1 / fraction)
    held = range(every - 1, len(split), every)
    kept = sorted(set(range(len(split))) - set(held))
    return split.subset(kept, split.name), split.subset(held, f"{split.name}_holdout")


def open_split(dataset_dir: str, split: str) -> Split:
    """Opens a split of a dataset made by one of the ``prepare_*`` functions.

    Args:
      dataset_dir: Directory returned by ``prepare_pascal``, ``prepare_coco``,
        ``prepare_synthetic`` or ``prepare_cross_domain``.
      split: ``"train"``, ``"val"`` or (cross-domain datasets) ``"test"``.

    Returns:
      The Split.

    Raises:
      DataError: if the directory holds no prepared dataset or not that split.

    """
    if not os.path.isfile(os.path.join(dataset_dir, "dataset_info.json")):
        raise DataError(
            f"{dataset_dir} holds no prepared dataset; build it with prepare_pascal, "
            "prepare_coco or prepare_synthetic first."
        )
    builder = tfds.builder_from_directory(dataset_dir)
    metadata = builder.info.metadata
    if split not in metadata["splits"]:
        raise DataError(
            f"Split {split!r} not in {dataset_dir}; splits: {sorted(metadata['splits'])} "
            "(a cross-domain dataset has the splits whose class lists name classes)."
        )
    split_metadata = metadata["splits"][split]
    source = builder.as_data_source(split)
    ids = tuple(split_metadata["ids"])
    if len(source) != len(ids) or source[0]["id"].decode() != ids[0]:
        raise DataError(
            f"{dataset_dir} is inconsistent with its metadata.json; delete and rebuild it."
        )
    return Split(
        dataset=metadata["dataset"],
        name=split,
        source=source,
        ids=ids,
        class_pixels=tuple(
            {int(c): int(n) for c, n in pairs} for pairs in split_metadata["class_pixels"]
        ),
        class_names=tuple(
            split_metadata["class_names"]
            if "class_names" in split_metadata
            else CLASS_NAMES[metadata["dataset"]]
        ),
        labels=tuple(split_metadata["labels"]) if "labels" in split_metadata else None,
        class_folders=tuple(split_metadata["class_folders"] if "labels" in split_metadata else ()),
    )
