"""Stage-1 (base-class) segmentation data for pre-training the backbone and classifier.

As RePRI/CWT's standard training set: the images where at least one base class covers
``MIN_CLASS_PIXELS`` pixels. Masks are relabelled: base class ``base[j]`` -> ``j + 1``,
background 0, novel classes and ignore 255 (no gradient on novel objects).
"""

from collections.abc import Sequence

import grain
import numpy as np

from cwt_jax.data import transforms
from cwt_jax.data.labels import IGNORE_LABEL
from cwt_jax.data.splits import MIN_CLASS_PIXELS, Split
from cwt_jax.errors import DataError


def base_class_dataset(
    split: Split,
    base_classes: Sequence[int],
    *,
    image_size: int,
    seed: int,
    augmentation: transforms.Augmentation | None,
    num_epochs: int = 1,
) -> grain.MapDataset:
    """Images with base-class masks.

    Args:
      split: Split to read (train for training, val for validation).
      base_classes: The fold's base classes, sorted (``ClassSplit.base``).
      image_size: Side S of the square output images.
      seed: Shuffling and augmentation seed.
      augmentation: Training augmentations, images shuffled anew each epoch; None for the
        evaluation transform in list order (validation).
      num_epochs: Passes over the images (the dataset's length is a multiple of it).

    Returns:
      MapDataset of ``{"image": float32 (S, S, 3) normalised, "mask": int32 (S, S) with
      base classes 1..n_base, background 0, novel and ignore 255, "id": numpy str ()}``.

    Raises:
      DataError: if no image of the split holds a base class.

    """
    images = [
        index
        for index, counts in enumerate(split.class_pixels)
        if any(counts.get(c, 0) >= MIN_CLASS_PIXELS for c in base_classes)
    ]
    if not images:
        raise DataError(
            f"No image of {split.dataset}/{split.name} holds a base class {list(base_classes)}."
        )
    dataset = grain.MapDataset.source(images)
    if augmentation is not None:
        dataset = dataset.shuffle(seed=seed)
    dataset = dataset.repeat(num_epochs)
    loader = _BaseClassLoader(split, base_classes, image_size, augmentation)
    if augmentation is None:
        return dataset.map(loader)
    return dataset.random_map(loader, seed=seed)


def base_class_lookup(base_classes: Sequence[int]) -> np.ndarray:
    """Lookup table from dataset class ids to stage-1 labels.

    Args:
      base_classes: The fold's base classes, sorted.

    Returns:
      uint8 array (256,): 0 -> 0, ``base[j]`` -> ``j + 1``, everything else -> 255.

    """
    lookup = np.full(256, IGNORE_LABEL, np.uint8)
    lookup[0] = 0
    lookup[np.asarray(base_classes)] = np.arange(1, len(base_classes) + 1)
    return lookup


class _BaseClassLoader:
    def __init__(self, split, base_classes, image_size, augmentation):
        self.split, self.image_size, self.augmentation = split, image_size, augmentation
        self.lookup = base_class_lookup(base_classes)

    def __call__(self, index: int, rng: np.random.Generator | None = None) -> dict:
        image, mask = self.split.load(index)
        mask = self.lookup[mask]
        if self.augmentation is None:
            image, mask = transforms.eval_transform(image, mask, self.image_size)
        else:
            image, mask = transforms.train_transform(
                image, mask, self.image_size, self.augmentation, rng
            )
        return {"image": image, "mask": mask, "id": np.array(self.split.ids[index])}
