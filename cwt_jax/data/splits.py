"""Reading a prepared dataset split: records by index, ids and class statistics."""

import dataclasses
import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from cwt_jax.data import codec
from cwt_jax.errors import DataError

# An image counts for a class only if the class covers this many pixels of its mask
# (PFENet/RePRI/CWT's 2 * 32 * 32 rule, on the mask at its stored resolution).
MIN_CLASS_PIXELS = 2 * 32 * 32
# Images of each split that `fingerprint` hashes.
FINGERPRINT_IMAGES = 20


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
    """One split of a prepared dataset.

    Attributes:
      dataset: ``"pascal"``, ``"coco"`` or ``"synthetic"`` (a key of ``CLASS_NAMES``).
      name: Split name, ``"train"`` or ``"val"``.
      source: TFDS array_record data source; ``source[i]`` is ``{"id", "image", "mask"}``.
      ids: Image id of each record.
      class_pixels: Class id -> pixel count of each record.

    """

    dataset: str
    name: str
    source: Any
    ids: tuple[str, ...]
    class_pixels: tuple[dict[int, int], ...]

    def __len__(self) -> int:
        return len(self.ids)

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

    @functools.cached_property
    def _eligible(self) -> dict[int, np.ndarray]:
        eligible = {}
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
        )

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decodes one record.

        Args:
          index: Record index.

        Returns:
          image float32 (H, W, 3) RGB on 0..255, mask uint8 (H, W) of class ids.

        """
        record = self.source[int(index)]
        name = f"record {self.ids[index]!r} of {self.dataset}/{self.name}"
        image = codec.decode_image(record["image"], name).astype(np.float32)
        return image, codec.decode_mask(record["mask"], name)

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
                    codec.decode_mask(record["mask"], name),
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
      dataset_dir: Directory returned by ``prepare_pascal``, ``prepare_coco`` or
        ``prepare_synthetic``.
      split: ``"train"`` or ``"val"``.

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
            f"Split {split!r} not in {dataset_dir}; splits: {sorted(metadata['splits'])}."
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
    )
