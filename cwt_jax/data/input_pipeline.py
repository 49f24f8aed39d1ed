"""Datasets of each stage, built from the `data` config section."""

import dataclasses
import os
from collections.abc import Callable

import grain

from cwt_jax import data
from cwt_jax.data import cross_domain

ALL_SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Inputs:
    """The prepared splits and classes of a run.

    Attributes:
      train: split for stage 1 and meta-training; in a run that only evaluates on a test
        dataset (`prepare`'s `training` False), the evaluation split: the training
        dataset is not read.
      val: split for validation and evaluation: the val split, or the test split of a
        cross-domain dataset (`cross_domain.EVALUATION_SPLIT`).
      classes: the fold's novel and base classes (of the training dataset); for fss1000
        and folder, the train split's classes as base and the test split's as novel.
      test_classes: the classes evaluated: the novel ones, in a cross-dataset run the
        test dataset's classes not seen in training, and every class of a cross-domain
        test dataset.
      base_val: the training dataset's own val split: stage 1's validation.
      selection: FSS-1000's val split (`data.val_root`), or the run's own val split of
        fss1000 or folder: meta-training's model selection with
        `metatrain.val_source=fss1000_val`; None where there is none.
    """

    train: data.Split
    val: data.Split
    classes: data.ClassSplit
    test_classes: tuple[int, ...]
    base_val: data.Split
    selection: data.Split | None = None


def prepare(
    data_config,
    seed: int,
    workdir: str,
    report: Callable[[str], None] | None = None,
    training: bool = True,
) -> Inputs:
    """Builds (once) or opens the run's datasets.

    Args:
      data_config: the `data` config section.
      seed: the run's seed (the synthetic benchmark is generated from it).
      workdir: the run's work dir; datasets are cached in `<workdir>/tfds` unless
        `data.cache_dir` says otherwise.
      report: shows a line to the user when a dataset is built; None says nothing.
      training: whether a stage trains; without, a run with `data.test_dataset` reads
        only the test dataset (as PATNet's test.py).

    Returns:
      The run's splits and classes.
    """
    cache_dir = data_config.cache_dir or os.path.join(workdir, "tfds")
    dataset, test_dataset = data_config.dataset, data_config.test_dataset or data_config.dataset
    if data_config.test_dataset:
        test_dir = _prepare_dataset(
            test_dataset, data_config.test_root, data_config, seed, cache_dir, report, ("test",)
        )
    if training or not data_config.test_dataset:
        train_dir = _prepare_dataset(
            dataset, data_config.root, data_config, seed, cache_dir, report, ALL_SPLITS
        )
    if not data_config.test_dataset:
        test_dir = train_dir
    val = data.open_split(test_dir, _evaluation_split(test_dataset))
    selection = base_val = None
    if not training and (data_config.test_dataset or dataset in cross_domain.DATASETS):
        train = val  # nothing trains: the training dataset is not read
    elif dataset in cross_domain.DATASETS and not _has_split(train_dir, "train"):
        raise data.DataError(
            f"data.dataset={dataset} names no train classes in {data_config.root} to train on; "
            "name them with data.folder_classes.train or data.train_list."
        )
    else:
        train = data.open_split(train_dir, "train")
    if dataset in cross_domain.DATASETS:
        classes = data.ClassSplit(
            novel=val.class_ids,
            base=train.class_ids,
            names=dict(enumerate(train.class_names, start=1)),
        )
        if training and _has_split(train_dir, "val"):
            selection = base_val = data.open_split(train_dir, "val")
    else:
        classes = data.class_split(dataset, data_config.fold, data_config.split_convention)
        if train is not val:
            base_val = data.open_split(train_dir, "val")
    if data_config.val_root and training:
        fss_dir = _prepare_dataset(
            "fss1000", data_config.val_root, data_config, seed, cache_dir, report, ("val",)
        )
        selection = data.open_split(fss_dir, "val")
    if test_dataset in cross_domain.DATASETS:
        test_classes = val.class_ids
    elif data_config.test_dataset:
        test_classes = data.cross_dataset_classes(
            dataset, data_config.fold, test_dataset, data_config.split_convention
        )
    else:
        test_classes = classes.novel
    return Inputs(
        train=train,
        val=val,
        classes=classes,
        test_classes=test_classes,
        base_val=base_val if base_val is not None else val,
        selection=selection,
    )


def _evaluation_split(dataset: str) -> str:
    return cross_domain.EVALUATION_SPLIT if dataset in cross_domain.DATASETS else "val"


def _has_split(dataset_dir: str, split: str) -> bool:
    try:
        data.open_split(dataset_dir, split)
    except data.DataError:
        return False
    return True


def _prepare_dataset(
    dataset: str, root: str, data_config, seed: int, cache_dir: str, report, wanted
) -> str:
    """The dataset's directory, prepared once; of a cross-domain one, the `wanted` splits."""
    if dataset == "synthetic":
        return data.prepare_synthetic(
            cache_dir,
            seed=seed,
            num_train=data_config.synthetic_train,
            num_val=data_config.synthetic_val,
            image_size=data_config.synthetic_size,
            report=report,
        )
    if dataset in cross_domain.DATASETS:
        return data.prepare_cross_domain(
            dataset, root, cache_dir, class_lists(data_config, dataset), report, wanted
        )
    prepare = data.prepare_pascal if dataset == "pascal" else data.prepare_coco
    lists = data_config.train_list or None, data_config.val_list or None
    return prepare(root, cache_dir, *lists, report=report)


def class_lists(data_config, dataset: str) -> dict:
    """fss1000 and folder: split -> the class list file or class names the config gives.

    `data.folder_classes.<split>` names a split's classes, `data.<split>_list` a class
    list file; a split given by neither is left out (`cross_domain.splits`' default).
    As a test dataset beside another training dataset, only the test split's apply (the
    train and val lists are the training dataset's).
    """
    if dataset not in ("fss1000", "folder"):
        return {}
    lists = {}
    for split in ALL_SPLITS if dataset == data_config.dataset else ("test",):
        names, list_file = data_config.folder_classes[split], data_config[f"{split}_list"]
        if names or list_file:
            lists[split] = tuple(names) or list_file
    return lists


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
