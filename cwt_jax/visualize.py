"""PNG panels of episodes: support with its mask, query with ground truth and prediction."""

import os

import cv2
import numpy as np

from cwt_jax import data
from cwt_jax.labels import IGNORE_LABEL

_OUTLINE = (255, 255, 0)  # RGB
_IGNORE = np.array([128, 128, 128], np.float32)


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shows a {0, 1, 255} mask on a normalised (H, W, 3) image as uint8 RGB.

    Foreground keeps its colours inside a yellow outline, background is dimmed and
    ignored pixels are grey, so the mask reads on objects of any colour.
    """
    rgb = np.clip(image * data.IMAGENET_STD + data.IMAGENET_MEAN, 0, 255)
    rgb[mask == 0] *= 0.35
    ignored = mask == IGNORE_LABEL
    rgb[ignored] = 0.5 * rgb[ignored] + 0.5 * _IGNORE
    shown = np.ascontiguousarray(rgb.astype(np.uint8))
    outline, _ = cv2.findContours(
        (mask == 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    return cv2.drawContours(shown, outline, -1, _OUTLINE, 1)


def write_panel(
    path: str,
    support_image: np.ndarray,
    support_mask: np.ndarray,
    query_image: np.ndarray,
    query_mask: np.ndarray,
    prediction: np.ndarray,
) -> None:
    """Writes support | query with ground truth | query with prediction side by side.

    Args:
      path: PNG file to write.
      support_image: (H, W, 3) normalised first support image.
      support_mask: (H, W) its mask.
      query_image: (H, W, 3) normalised query image.
      query_mask: (H, W) ground truth.
      prediction: (H, W) predicted {0, 1} mask; padding (ground truth 255) is left blank.
    """
    prediction = np.where(query_mask == IGNORE_LABEL, IGNORE_LABEL, prediction)
    panel = np.concatenate(
        [
            overlay(support_image, support_mask),
            overlay(query_image, query_mask),
            overlay(query_image, prediction),
        ],
        axis=1,
    )
    if not cv2.imwrite(path, cv2.cvtColor(panel, cv2.COLOR_RGB2BGR)):
        raise OSError(f"Could not write {path}.")


def write_panels(directory: str, episodes, predictions: np.ndarray) -> None:
    """Writes `write_panel` PNGs of the first `len(predictions)` episodes into `directory`.

    Args:
      directory: created if needed.
      episodes: indexable episode records (`data.episodes_from_list`).
      predictions: (N, H, W) predictions of the first N episodes.
    """
    os.makedirs(directory, exist_ok=True)
    for index, prediction in enumerate(predictions):
        episode = episodes[index]
        write_panel(
            os.path.join(directory, f"episode{index:04d}_class{episode['class_id']}.png"),
            episode["support_images"][0],
            episode["support_masks"][0],
            episode["query_image"],
            episode["query_mask"],
            prediction,
        )
