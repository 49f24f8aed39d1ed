"""Data layer: PASCAL-5i, COCO-20i, synthetic and cross-domain sets as TFDS + grain.

The cross-domain datasets are FSS-1000, Deepglobe, ISIC2018, Chest X-ray and a folder of
one's own classes (`cross_domain`).

Typical use::

  dataset_dir = data.prepare_synthetic(data_dir, seed=0)        # or prepare_pascal(root, ...)
  split = data.class_split("synthetic", fold=0)
  train = data.open_split(dataset_dir, "train")
  episodes = data.train_episodes(train, split.base, shot=1, image_size=128,
                                 num_episodes=1000, seed=0,
                                 augmentation=data.Augmentation())
  loader = data.make_loader(episodes, batch_size=8, worker_count=2)

Modules: classes (class names and fold splits), layouts (the on-disk layouts and list
files), cross_domain (the one-class-per-image layouts), codec (decoding and
checks), synthetic (the generated benchmark), builders (TFDS
builders and the prepare_* functions), splits (reading a prepared split), transforms,
episodes (episodic datasets and episode lists), stage1 (base-class data), loader.
"""

from cwt_jax.data.builders import (
    prepare_coco,
    prepare_cross_domain,
    prepare_pascal,
    prepare_synthetic,
)
from cwt_jax.data.classes import CLASS_NAMES, ClassSplit, class_split, cross_dataset_classes
from cwt_jax.data.episodes import (
    binary_mask,
    check_episode_list,
    check_shot,
    episodes_from_list,
    eval_episodes,
    read_episode_list,
    sample_episode_list,
    sample_episodes,
    train_episodes,
    write_episode_list,
)
from cwt_jax.data.loader import make_loader
from cwt_jax.data.splits import (
    FINGERPRINT_IMAGES,
    MIN_CLASS_PIXELS,
    Split,
    fingerprint,
    hold_out,
    open_split,
)
from cwt_jax.data.stage1 import base_class_dataset
from cwt_jax.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Augmentation
from cwt_jax.errors import DataError

__all__ = [
    "CLASS_NAMES",
    "FINGERPRINT_IMAGES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MIN_CLASS_PIXELS",
    "Augmentation",
    "ClassSplit",
    "DataError",
    "Split",
    "base_class_dataset",
    "binary_mask",
    "check_episode_list",
    "check_shot",
    "class_split",
    "cross_dataset_classes",
    "episodes_from_list",
    "eval_episodes",
    "fingerprint",
    "hold_out",
    "make_loader",
    "open_split",
    "prepare_coco",
    "prepare_cross_domain",
    "prepare_pascal",
    "prepare_synthetic",
    "read_episode_list",
    "sample_episode_list",
    "sample_episodes",
    "train_episodes",
    "write_episode_list",
]
