"""Datasets of each stage, built from the `data` config section."""

import dataclasses
import os
from collections.abc import Callable

import grain

from cwt_jax import data


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The prepared splits and classes of a run.

    Attributes:
      train: split for stage 1 and meta-training.
      val: split for validation and evaluation.
      classes: the fold's novel and base classes (of the training dataset).
      test_classes: the classes evaluated: the novel ones, or in a cross-dataset run the
        test dataset's classes not seen in training.
    """

    train: data.Split
    val: data.Split
    classes: data.ClassSplit
    test_classes: tuple[int, ...]


def prepare(
    data_config, seed: int, workdir: str, report: Callable[[str], None] | None = None
) -> Inputs:
    """Builds (once) or opens the run's datasets.

    Args:
      data_config: the `data` config section.
      seed: the run's seed (the synthetic benchmark is generated from it).
      workdir: the run's work dir; datasets are cached in `<workdir>/tfds` unless
        `data.cache_dir` says otherwise.
      report: shows a line to the user when a dataset is built; None says nothing.

    Returns:
      The run's splits and classes.
    """
    cache_dir = data_config.cache_dir or os.path.join(workdir, "tfds")
    classes = data.class_split(data_config.dataset, data_config.fold, data_config.split_convention)
    train_dir = _prepare_dataset(
        data_config.dataset, data_config.root, data_config, seed, cache_dir, report
    )
    if data_config.test_dataset:
        test_dir = _prepare_dataset(
            data_config.test_dataset, data_config.test_root, data_config, seed, cache_dir, report
        )
        test_classes = data.cross_dataset_classes(
            data_config.dataset,
            data_config.fold,
            data_config.test_dataset,
            data_config.split_convention,
        )
    else:
        test_dir, test_classes = train_dir, classes.novel
    return Inputs(
        train=data.open_split(train_dir, "train"),
        val=data.open_split(test_dir, "val"),
        classes=classes,
        test_classes=test_classes,
    )


def _prepare_dataset(
    dataset: str, root: str, data_config, seed: int, cache_dir: str, report
) -> str:
    if dataset == "synthetic":
        return data.prepare_synthetic(
            cache_dir,
            seed=seed,
            num_train=data_config.synthetic_train,
            num_val=data_config.synthetic_val,
            image_size=data_config.synthetic_size,
            report=report,
        )
    prepare = data.prepare_pascal if dataset == "pascal" else data.prepare_coco
    lists = data_config.train_list or None, data_config.val_list or None
    return prepare(root, cache_dir, *lists, report=report)


def augmentation(pretrain_config) -> data.Augmentation:
    """Training augmentations: flips, and random scale and rotation where configured."""
    return data.Augmentation(
        scale_range=tuple(pretrain_config.scale_range) or None,
        rotation_range=tuple(pretrain_config.rotation_range) or None,
    )


def loader(dataset: grain.MapDataset, batch_size: int, workers: int, start: int = 0):
    """Batches from element `start` on, sharded over JAX processes.

    Elements are fixed by their index, so a resumed run starts at `start = step * batch`
    and sees exactly the batches an uninterrupted run would have seen.

    Args:
      dataset: an indexable dataset.
      batch_size: global batch size; each process reads its share.
      workers: grain worker processes.
      start: first element.

    Returns:
      A grain DataLoader over `dataset[start:]`.
    """
    shards = grain.sharding.ShardByJaxProcess(drop_remainder=True)
    per_process = batch_size // shards.shard_count
    return data.make_loader(
        dataset[start:], batch_size=per_process, worker_count=workers, shard_options=shards
    )
