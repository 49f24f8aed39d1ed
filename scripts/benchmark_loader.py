"""Measures the episodic loader's throughput (episodes/s) on a VOC-sized PASCAL tree.

Builds a PASCAL layout of ``--num_images`` 500x375 JPEGs (synthetic content upscaled, so
JPEG sizes and decode costs are close to VOC's) in a temporary folder, prepares it with
``prepare_pascal``, then times ``make_loader`` over evaluation and training episodes for
each shot and worker count.

Usage::

  python scripts/benchmark_loader.py --image_size=473 --shots=1,5 --workers=0,2
"""

import os
import tempfile
import time

import cv2
from absl import app, flags

from cwt_jax import data
from cwt_jax.data.synthetic import generate_example

_NUM_IMAGES = flags.DEFINE_integer("num_images", 600, "Images in the generated tree.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 473, "Episode image side.")
_SHOTS = flags.DEFINE_list("shots", ["1", "5"], "Shots to time.")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "Worker counts to time.")
_EPISODES = flags.DEFINE_integer("episodes", 96, "Episodes timed per setting.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 4, "Episodes per batch.")


def make_voc_like_tree(root: str, num_images: int) -> None:
    """Writes JPEGImages/, SegmentationClassAug/ and ImageSets/Segmentation/val.txt."""
    for folder in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        os.makedirs(os.path.join(root, folder), exist_ok=True)
    ids = [f"2010_{i:06d}" for i in range(num_images)]
    for i, image_id in enumerate(ids):
        image, mask = generate_example(0, "train", i, 128)
        image = cv2.resize(image, (500, 375), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (500, 375), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(os.path.join(root, "JPEGImages", image_id + ".jpg"), image[..., ::-1])
        cv2.imwrite(os.path.join(root, "SegmentationClassAug", image_id + ".png"), mask)
    with open(os.path.join(root, "ImageSets/Segmentation/val.txt"), "w") as f:
        f.write("".join(image_id + "\n" for image_id in ids[::3]))


def episodes_per_second(dataset, workers: int) -> float:
    """Iterates the whole dataset once (after one warm-up batch) and returns episodes/s."""
    loader = iter(data.make_loader(dataset, batch_size=_BATCH_SIZE.value, worker_count=workers))
    next(loader)  # Start-up (worker processes) is not throughput.
    start = time.perf_counter()
    count = sum(batch["class_id"].shape[0] for batch in loader)
    return count / (time.perf_counter() - start)


def main(argv):
    """Builds the tree and prints one line per setting."""
    del argv
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "VOC2012")
        make_voc_like_tree(root, _NUM_IMAGES.value)
        dataset_dir = data.prepare_pascal(root, os.path.join(tmp, "tfds"), report=print)
        val, train = data.open_split(dataset_dir, "val"), data.open_split(dataset_dir, "train")
        fold = data.class_split("pascal", 0)
        # One warm-up batch is skipped, so each setting draws one batch more.
        num_episodes = _EPISODES.value + _BATCH_SIZE.value
        for shot in map(int, _SHOTS.value):
            datasets = {
                "eval": data.eval_episodes(
                    val,
                    fold.novel,
                    shot=shot,
                    image_size=_IMAGE_SIZE.value,
                    num_episodes=num_episodes,
                    seed=0,
                ),
                "train": data.train_episodes(
                    train,
                    fold.base,
                    shot=shot,
                    image_size=_IMAGE_SIZE.value,
                    num_episodes=num_episodes,
                    seed=0,
                    augmentation=data.Augmentation(),
                ),
            }
            for name, dataset in datasets.items():
                for workers in map(int, _WORKERS.value):
                    rate = episodes_per_second(dataset, workers)
                    print(
                        f"{name} {shot}-shot {_IMAGE_SIZE.value}px workers={workers}: "
                        f"{rate:.1f} episodes/s",
                        flush=True,
                    )


if __name__ == "__main__":
    app.run(main)
