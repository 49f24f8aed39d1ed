"""Image/mask transforms with the semantics of PFENet/RePRI/CWT (hszhao/semseg transforms).

Images are float32 RGB on 0..255 until ``normalize``; masks are uint8 class ids with 255
for ignore. Two geometries (``data.resize``):

- ``padded`` (RePRI's ``Resize``): the longer side becomes ``image_size``, both sides are
  floored to a multiple of 8, and the result is padded bottom/right to ``image_size`` x
  ``image_size`` (0 for the image, 255 for the mask).
- ``squash`` (PATNet's and HSNet's test protocol): the image is resized to ``image_size``
  x ``image_size`` as torchvision's ``Resize((S, S))`` does on a PIL image (Pillow's
  antialiased bilinear filter, on uint8), the mask with PyTorch's ``interpolate(mode=
  "nearest")``; nothing is padded or ignored.
"""

import dataclasses

import cv2
import numpy as np
from PIL import Image

from cwt_jax.data.labels import IGNORE_LABEL

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
RESIZES = ("padded", "squash")


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentations, applied in this order before the final resize and pad.

    The defaults are CWT's (``augmentations: ['hor_flip', 'vert_flip', 'resize']``).

    Attributes:
      scale_range: (min, max) of a random rescale factor, or None for none (RandScale).
      rotation_range: (min, max) angle in degrees of a rotation applied with probability
        1/2, or None for none (RandRotate; image padded with 0, mask with 255).
      hflip: Flip left-right with probability 1/2.
      vflip: Flip upside-down with probability 1/2.
      crop: Random ``image_size`` x ``image_size`` crop, padding smaller images (Crop).

    """

    scale_range: tuple[float, float] | None = None
    rotation_range: tuple[float, float] | None = None
    hflip: bool = True
    vflip: bool = True
    crop: bool = False


def resized_shape(height: int, width: int, image_size: int) -> tuple[int, int]:
    """Shape after the aspect-preserving resize of RePRI's ``Resize``.

    Args:
      height: Input height.
      width: Input width.
      image_size: Target length of the longer side.

    Returns:
      (new_height, new_width), the longer side ``image_size``, both floored to a multiple
      of 8.

    """
    if height >= width:
        new_h, new_w = image_size, int(width * (image_size / height))
    else:
        new_h, new_w = int(height * (image_size / width)), image_size
    return new_h // 8 * 8, new_w // 8 * 8


def resize_and_pad(
    image: np.ndarray, mask: np.ndarray, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Resizes keeping the aspect ratio and pads bottom/right to a square.

    Args:
      image: float32 (H, W, 3).
      mask: uint8 (H, W).
      image_size: Output side length.

    Returns:
      image float32 (image_size, image_size, 3), bilinear, padded with 0; mask uint8
      (image_size, image_size), nearest, padded with 255.

    """
    new_h, new_w = resized_shape(*mask.shape, image_size)
    out_image = np.zeros((image_size, image_size, 3), np.float32)
    out_image[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out_mask = np.full((image_size, image_size), IGNORE_LABEL, np.uint8)
    out_mask[:new_h, :new_w] = cv2.resize(mask, (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    return out_image, out_mask


def squash(image: np.ndarray, mask: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resizes to a square, ignoring the aspect ratio, as PATNet's test loaders do.

    The image goes through Pillow's bilinear ``resize`` on uint8 (torchvision's
    ``Resize((S, S))`` on a PIL image calls it); an image that is not uint8-valued (after
    a random scale or rotation) is rounded to uint8 first. The mask is resized as
    ``torch.nn.functional.interpolate(mode="nearest")`` does (`nearest_indices`).

    Args:
      image: float32 (H, W, 3) on 0..255.
      mask: uint8 (H, W).
      image_size: Output side length S.

    Returns:
      image float32 (S, S, 3) on 0..255; mask uint8 (S, S).

    """
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    resized = Image.fromarray(pixels).resize((image_size, image_size), Image.BILINEAR)
    rows = nearest_indices(mask.shape[0], image_size)
    columns = nearest_indices(mask.shape[1], image_size)
    return np.asarray(resized, np.float32), mask[rows[:, None], columns[None, :]]


def nearest_indices(input_size: int, output_size: int) -> np.ndarray:
    """Source index of each output index of PyTorch's nearest resize along one axis.

    ``floor(index * scale)`` with the float32 scale ``input_size / output_size``, clipped
    to the last index (ATen's ``nearest_idx``).

    Args:
      input_size: Input length.
      output_size: Output length.

    Returns:
      int64 (output_size,) indices into the input.

    """
    scale = np.float32(input_size) / np.float32(output_size)
    indices = np.floor(np.arange(output_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(indices, input_size - 1)


def pad_to_grid(mask: np.ndarray, grid: int) -> np.ndarray:
    """A mask at its original size, top-left in a ``grid`` x ``grid`` square of 255.

    PFENet's ``ori_resize`` pads the original mask to a square on its longer side; a
    common ``grid`` (the longest side of the evaluated images) gives every query one
    shape, and the extra pixels are ignored as that padding is.

    Args:
      mask: uint8 (H, W), max(H, W) <= grid.
      grid: Side of the output.

    Returns:
      uint8 (grid, grid) mask.

    """
    padded = np.full((grid, grid), IGNORE_LABEL, np.uint8)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    return padded


def normalize(image: np.ndarray) -> np.ndarray:
    """ImageNet normalisation of a 0..255 RGB image, as PFENet does.

    Args:
      image: float32 (..., 3) on 0..255.

    Returns:
      float32 (image - mean) / std with mean (0.485, 0.456, 0.406)*255 and std
      (0.229, 0.224, 0.225)*255.

    """
    return ((image - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def eval_transform(
    image: np.ndarray, mask: np.ndarray, image_size: int, resize: str = "padded"
) -> tuple[np.ndarray, np.ndarray]:
    """Evaluation transform: resize (and pad), then normalise.

    Args:
      image: float32 (H, W, 3) on 0..255.
      mask: uint8 (H, W).
      image_size: Output side length.
      resize: ``"padded"`` (`resize_and_pad`) or ``"squash"`` (`squash`), ``data.resize``.

    Returns:
      Normalised float32 image (S, S, 3) and int32 mask (S, S), S = image_size.

    """
    resized = squash if resize == "squash" else resize_and_pad
    image, mask = resized(image, mask, image_size)
    return normalize(image), mask.astype(np.int32)


def train_transform(
    image: np.ndarray,
    mask: np.ndarray,
    image_size: int,
    augmentation: Augmentation,
    rng: np.random.Generator,
    resize: str = "padded",
) -> tuple[np.ndarray, np.ndarray]:
    """Training transform: the augmentations, then ``eval_transform``.

    Args:
      image: float32 (H, W, 3) on 0..255.
      mask: uint8 (H, W).
      image_size: Output side length.
      augmentation: Which augmentations to apply.
      rng: Source of all randomness, so (seed, index) fixes the result.
      resize: The final resize, as ``eval_transform``'s.

    Returns:
      Normalised float32 image (S, S, 3) and int32 mask (S, S), S = image_size.

    """
    if augmentation.scale_range is not None:
        scale = rng.uniform(*augmentation.scale_range)
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if augmentation.rotation_range is not None and rng.random() < 0.5:
        angle = rng.uniform(*augmentation.rotation_range)
        h, w = mask.shape
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1)
        image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
        mask = cv2.warpAffine(
            mask, matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=IGNORE_LABEL
        )
    if augmentation.hflip and rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if augmentation.vflip and rng.random() < 0.5:
        image, mask = image[::-1], mask[::-1]
    if augmentation.crop:
        image, mask = _random_crop(image, mask, image_size, rng)
    return eval_transform(
        np.ascontiguousarray(image), np.ascontiguousarray(mask), image_size, resize
    )


def _random_crop(image, mask, size, rng):
    h, w = mask.shape
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if pad_h or pad_w:
        # Centred padding, as semseg's Crop.
        pads = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
        image = np.pad(image, (*pads, (0, 0)))
        mask = np.pad(mask, pads, constant_values=IGNORE_LABEL)
        h, w = mask.shape
    top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    return image[top : top + size, left : left + size], mask[top : top + size, left : left + size]
