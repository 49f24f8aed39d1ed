"""Resizing and pooling with PyTorch's exact semantics, as separable matrix products.

`jax.image.resize` has no `align_corners=True` mode and no adaptive pooling; both are
linear maps along each spatial axis, so they are written here as small (out, in)
matrices applied with one einsum. The matrices are built in NumPy at trace time from
static shapes, so they are constants of the compiled program.
"""

import math

import jax.numpy as jnp
import numpy as np


def bilinear_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Interpolation matrix of PyTorch's bilinear resize with `align_corners=True`.

    Args:
      in_size: length of the input axis.
      out_size: length of the output axis.

    Returns:
      (out_size, in_size) float32 matrix whose rows hold the two interpolation weights.
    """
    scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0)
    source = scale * np.arange(out_size, dtype=np.float32)  # (out,)
    lower = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    upper = np.minimum(lower + 1, in_size - 1)
    upper_weight = source - lower.astype(np.float32)
    matrix = np.zeros((out_size, in_size), np.float32)
    rows = np.arange(out_size)
    np.add.at(matrix, (rows, lower), 1 - upper_weight)
    np.add.at(matrix, (rows, upper), upper_weight)
    return matrix


def adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Averaging matrix of PyTorch's `AdaptiveAvgPool` along one axis.

    Bin i covers [floor(i * in / out), ceil((i + 1) * in / out)), as in PyTorch.

    Args:
      in_size: length of the input axis.
      out_size: number of bins.

    Returns:
      (out_size, in_size) float32 matrix; row i averages bin i.
    """
    matrix = np.zeros((out_size, in_size), np.float32)
    for index in range(out_size):
        start = (index * in_size) // out_size
        end = math.ceil((index + 1) * in_size / out_size)
        matrix[index, start:end] = 1.0 / (end - start)
    return matrix


def resize_bilinear(images: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Bilinearly resizes the spatial axes with `align_corners=True` semantics.

    Args:
      images: (..., H, W, C) array.
      size: output (height, width).

    Returns:
      (..., height, width, C) array.
    """
    height, width = images.shape[-3:-1]
    rows = jnp.asarray(bilinear_matrix(height, size[0]), images.dtype)
    cols = jnp.asarray(bilinear_matrix(width, size[1]), images.dtype)
    return jnp.einsum("yh,...hwc,xw->...yxc", rows, images, cols)


def adaptive_avg_pool(images: jnp.ndarray, bins: int) -> jnp.ndarray:
    """Adaptive average pooling to a (bins, bins) grid with PyTorch's bin boundaries.

    Args:
      images: (..., H, W, C) array.
      bins: output height and width.

    Returns:
      (..., bins, bins, C) array.
    """
    height, width = images.shape[-3:-1]
    rows = jnp.asarray(adaptive_pool_matrix(height, bins), images.dtype)
    cols = jnp.asarray(adaptive_pool_matrix(width, bins), images.dtype)
    return jnp.einsum("yh,...hwc,xw->...yxc", rows, images, cols)
