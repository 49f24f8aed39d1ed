"""PNG panels of episodes: support with its mask, query with ground truth and prediction."""

import cv2
import numpy as np

from cwt_jax import data

_OUTLINE = (255, 255, 0)  # RGB
_IGNORE = np.array([128, 128, 128], np.float32)


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shows a {0, 1, 255} mask on a normalised (H, W, 3) image as uint8 RGB.

    Foreground keeps its colours inside a yellow outline, background is dimmed and
    ignored pixels are grey, so the mask reads on objects of any colour.
    """
    rgb = np.clip(image * data.IMAGENET_STD + data.IMAGENET_MEAN, 0, 255)
    rgb[mask == 0] *= 0.35
    rgb[mask == 255] = 0.5 * rgb[mask == 255] + 0.5 * _IGNORE
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
    prediction = np.where(query_mask == 255, 255, prediction)
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
