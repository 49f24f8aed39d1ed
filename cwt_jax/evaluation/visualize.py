"""PNG panels of episodes: every support, the ground truth and each prediction, labelled."""

import os

import cv2
import numpy as np

from cwt_jax import data
from cwt_jax.data.labels import IGNORE_LABEL
from cwt_jax.evaluation.results import LABELS

TILE = 160  # side of each image in a panel, small enough to skim a folder of panels
_TITLE = 18  # height of the title strip above each image
_IGNORE = np.array([128, 128, 128], np.float32)


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shows a {0, 1, 255} mask on a normalised (H, W, 3) image as uint8 RGB.

    Foreground keeps its colours inside an outline drawn white on black, which reads on
    objects of any colour; background is dimmed and ignored pixels are grey.
    """
    rgb = np.clip(image * data.IMAGENET_STD + data.IMAGENET_MEAN, 0, 255)
    rgb[mask == 0] *= 0.35
    ignored = mask == IGNORE_LABEL
    rgb[ignored] = 0.5 * rgb[ignored] + 0.5 * _IGNORE
    shown = np.ascontiguousarray(rgb.astype(np.uint8))
    outline, _ = cv2.findContours(
        (mask == 1).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
    )
    cv2.drawContours(shown, outline, -1, (0, 0, 0), 3)
    return cv2.drawContours(shown, outline, -1, (255, 255, 255), 1)


def panel(episode: dict, predictions: dict, ious: dict, class_name: str) -> np.ndarray:
    """One episode as a row of titled tiles: supports, ground truth, each method's prediction.

    Args:
      episode: an episode record (`data.episodes_from_list`): its K support images and
        masks, query image and mask.
      predictions: method (a key of `results.LABELS`, e.g. "cwt", "support_only") ->
        (S, S) {0, 1} predictions of the query, in the order of the tiles.
      ious: method -> the episode's foreground IoU.
      class_name: the episode's class.

    Returns:
      uint8 RGB (TILE + title, (K + 1 + M) * TILE, 3) for M methods; the query's padding
      stays blank.
    """
    query_mask = episode["query_mask"]
    tiles = [
        (f"support {k + 1}", overlay(image, mask))
        for k, (image, mask) in enumerate(
            zip(episode["support_images"], episode["support_masks"], strict=True)
        )
    ]
    tiles.append((f"truth: {class_name}", overlay(episode["query_image"], query_mask)))
    for method in predictions:
        label = LABELS[method]
        prediction = np.where(query_mask == IGNORE_LABEL, IGNORE_LABEL, predictions[method])
        tiles.append(
            (f"{label} IoU {ious[method]:.2f}", overlay(episode["query_image"], prediction))
        )
    return np.concatenate([_titled(title, image) for title, image in tiles], axis=1)


def _titled(title: str, image: np.ndarray) -> np.ndarray:
    tile = cv2.resize(image, (TILE, TILE), interpolation=cv2.INTER_AREA)
    strip = np.full((_TITLE, TILE, 3), 255, np.uint8)
    cv2.putText(strip, title, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([strip, tile], axis=0)


def write_panels(
    directory: str, episodes, predictions: dict, ious: dict, class_names: dict[int, str]
) -> None:
    """Writes the `panel` of each of the first N episodes to `directory` as a PNG.

    Args:
      directory: created if needed.
      episodes: indexable episode records (`data.episodes_from_list`).
      predictions: method -> (N, S, S) predictions of the first N episodes (`panel`).
      ious: method -> (N,) their foreground IoUs.
      class_names: class id -> name.
    """
    os.makedirs(directory, exist_ok=True)
    for index in range(len(next(iter(predictions.values())))):
        episode = episodes[index]
        class_id = int(episode["class_id"])
        image = panel(
            episode,
            {method: masks[index] for method, masks in predictions.items()},
            {method: values[index] for method, values in ious.items()},
            class_names[class_id],
        )
        path = os.path.join(directory, f"episode{index:04d}_class{class_id}.png")
        if not cv2.imwrite(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"Could not write {path}.")
