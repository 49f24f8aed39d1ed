"""The files of `python -m cwt_jax.predict`: the images and masks it reads and writes.

Images, masks and query folders are read; each query's mask, overlay and entry of
`predictions.json` are written.

A user's mistake (an unreadable image, a mask that does not fit its image or has no
foreground, an empty query folder, two queries of one name) is raised naming its flag.
"""

import os
from collections.abc import Sequence

import cv2
import numpy as np

from cwt_jax import errors, files, predict
from cwt_jax.data import codec, transforms
from cwt_jax.evaluation import visualize

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def agreement(cwt_mask: np.ndarray, other_mask: np.ndarray, other: str) -> dict[str, float]:
    """How a query's CWT mask and that of the classifier it adapts compare.

    Args:
      cwt_mask: (H, W) {0, 1} mask of the CWT.
      other_mask: (H, W) {0, 1} mask of the inner loop's classifier alone.
      other: its method's name, e.g. "support_only" (`episode.without_cwt`).

    Returns:
      {"foreground_fraction", "<other>_foreground_fraction", "agreement" (fraction of
      pixels where the two agree), "iou_with_<other>" (IoU of the two foregrounds; 1 when
      both are empty)}.
    """
    cwt_foreground, other_foreground = cwt_mask == 1, other_mask == 1
    union = np.sum(cwt_foreground | other_foreground)
    intersection = np.sum(cwt_foreground & other_foreground)
    return {
        "foreground_fraction": float(np.mean(cwt_foreground)),
        f"{other}_foreground_fraction": float(np.mean(other_foreground)),
        "agreement": float(np.mean(cwt_foreground == other_foreground)),
        f"iou_with_{other}": float(intersection / union) if union else 1.0,
    }


def read_image(path: str, flag: str) -> np.ndarray:
    """Decodes a JPEG or PNG file to uint8 (H, W, 3) RGB, as the datasets' records are.

    Args:
      path: the file.
      flag: the flag that named it, for messages.

    Returns:
      The image.

    Raises:
      FileNotFoundError, DataError: naming the file.
    """
    return codec.decode_image(_read_bytes(path, flag), f"{flag}={path}")


def read_mask(path: str, flag: str) -> np.ndarray:
    """Decodes a single-channel 8-bit PNG mask to uint8 (H, W).

    Args:
      path: the file.
      flag: the flag that named it, for messages.

    Returns:
      The mask.

    Raises:
      FileNotFoundError, DataError: naming the file.
    """
    return codec.decode_mask(_read_bytes(path, flag), f"{flag}={path}")


def _read_bytes(path: str, flag: str) -> bytes:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag}={path} is not a file; check the path.")
    with open(path, "rb") as file:
        return file.read()


def read_supports(
    specs: Sequence[str], settings: predict.Settings
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Reads and checks the `--support=IMAGE:MASK` pairs.

    Args:
      specs: the flag's values.
      settings: the image size and `class_id` the masks are checked with.

    Returns:
      The support images and their masks.
    """
    images, masks = [], []
    for spec in specs:
        image_path, separator, mask_path = spec.rpartition(":")
        if not separator or not image_path or not mask_path:
            raise errors.ConfigError(
                f"--support={spec} is not IMAGE:MASK; give an image and its mask PNG "
                "separated by a colon."
            )
        image, mask = read_image(image_path, "--support"), read_mask(mask_path, "--support")
        predict.check_support(image, mask, settings, f"--support={spec}")
        images.append(image)
        masks.append(mask)
    return images, masks


def query_paths(specs: Sequence[str]) -> list[str]:
    """The query images the `--query` values name: files, and the images of folders.

    A folder gives its .jpg, .jpeg and .png files (any case), sorted by name.

    Args:
      specs: the flag's values.

    Returns:
      The image files, in the order given.

    Raises:
      FileNotFoundError, DataError: a missing path, an empty folder, or two queries whose
        outputs would have the same name.
    """
    paths = []
    for spec in specs:
        if os.path.isdir(spec):
            found = sorted(
                os.path.join(spec, name)
                for name in os.listdir(spec)
                if name.lower().endswith(IMAGE_EXTENSIONS)
            )
            if not found:
                raise errors.DataError(
                    f"--query={spec} holds no .jpg, .jpeg or .png file; give a folder of "
                    "images or image files."
                )
            paths.extend(found)
        elif os.path.exists(spec):
            paths.append(spec)
        else:
            raise FileNotFoundError(f"--query={spec} does not exist; check the path.")
    stems = {}
    for path in paths:
        other = stems.setdefault(output_stem(path), path)
        if other != path:
            raise errors.DataError(
                f"--query={other} and --query={path} would both write "
                f"{output_stem(path)}_mask.png; rename one of them."
            )
    return paths


def output_stem(path: str) -> str:
    """The file name of a query without its extension: `<stem>_mask.png` and so on."""
    return os.path.splitext(os.path.basename(path))[0]


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 (H, W) mask or (H, W, 3) RGB image."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    encoded, content = cv2.imencode(".png", image)
    if not encoded:
        raise OSError(f"OpenCV could not encode an image of shape {image.shape} as PNG.")
    return content.tobytes()


def write_query_outputs(directory: str, path: str, image: np.ndarray, masks: dict) -> dict:
    """Writes a query's mask and overlay and returns its line of `predictions.json`.

    Args:
      directory: the output folder.
      path: the query's file.
      image: its uint8 (H, W, 3) RGB image.
      masks: method -> its (H, W) {0, 1} masks (`predict.predictions`): the CWT's and
        its classifier's alone, e.g. {"cwt", "support_only"}, or RePRI's, {"repri"}.

    Returns:
      The query's entry: its files, size, and the `agreement` of the CWT's mask, the one
      written, with the other; RePRI's entry gives its mask's foreground fraction.
    """
    stem = output_stem(path)
    mask_file, overlay_file = f"{stem}_mask.png", f"{stem}_overlay.png"
    (first, mask), *others = masks.items()
    files.write_atomically(os.path.join(directory, mask_file), png_bytes(mask * np.uint8(255)))
    overlay = visualize.overlay(transforms.normalize(image.astype(np.float32)), mask)
    files.write_atomically(os.path.join(directory, overlay_file), png_bytes(overlay))
    compared = (
        agreement(mask, others[0][1], others[0][0])
        if others
        else {"foreground_fraction": float(np.mean(mask == 1))}
    )
    return {
        "query": path,
        "mask": mask_file,
        "overlay": overlay_file,
        "method": first,
        "height": image.shape[0],
        "width": image.shape[1],
        **compared,
    }
