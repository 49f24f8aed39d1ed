"""Dilated ResNet with the "deep base" stem used by PSPNet, PFENet, RePRI and CWT.

The stem is three 3x3 convolutions (width, width, 2 * width channels) with batch
norm and ReLU, then a 3x3 max-pool of stride 2. Stages are bottleneck blocks with the
stride on the 3x3 convolution. For output stride 8, layer3 and layer4 keep stride 1
and dilate their 3x3 convolutions by 2 and 4, as PSPNet does to torchvision's ResNet.
Submodule names mirror the PyTorch modules so that conversion is by name.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Block counts of the published depths.
STAGE_SIZES = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


# He initialisation of torchvision's ResNet (fan_out, normal).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def stage_sizes(layers: int | Sequence[int]) -> tuple[int, ...]:
    """Block counts of the four stages.

    Args:
      layers: a published depth (50 or 101) or the four block counts themselves.

    Returns:
      Four block counts.
    """
    if isinstance(layers, int):
        if layers not in STAGE_SIZES:
            raise ValueError(
                f"model.layers={layers} is not a known depth; use 50, 101 or four block counts."
            )
        return STAGE_SIZES[layers]
    sizes = tuple(int(size) for size in layers)
    if len(sizes) != 4 or min(sizes) < 1:
        raise ValueError(f"model.layers={layers} must be 50, 101 or four positive block counts.")
    return sizes


def conv(
    features: int, kernel: int, *, stride: int = 1, dilation: int = 1, dtype=None, name: str
) -> nn.Conv:
    """A bias-free convolution with PyTorch's symmetric zero padding; float32 parameters."""
    padding = dilation * (kernel - 1) // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=stride,
        padding=[(padding, padding), (padding, padding)],
        kernel_dilation=dilation,
        use_bias=False,
        kernel_init=conv_init,
        dtype=dtype,
        name=name,
    )


# PyTorch's BatchNorm2d defaults: running = (1 - momentum) * running + momentum * batch.
BATCH_NORM_EPSILON = 1e-5
BATCH_NORM_MOMENTUM = 0.1


class BatchNorm(nn.Module):
    """PyTorch's `BatchNorm2d` over the last axis, running statistics included.

    In training it normalises with the mean and biased variance over all other axes (under
    `jax.jit`, the whole global batch however it is sharded: XLA inserts the reductions
    across devices, as PyTorch's SyncBatchNorm does) and updates the running variance with
    the unbiased variance, n / (n - 1) times the biased one, as PyTorch does; flax's
    `nn.BatchNorm` would keep the biased one. Statistics are computed in float32.

    Attributes:
      train: normalise with batch statistics and update the running ones.
      dtype: output dtype (None: float32); parameters and statistics stay float32.
    """

    train: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Normalises (..., C) inputs per channel."""
        features = x.shape[-1]
        running_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        running_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)
        scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
        x = x.astype(jnp.float32)
        if self.train:
            count = x.size // features
            if count < 2:
                raise ValueError(
                    f"Batch norm in training needs more than one value per channel, got "
                    f"input shape {x.shape}; use a larger batch (PyTorch raises here too)."
                )
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axes)
            var = jnp.mean(jnp.square(x - mean), axes)
            if not self.is_initializing():
                momentum = BATCH_NORM_MOMENTUM
                running_mean.value = (1 - momentum) * running_mean.value + momentum * mean
                unbiased = var * (count / (count - 1))
                running_var.value = (1 - momentum) * running_var.value + momentum * unbiased
        else:
            mean, var = running_mean.value, running_var.value
        y = (x - mean) * (scale * jax.lax.rsqrt(var + BATCH_NORM_EPSILON)) + bias
        return y.astype(self.dtype or jnp.float32)


def batch_norm(train: bool, name: str, dtype=None) -> BatchNorm:
    """`BatchNorm` with batch statistics in training, running statistics otherwise."""
    return BatchNorm(train=train, dtype=dtype, name=name)


class Bottleneck(nn.Module):
    """ResNet bottleneck block (1x1, 3x3 with stride and dilation, 1x1 with 4x expansion)."""

    planes: int
    stride: int
    dilation: int
    downsample: bool
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Applies the block to (N, H, W, C) inputs."""
        dtype = self.dtype
        out = conv(self.planes, 1, dtype=dtype, name="conv1")(x)
        out = nn.relu(batch_norm(train, "bn1", dtype)(out))
        out = conv(
            self.planes, 3, stride=self.stride, dilation=self.dilation, dtype=dtype, name="conv2"
        )(out)
        out = nn.relu(batch_norm(train, "bn2", dtype)(out))
        out = conv(4 * self.planes, 1, dtype=dtype, name="conv3")(out)
        out = batch_norm(train, "bn3", dtype)(out)
        if self.downsample:
            x = conv(4 * self.planes, 1, stride=self.stride, dtype=dtype, name="downsample_conv")(x)
            x = batch_norm(train, "downsample_bn", dtype)(x)
        return nn.relu(out + x)


class Stem(nn.Module):
    """Deep-base stem: three 3x3 convolutions with batch norm and ReLU, then max-pool."""

    width: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Maps (N, H, W, 3) images to (N, H/4, W/4, 2 * width) features."""
        for index, (features, stride) in enumerate(
            [(self.width, 2), (self.width, 1), (2 * self.width, 1)], start=1
        ):
            x = conv(features, 3, stride=stride, dtype=self.dtype, name=f"conv{index}")(x)
            x = nn.relu(batch_norm(train, f"bn{index}", self.dtype)(x))
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=[(1, 1), (1, 1)])


class Stage(nn.Module):
    """A stage of bottleneck blocks; the first block changes width and stride."""

    blocks: int
    planes: int
    stride: int
    dilation: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Applies the stage's blocks in order."""
        for index in range(self.blocks):
            first = index == 0
            x = Bottleneck(
                planes=self.planes,
                stride=self.stride if first else 1,
                dilation=self.dilation,
                downsample=first and (self.stride != 1 or x.shape[-1] != 4 * self.planes),
                dtype=self.dtype,
                name=f"block{index}",
            )(x, train)
        return x


class DilatedResNet(nn.Module):
    """Deep-base ResNet of output stride 8; returns layer4's (N, H/8, W/8, 32 * width) map.

    Attributes:
      layers: 50, 101 or four block counts.
      width: stem and first-stage width (64 in the published models).
      dtype: computation dtype (None: float32); parameters stay float32.
    """

    layers: int | Sequence[int]
    width: int
    dtype: Any = None

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Maps normalised (N, H, W, 3) images to layer4 features."""
        x = Stem(self.width, dtype=self.dtype, name="layer0")(images, train)
        strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
        for index, blocks in enumerate(stage_sizes(self.layers)):
            x = Stage(
                blocks=blocks,
                planes=self.width * 2**index,
                stride=strides[index],
                dilation=dilations[index],
                dtype=self.dtype,
                name=f"layer{index + 1}",
            )(x, train)
        return x


# Initialising needs an image; any size gives the same variables.
_INIT_IMAGES = (1, 42, 42, 3)  # sides a multiple of 14 for DINOv2


def init_variables(model: nn.Module, rng: jax.Array) -> dict:
    """Random variables of a backbone module.

    `{"params", "batch_stats"}` of a `DilatedResNet` or `PSPNet`, `{"params"}` of a
    `vit.DinoV2`.
    """
    return jax.jit(lambda key: model.init(key, jnp.zeros(_INIT_IMAGES), train=False))(rng)
