"""Resizing and pooling with PyTorch's exact semantics, as separable matrix products.

`jax.image.resize` has no `align_corners=True` mode and no adaptive pooling; both are
linear maps along each spatial axis, so they are written here as small (out, in)
matrices applied with one einsum. The matrices are built in NumPy at trace time from
static shapes, so they are constants of the compiled program; `bilinear_matrix_to_side`
builds one on the device, for an output length that varies from call to call.
"""

import math

import jax
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


def bilinear_matrix_to_side(in_size: int, side: jnp.ndarray, rows: int) -> jnp.ndarray:
    """`bilinear_matrix(in_size, side)` for an output length known only on the device.

    Built in the compiled program from `side`, so one program serves every output
    length up to `rows`: row i < side holds output pixel i's weights, those of
    `bilinear_matrix` (the same float32 scale and products: equal bit for bit on CPU,
    `tests/test_protocols.py`); rows from `side` on are zero.

    Args:
      in_size: length of the input axis (static).
      side: () int, the output length, 1 <= side <= rows.
      rows: rows of the matrix (static).

    Returns:
      (rows, in_size) float32 matrix.
    """
    side = jnp.asarray(side, jnp.int32)
    scale = jnp.where(
        side > 1, jnp.float32(in_size - 1) / jnp.maximum(side - 1, 1).astype(jnp.float32), 0
    )
    source = scale * jnp.arange(rows, dtype=jnp.float32)  # (rows,)
    lower = jnp.minimum(jnp.floor(source).astype(jnp.int32), in_size - 1)
    upper = jnp.minimum(lower + 1, in_size - 1)
    upper_weight = (source - lower.astype(jnp.float32))[:, None]
    matrix = (1 - upper_weight) * jax.nn.one_hot(lower, in_size) + upper_weight * jax.nn.one_hot(
        upper, in_size
    )
    return jnp.where((jnp.arange(rows) < side)[:, None], matrix, 0)


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


def resize_via_to_side(
    image: jnp.ndarray, via: tuple[int, int], side: jnp.ndarray, grid: int
) -> jnp.ndarray:
    """Bilinear resizes (`align_corners=True`) to `via`, then to side x side, in a grid.

    Both resizes are linear, so they are one (grid, in) matrix per axis, the second
    built on the device from `side` (`bilinear_matrix_to_side`): one compiled program
    serves every side, and the cost is that of resizing the small input once.

    Args:
      image: (H, W) array.
      via: the intermediate (height, width) (static).
      side: () int, the final height and width, at most `grid`.
      grid: side of the output (static).

    Returns:
      (grid, grid) array: the resized image in its top-left side x side square, 0 beyond.
    """
    rows, cols = (
        bilinear_matrix_to_side(length, side, grid) @ bilinear_matrix(in_length, length)
        for in_length, length in zip(image.shape, via, strict=True)
    )
    return jnp.einsum("yh,hw,xw->yx", rows, image, cols)


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
