"""Few-shot episodes as grain MapDatasets: (seed, index) always gives the same episode.

Sampling follows PFENet/RePRI/CWT: the queries are the images of the split where at least
one active class covers ``MIN_CLASS_PIXELS`` pixels (in list order for evaluation, shuffled
per epoch for training); the episode's class is drawn among the query's eligible active
classes, and its K supports among the other eligible images of that class, all distinct.
Masks become 1 for the class, 0 elsewhere, 255 where the mask says ignore. In a
one-class-per-image dataset (`cross_domain`) an image is eligible for its class; Deepglobe,
ISIC and Chest X-ray follow PATNet's rule instead (`cross_domain.CLASS_CYCLED`): episode
i's class is class i mod the number of classes, its query drawn at random among that
class's images and its supports among the others.

An episode is first a spec ``{"class_id": int, "query_id": str, "support_ids": [str]}``
(exportable to JSON, so two implementations can run the same episodes), then loaded into
arrays::

  query_image     float32 (S, S, 3)     normalised
  query_mask      int32   (S, S)        {0, 1, 255}
  support_images  float32 (K, S, S, 3)
  support_masks   int32   (K, S, S)
  class_id        int32   ()
  query_id        numpy str ()          image id (file stem, or path relative to the root)
  support_ids     numpy str (K,)

Batching (``grain.transforms.Batch`` or ``MapDataset.batch``) adds a leading dimension.
"""

import json
import math
from collections.abc import Iterable, Sequence

import grain
import numpy as np

from cwt_jax.data import cross_domain, transforms
from cwt_jax.data.labels import IGNORE_LABEL
from cwt_jax.data.splits import MIN_CLASS_PIXELS, Split
from cwt_jax.errors import DataError


def sample_episodes(
    split: Split,
    classes: Sequence[int],
    *,
    shot: int,
    num_episodes: int,
    seed: int,
    shuffle_queries: bool,
) -> grain.MapDataset:
    """Episode specs, without loading any image.

    Args:
      split: The split to draw queries and supports from.
      classes: Active class ids (the fold's base classes for training, novel for testing).
      shot: Number of support images K.
      num_episodes: Length of the dataset; the query list is cycled as needed.
      seed: Episode seed.
      shuffle_queries: Shuffle the query list anew each pass (training) instead of taking
        it in list order (evaluation, as CWT's test loader).

    Returns:
      MapDataset of specs ``{"class_id": int, "query_id": str, "support_ids": [str]}``.

    Raises:
      DataError: if an active class has fewer than ``shot + 1`` eligible images.

    """
    _check_episode_args(split, classes, shot, num_episodes)
    if split.dataset in cross_domain.CLASS_CYCLED:
        return grain.MapDataset.range(num_episodes).random_map(
            _ClassCycleSampler(split, tuple(classes), shot), seed=seed
        )
    queries = [
        index for index in range(len(split)) if any(split.counts_for(index, c) for c in classes)
    ]
    dataset = grain.MapDataset.source(queries)
    if shuffle_queries:
        dataset = dataset.shuffle(seed=seed)
    dataset = dataset.repeat(math.ceil(num_episodes / len(queries)))[:num_episodes]
    return dataset.random_map(_EpisodeSampler(split, tuple(classes), shot), seed=seed)


def sample_episode_list(
    split: Split,
    classes: Sequence[int],
    *,
    shot: int,
    num_episodes: int,
    seed: int,
    shuffle_queries: bool = False,
) -> list[dict]:
    """Episode specs as a list: evaluation's (queries in list order) by default.

    The specs of ``sample_episodes``, read by index: iterating
    the MapDataset starts grain's prefetch threads, which cost about ten times the
    sampling (~1 s instead of ~0.1 s per 1000 episodes on 2 CPU cores).

    Args:
      split: The split to draw queries and supports from.
      classes: The test classes.
      shot: Number of support images K.
      num_episodes: Number of episodes.
      seed: Episode seed.
      shuffle_queries: Shuffle the query list (as ``sample_episodes``).

    Returns:
      Specs ``{"class_id": int, "query_id": str, "support_ids": [str]}``.

    Raises:
      DataError: if a class has fewer than ``shot + 1`` eligible images.

    """
    specs = sample_episodes(
        split,
        classes,
        shot=shot,
        num_episodes=num_episodes,
        seed=seed,
        shuffle_queries=shuffle_queries,
    )
    return [specs[index] for index in range(len(specs))]


def train_episodes(
    split: Split,
    classes: Sequence[int],
    *,
    shot: int,
    image_size: int,
    num_episodes: int,
    seed: int,
    augmentation: transforms.Augmentation,
    resize: str = "padded",
) -> grain.MapDataset:
    """Meta-training episodes: shuffled queries, augmented images.

    Args:
      split: Usually the train split.
      classes: The fold's base classes.
      shot: Number of support images K.
      image_size: Side S of the square output images.
      num_episodes: Length of the dataset (e.g. steps * batch size).
      seed: Seed of both the episodes and the augmentations.
      augmentation: Training augmentations.
      resize: ``data.resize``: ``"padded"`` or ``"squash"`` (see transforms.py).

    Returns:
      MapDataset of episode records (see the module docstring).

    """
    specs = sample_episodes(
        split, classes, shot=shot, num_episodes=num_episodes, seed=seed, shuffle_queries=True
    )
    loader = _EpisodeLoader(split, image_size, augmentation, resize)
    return specs.random_map(loader, seed=_augmentation_seed(seed))


def eval_episodes(
    split: Split,
    classes: Sequence[int],
    *,
    shot: int,
    image_size: int,
    num_episodes: int,
    seed: int,
    resize: str = "padded",
) -> grain.MapDataset:
    """Evaluation episodes: queries in list order, evaluation transform.

    Args:
      split: Usually the val split.
      classes: The test classes (the fold's novel classes, or ``cross_dataset_classes``).
      shot: Number of support images K.
      image_size: Side S of the square output images.
      num_episodes: Length of the dataset.
      seed: Episode seed.
      resize: ``data.resize``: ``"padded"`` or ``"squash"`` (see transforms.py).

    Returns:
      MapDataset of episode records (see the module docstring).

    """
    specs = sample_episodes(
        split, classes, shot=shot, num_episodes=num_episodes, seed=seed, shuffle_queries=False
    )
    return specs.map(_EpisodeLoader(split, image_size, None, resize))


def episodes_from_list(
    split: Split, episode_list: Sequence[dict], *, image_size: int, resize: str = "padded"
) -> grain.MapDataset:
    """Evaluation episodes given explicitly, in order (e.g. from ``read_episode_list``).

    Args:
      split: The split holding every listed image.
      episode_list: Specs ``{"class_id": int, "query_id": str, "support_ids": [str]}``.
      image_size: Side S of the square output images.
      resize: ``data.resize``: ``"padded"`` or ``"squash"`` (see transforms.py).

    Returns:
      MapDataset of episode records (see the module docstring).

    Raises:
      DataError: for an unknown image id or class id, or a varying number of supports.

    """
    _check_ids(split, episode_list)
    loader = _EpisodeLoader(split, image_size, None, resize)
    return grain.MapDataset.source(list(episode_list)).map(loader)


def _check_ids(split: Split, episode_list: Sequence[dict]) -> None:
    """Raises unless the episodes' images are in the split and their classes in the dataset.

    Every episode must also have as many supports as the first.
    """
    num_classes = len(split.class_names)
    for number, spec in enumerate(episode_list):
        for image_id in (spec["query_id"], *spec["support_ids"]):
            if image_id not in split.index_of:
                raise DataError(
                    f"Episode {number}: image id {image_id!r} is not in {split.dataset}/"
                    f"{split.name}; was the list made for another dataset or split?"
                )
        if not 1 <= spec["class_id"] <= num_classes:
            raise DataError(
                f"Episode {number}: class id {spec['class_id']} is not in 1..{num_classes}."
            )
        if len(spec["support_ids"]) != len(episode_list[0]["support_ids"]):
            raise DataError(
                f"Episode {number} has {len(spec['support_ids'])} supports, episode 0 "
                f"has {len(episode_list[0]['support_ids'])}; one list has one shot."
            )


def write_episode_list(path: str, specs: Iterable[dict]) -> None:
    """Writes episode specs to a JSON list.

    Args:
      path: Output file.
      specs: Specs ``{"class_id", "query_id", "support_ids"}``, e.g. the first N items of
        ``sample_episodes(...)``.

    """
    episodes = [
        {
            "class_id": int(s["class_id"]),
            "query_id": str(s["query_id"]),
            "support_ids": [str(i) for i in s["support_ids"]],
        }
        for s in specs
    ]
    with open(path, "w") as f:
        json.dump(episodes, f, indent=1)


def read_episode_list(path: str) -> list[dict]:
    """Reads a JSON episode list written by ``write_episode_list`` or another implementation.

    Args:
      path: JSON file holding a list of ``{"class_id": int, "query_id": str,
        "support_ids": [str, ...]}``.

    Returns:
      The list of specs.

    Raises:
      DataError: if the file is missing or not such a list.

    """
    try:
        with open(path) as f:
            episodes = json.load(f)
    except FileNotFoundError:
        raise DataError(f"Episode list {path} does not exist.") from None
    except json.JSONDecodeError as error:
        raise DataError(f"Episode list {path} is not valid JSON: {error}.") from None
    for number, spec in enumerate(episodes if isinstance(episodes, list) else [None]):
        if not (
            isinstance(spec, dict)
            and isinstance(spec.get("class_id"), int)
            and isinstance(spec.get("query_id"), str)
            and isinstance(spec.get("support_ids"), list)
            and all(isinstance(i, str) for i in spec["support_ids"])
        ):
            raise DataError(
                f"Episode list {path}, episode {number}: expected a list of "
                '{"class_id": int, "query_id": str, "support_ids": [str, ...]}.'
            )
    return episodes


def check_episode_list(
    split: Split, episode_list: Sequence[dict], classes: Sequence[int], path: str
) -> None:
    """Checks that listed episodes are few-shot episodes of ``classes`` on ``split``.

    Args:
      split: The split holding the episodes' images.
      episode_list: Specs ``{"class_id", "query_id", "support_ids"}``.
      classes: The classes evaluated (the fold's test classes).
      path: Where the list came from, for messages.

    Raises:
      DataError: naming the first episode at fault and why: a class outside ``classes``, a
        query or support not eligible for the class (fewer than MIN_CLASS_PIXELS pixels,
        or in a one-class-per-image dataset an image of another class), the query among
        its own supports, or no episode at all.

    """
    if not episode_list:
        raise DataError(f"Episode list {path} holds no episode.")
    _check_ids(split, episode_list)
    names = split.class_names
    for number, spec in enumerate(episode_list):
        class_id, where = spec["class_id"], f"Episode list {path}, episode {number}"
        if class_id not in classes:
            raise DataError(
                f"{where}: class {class_id} ({names[class_id - 1]}) is not among the classes "
                f"evaluated, {list(classes)}."
            )
        if spec["query_id"] in spec["support_ids"]:
            raise DataError(f"{where}: the query {spec['query_id']!r} is among its own supports.")
        for image_id in (spec["query_id"], *spec["support_ids"]):
            index = split.index_of[image_id]
            if split.labels is not None and split.labels[index] != class_id:
                raise DataError(
                    f"{where}: {image_id!r} is an image of class {split.labels[index]} "
                    f"({names[split.labels[index] - 1]}), not of class {class_id}."
                )
            pixels = split.class_pixels[index].get(class_id, 0)
            if split.labels is None and pixels < MIN_CLASS_PIXELS:
                raise DataError(
                    f"{where}: class {class_id} ({names[class_id - 1]}) covers {pixels} pixels "
                    f"of {image_id!r}, fewer than the {MIN_CLASS_PIXELS} an episode's images need."
                )


class _EpisodeSampler:
    """(query record index, rng) -> episode spec."""

    def __init__(self, split: Split, classes: tuple[int, ...], shot: int):
        self.split, self.classes, self.shot = split, classes, shot

    def __call__(self, query: int, rng: np.random.Generator) -> dict:
        eligible = [c for c in self.classes if self.split.counts_for(query, c)]
        class_id = eligible[rng.integers(len(eligible))]
        candidates = self.split.eligible_images(class_id)
        supports = rng.choice(candidates[candidates != query], self.shot, replace=False)
        return {
            "class_id": class_id,
            "query_id": self.split.ids[query],
            "support_ids": [self.split.ids[i] for i in supports],
        }


class _ClassCycleSampler:
    """(episode index, rng) -> episode spec, by PATNet's rule (`cross_domain.CLASS_CYCLED`)."""

    def __init__(self, split: Split, classes: tuple[int, ...], shot: int):
        self.split, self.classes, self.shot = split, classes, shot

    def __call__(self, index: int, rng: np.random.Generator) -> dict:
        class_id = self.classes[index % len(self.classes)]
        candidates = self.split.eligible_images(class_id)
        query = candidates[rng.integers(len(candidates))]
        supports = rng.choice(candidates[candidates != query], self.shot, replace=False)
        return {
            "class_id": class_id,
            "query_id": self.split.ids[query],
            "support_ids": [self.split.ids[i] for i in supports],
        }


class _EpisodeLoader:
    """Spec (and rng when augmenting) -> episode record."""

    def __init__(self, split: Split, image_size: int, augmentation, resize: str):
        self.split, self.image_size, self.augmentation = split, image_size, augmentation
        self.resize = resize

    def __call__(self, spec: dict, rng: np.random.Generator | None = None) -> dict:
        images, masks = [], []
        for image_id in (spec["query_id"], *spec["support_ids"]):
            image, mask = self.split.load(self.split.index_of[image_id])
            mask = binary_mask(mask, self.split.mask_id(spec["class_id"]))
            if self.augmentation is None:
                image, mask = transforms.eval_transform(image, mask, self.image_size, self.resize)
            else:
                image, mask = transforms.train_transform(
                    image, mask, self.image_size, self.augmentation, rng, self.resize
                )
            images.append(image)
            masks.append(mask)
        return {
            "query_image": images[0],
            "query_mask": masks[0],
            "support_images": np.stack(images[1:]),
            "support_masks": np.stack(masks[1:]),
            "class_id": np.int32(spec["class_id"]),
            "query_id": np.array(spec["query_id"]),
            "support_ids": np.array(spec["support_ids"]),
        }


def binary_mask(mask, class_id):
    """Foreground mask of one class, from NumPy or JAX arrays alike.

    Args:
      mask: uint8 class-id mask, (H, W) or batched.
      class_id: The episode's class; an array broadcasts against ``mask``.

    Returns:
      uint8 mask: 1 where ``mask == class_id``, 255 where ``mask == 255``, 0 elsewhere.

    """
    return ((mask == class_id) + (mask == IGNORE_LABEL) * IGNORE_LABEL).astype(np.uint8)


def _check_episode_args(split, classes, shot, num_episodes):
    if shot < 1 or num_episodes < 1 or not classes:
        raise DataError(
            f"Episodes need shot >= 1, num_episodes >= 1 and some classes; got shot={shot}, "
            f"num_episodes={num_episodes}, classes={list(classes)}."
        )
    check_shot(split, classes, shot)


def check_shot(split: Split, classes: Sequence[int], shot: int) -> None:
    """Checks that each class has the ``shot + 1`` eligible images an episode needs.

    Args:
      split: The split the episodes are drawn from.
      classes: The episodes' classes.
      shot: Number of support images K.

    Raises:
      DataError: naming the first class with fewer images, and where they lie.

    """
    names = split.class_names
    for class_id in classes:
        count = len(split.eligible_images(class_id))
        if count < shot + 1 and split.labels is not None:
            raise DataError(
                f"Class {class_id} ({names[class_id - 1]}) has {count} images in "
                f"{split.class_folders[class_id - 1]}, fewer than shot + 1 = {shot + 1}; add "
                "images or use fewer shots."
            )
        if count < shot + 1:
            raise DataError(
                f"Class {class_id} ({names[class_id - 1]}) has {count} images in "
                f"{split.dataset}/{split.name} where it covers >= {MIN_CLASS_PIXELS} pixels, "
                f"fewer than shot + 1 = {shot + 1}; use a larger image list or fewer shots."
            )


def _augmentation_seed(seed: int) -> int:
    # A stream apart from the episode sampler's, which uses `seed` itself.
    return int(np.random.SeedSequence([seed, 1]).generate_state(1)[0])
