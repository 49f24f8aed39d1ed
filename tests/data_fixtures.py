"""Miniature PASCAL VOC and COCO trees in their real on-disk layouts (data tests only).

Image i holds one "big" object of class ``big_class(i)`` (BIG_PIXELS pixels, eligible
under the 2*32*32 rule) and one "small" object of ``small_class(i)`` (SMALL_PIXELS, not
eligible), with a 255 band around the big object as VOC has.
"""

import os

import cv2
import numpy as np

from cwt_jax.data import prepare_pascal, prepare_synthetic

HEIGHT, WIDTH = 72, 96
BIG_PIXELS = 50 * 45  # 2250 >= 2048
SMALL_PIXELS = 30 * 30  # 900 < 2048


def big_class(i, num_classes):
    return i % num_classes + 1


def small_class(i, num_classes):
    return (i * 7 + 3) % num_classes + 1


def make_example(i, num_classes, big_pixels=(50, 45)):
    """Image uint8 (H, W, 3) BGR and mask uint8 (H, W) of image i."""
    rng = np.random.default_rng(i)
    image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    height, width = big_pixels
    mask[2 : 2 + height, 2 : 2 + width] = big_class(i, num_classes)
    small = small_class(i, num_classes)
    if small != big_class(i, num_classes):
        mask[HEIGHT - 31 : HEIGHT - 1, WIDTH - 31 : WIDTH - 1] = small
    mask[1, 1 : 3 + width] = 255  # border band above the big object
    return image, mask


def make_pascal_tree(root, num_images=80):
    """Writes a VOC2012-like tree and PFENet list files; returns (train ids, val ids).

    Images 20-39, 60-79, ... are val, so with 80 images each class is big in 2 train and
    2 val images.
    """
    for folder in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation", "lists"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    ids = [f"2008_{i:06d}" for i in range(num_images)]
    for i, image_id in enumerate(ids):
        image, mask = make_example(i, 20)
        cv2.imwrite(os.path.join(root, "JPEGImages", image_id + ".jpg"), image)
        cv2.imwrite(os.path.join(root, "SegmentationClassAug", image_id + ".png"), mask)
    val_ids = [image_id for i, image_id in enumerate(ids) if (i // 20) % 2 == 1]
    train_ids = [i for i in ids if i not in val_ids]
    with open(os.path.join(root, "ImageSets/Segmentation/val.txt"), "w") as f:
        f.write("".join(i + "\n" for i in val_ids))
    for name, split_ids in (("train", train_ids), ("val", val_ids)):
        with open(os.path.join(root, "lists", name + ".txt"), "w") as f:
            for image_id in split_ids:
                f.write(f"JPEGImages/{image_id}.jpg SegmentationClassAug/{image_id}.png\n")
    return train_ids, val_ids


def make_coco_tree(root, num_train=160, num_val=160):
    """Writes a COCO 2014 tree with RePRI-style masks; returns (train ids, val ids)."""
    result = []
    offset = 0
    for split, count in (("train", num_train), ("val", num_val)):
        os.makedirs(os.path.join(root, f"{split}2014"), exist_ok=True)
        os.makedirs(os.path.join(root, split), exist_ok=True)
        split_ids = []
        for i in range(offset, offset + count):
            image_id = f"COCO_{split}2014_{i:012d}"
            image, mask = make_example(i, 80)
            cv2.imwrite(os.path.join(root, f"{split}2014", image_id + ".jpg"), image)
            cv2.imwrite(os.path.join(root, split, image_id + ".png"), mask)
            split_ids.append(image_id)
        result.append(split_ids)
        offset += count
    return tuple(result)


def prepare_pascal_tree(tmp_path_factory):
    """(root, train ids, val ids, dataset dir) of a miniature VOC2012 tree prepared from its
    list files."""
    root = str(tmp_path_factory.mktemp("voc2012"))
    train_ids, val_ids = make_pascal_tree(root)
    dataset_dir = prepare_pascal(
        root,
        str(tmp_path_factory.mktemp("tfds")),
        train_list=os.path.join(root, "lists", "train.txt"),
        val_list=os.path.join(root, "lists", "val.txt"),
    )
    return root, train_ids, val_ids, dataset_dir


def prepare_small_synthetic(tmp_path_factory):
    """Dataset dir of a small synthetic set: 240 train and 160 val images of 128 px."""
    return prepare_synthetic(
        str(tmp_path_factory.mktemp("tfds")), seed=0, num_train=240, num_val=160
    )
