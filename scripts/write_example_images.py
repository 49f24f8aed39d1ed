"""Writes a support image, its mask and a few query images of one synthetic class as PNGs.

Inputs for `python -m cwt_jax.predict` (docs/predict.md):

  python scripts/write_example_images.py --output_dir=/tmp/cwt_example

writes `support.png`, `support_mask.png` (class ids: the class is picked with
`--class_id`) and `queries/query<i>.png`. The images are drawn by the synthetic
benchmark's generator under another seed than the benchmark's, so a model trained on the
benchmark has never seen them; their class is a novel class of fold 0 (1, circle, by
default).
"""

import os

import cv2
from absl import app, flags

from cwt_jax.data import MIN_CLASS_PIXELS, synthetic

_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Directory to create for the images.")
_CLASS_ID = flags.DEFINE_integer("class_id", 1, "Synthetic class of the images.", lower_bound=1)
_NUM_QUERIES = flags.DEFINE_integer("num_queries", 3, "Query images to write.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 1, "Generator seed; the benchmark's is 0.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Side of the images.", lower_bound=32)


def class_examples(class_id: int, count: int, seed: int, image_size: int):
    """The first `count` generated val images whose first object, of `class_id`, is large.

    Args:
      class_id: synthetic class id, 1..20.
      count: number of images.
      seed: generator seed.
      image_size: side of the images.

    Returns:
      `count` (uint8 RGB image, uint8 class-id mask) pairs.
    """
    examples = []
    # Image i's first object is of class i % 20 + 1; occlusion can hide most of it.
    for index in range(class_id - 1, 100 * count * synthetic.NUM_CLASSES, synthetic.NUM_CLASSES):
        image, mask = synthetic.generate_example(seed, "val", index, image_size)
        if (mask == class_id).sum() >= MIN_CLASS_PIXELS * (image_size / 128) ** 2:
            examples.append((image, mask))
        if len(examples) == count:
            return examples
    raise app.UsageError(f"--class_id={class_id} gives too few large objects; pick another class.")


def write_png(path: str, image) -> None:
    """Writes a uint8 RGB image or a single-channel mask as PNG."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(path, image):
        raise OSError(f"Could not write {path}.")


def main(argv) -> None:
    """Writes the support, its mask and the queries to `--output_dir`."""
    del argv
    (support, support_mask), *queries = class_examples(
        _CLASS_ID.value, 1 + _NUM_QUERIES.value, _SEED.value, _IMAGE_SIZE.value
    )
    query_dir = os.path.join(_OUTPUT_DIR.value, "queries")
    os.makedirs(query_dir, exist_ok=True)
    write_png(os.path.join(_OUTPUT_DIR.value, "support.png"), support)
    write_png(os.path.join(_OUTPUT_DIR.value, "support_mask.png"), support_mask)
    for index, (image, _) in enumerate(queries):
        write_png(os.path.join(query_dir, f"query{index}.png"), image)
    print(f"Wrote a support, its mask and {len(queries)} queries to {_OUTPUT_DIR.value}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["output_dir"])
    app.run(main)
