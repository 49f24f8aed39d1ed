"""Decoding and checking of the stored image and mask bytes.

Records keep the files' own encoded bytes (JPEG or PNG), so no TensorFlow is needed to
write or read them; decoding happens here, in the grain workers.
"""

import hashlib
import io
import struct
from collections.abc import Iterable

import cv2
import numpy as np
from PIL import Image

from cwt_jax.data.labels import IGNORE_LABEL
from cwt_jax.errors import DataError

_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"
_PNG_START, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"


def fingerprint(examples: Iterable[tuple[np.ndarray, np.ndarray]]) -> str:
    """SHA-256 (hex) of images and masks: their shapes, dtypes and pixels, in order.

    Args:
      examples: (uint8 image (H, W, 3) RGB, uint8 mask (H, W)) pairs.
    """
    digest = hashlib.sha256()
    for image, mask in examples:
        for array in (image, mask):
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Decodes JPEG or PNG bytes to an RGB image.

    Args:
      data: Encoded bytes.
      name: File or record name used in error messages.

    Returns:
      uint8 array (H, W, 3), RGB.

    Raises:
      DataError: if the bytes are not a complete JPEG/PNG file.

    """
    _check_complete(data, name)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"Cannot decode image {name}; replace it with a readable JPEG or PNG.")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_mask(data: bytes, name: str) -> np.ndarray:
    """Decodes a single-channel 8-bit PNG of class ids.

    Args:
      data: Encoded PNG bytes.
      name: File or record name used in error messages.

    Returns:
      uint8 array (H, W) of class ids (0 background, 255 ignore).

    Raises:
      DataError: if the file is unreadable or not a single-channel 8-bit mask.

    """
    _check_complete(data, name)
    mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError(f"Cannot decode mask {name}; replace it with a readable PNG.")
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise DataError(
            f"Mask {name} has shape {mask.shape} and dtype {mask.dtype}; masks must be "
            "single-channel 8-bit PNGs of class ids (palette PNGs such as VOC's "
            "SegmentationClass must be converted, see docs/data.md)."
        )
    return mask


# A binary mask's foreground: its grey level (Pillow's "L" conversion) at least this, as
# PATNet's and HSNet's loaders read FSS-1000, Deepglobe, ISIC and Chest X-ray masks.
BINARY_THRESHOLD = 128


def decode_binary_mask(data: bytes, name: str) -> np.ndarray:
    """Decodes a one-class mask: foreground where its grey level is at least 128.

    The file is read as PATNet does: Pillow's ``convert("L")`` (any mode: grey, RGB,
    palette), then thresholded at `BINARY_THRESHOLD`.

    Args:
      data: Encoded PNG (or JPEG) bytes.
      name: File or record name used in error messages.

    Returns:
      uint8 array (H, W) in {0, 1}.

    Raises:
      DataError: if the bytes are not a complete, readable PNG or JPEG file.

    """
    _check_complete(data, name)
    try:
        grey = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    except OSError:
        raise DataError(f"Cannot decode mask {name}; replace it with a readable PNG.") from None
    return (grey >= BINARY_THRESHOLD).astype(np.uint8)


def mask_shape(data: bytes, name: str) -> tuple[int, int]:
    """The (height, width) of a PNG mask, read from its header without decoding it.

    Args:
      data: Encoded PNG bytes.
      name: File or record name used in error messages.

    Returns:
      (height, width).

    Raises:
      DataError: if the bytes are not a PNG file.

    """
    if not data.startswith(_PNG_START):
        raise DataError(f"Mask {name} is not a PNG file.")
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return height, width


def check_mask_values(mask: np.ndarray, num_classes: int, name: str) -> None:
    """Raises unless every mask value is a class id in 0..num_classes or 255.

    Args:
      mask: Class-id mask.
      num_classes: Largest valid class id.
      name: File name used in the error message.

    Raises:
      DataError: naming the file and the offending values.

    """
    values = np.unique(mask)
    bad = values[(values > num_classes) & (values != IGNORE_LABEL)]
    if bad.size:
        raise DataError(
            f"Mask {name} has values {bad.tolist()} outside the class range 0..{num_classes} "
            f"(and {IGNORE_LABEL} for ignore); is it a mask of this dataset?"
        )


def class_pixel_counts(mask: np.ndarray) -> dict[int, int]:
    """Counts the pixels of each class present in a mask, background and ignore excluded.

    Args:
      mask: Class-id mask.

    Returns:
      Class id -> number of pixels.

    """
    counts = np.bincount(mask.ravel(), minlength=256)
    return {int(c): int(counts[c]) for c in np.flatnonzero(counts) if c not in (0, IGNORE_LABEL)}


def _check_complete(data: bytes, name: str) -> None:
    # libjpeg decodes a truncated file with only a warning (the missing part grey): check
    # the end-of-image marker ourselves so a cut-off download never enters the data silently.
    if data.startswith(_JPEG_START):
        complete = _JPEG_END in data.rstrip(b"\x00\r\n ")[-1024:]
    elif data.startswith(_PNG_START):
        complete = _PNG_END in data[-32:]
    else:
        raise DataError(f"{name} is not a JPEG or PNG file.")
    if not complete:
        raise DataError(f"{name} is truncated; download or extract it again.")
