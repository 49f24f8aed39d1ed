"""Segmentation metrics: confusion counts on device, IoU summaries on the host."""

import jax.numpy as jnp
import numpy as np

from cwt_jax.data.labels import IGNORE_LABEL


def intersection_union(
    predictions: jnp.ndarray, labels: jnp.ndarray, num_classes: int
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Per-class intersection and union pixel counts, pixels labelled 255 excluded.

    Args:
      predictions: (...) predicted class ids.
      labels: (...) true class ids or 255.
      num_classes: number of classes counted.

    Returns:
      Two (num_classes,) int32 arrays.
    """
    valid = labels != IGNORE_LABEL
    classes = jnp.arange(num_classes)
    predicted = (predictions[..., None] == classes) & valid[..., None]
    actual = (labels[..., None] == classes) & valid[..., None]
    axes = tuple(range(predictions.ndim))
    intersection = jnp.sum(predicted & actual, axis=axes, dtype=jnp.int32)
    union = jnp.sum(predicted | actual, axis=axes, dtype=jnp.int32)
    return intersection, union


def iou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """IoU of summed counts; NaN where a class never occurred nor was predicted."""
    union = np.asarray(union, np.float64)
    return np.where(union > 0, np.asarray(intersection) / np.maximum(union, 1), np.nan)


def summarize_episodes(
    class_ids: np.ndarray, intersections: np.ndarray, unions: np.ndarray
) -> dict:
    """Few-shot metrics of one run, as CWT reports them.

    Per class, the foreground intersections and unions are summed over the class's
    episodes; the class IoU is their ratio and mIoU the mean over classes. FB-IoU is the
    mean of the background and foreground IoU of counts summed over all episodes.

    Args:
      class_ids: (E,) class of each episode.
      intersections: (E, 2) background/foreground intersection counts.
      unions: (E, 2) background/foreground union counts.

    Returns:
      {"miou": float, "fb_iou": float, "per_class_iou": {class_id: float}}.
    """
    per_class = {
        int(class_id): float(
            iou(
                intersections[class_ids == class_id, 1].sum(),
                unions[class_ids == class_id, 1].sum(),
            )
        )
        for class_id in np.unique(class_ids)
    }
    foreground_background = iou(intersections.sum(0), unions.sum(0))
    return {
        "miou": float(np.mean(list(per_class.values()))),
        "fb_iou": float(np.mean(foreground_background)),
        "per_class_iou": per_class,
    }
