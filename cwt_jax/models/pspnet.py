"""PSPNet feature extractor: dilated ResNet, pyramid pooling and a 3x3 bottleneck.

The base classifier of stage 1 is not part of this module: it is a plain (classes, C)
weight matrix applied with `cwt_jax.classifier.predict`, like the few-shot classifier.
"""

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from cwt_jax import interpolate
from cwt_jax.models import resnet


class PyramidPooling(nn.Module):
    """Pyramid Pooling Module: per bin, adaptive average pooling, 1x1 conv, BN, ReLU.

    The pooled maps are upsampled back with `align_corners=True` and concatenated
    after the input, doubling its channels.
    """

    bins: Sequence[int]
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Maps (N, h, w, C) to (N, h, w, 2C)."""
        reduction = x.shape[-1] // len(self.bins)
        pyramid = [x]
        for index, bins in enumerate(self.bins):
            pooled = interpolate.adaptive_avg_pool(x, bins)
            pooled = resnet.conv(reduction, 1, dtype=self.dtype, name=f"conv{index}")(pooled)
            pooled = nn.relu(resnet.batch_norm(train, f"bn{index}", self.dtype)(pooled))
            pyramid.append(interpolate.resize_bilinear(pooled, x.shape[-3:-1]))
        return jnp.concatenate(pyramid, axis=-1)


class PSPNet(nn.Module):
    """PSPNet features of output stride 8, as CWT uses them.

    Attributes:
      layers: ResNet depth (50 or 101) or four block counts.
      width: ResNet base width (64 in the published models).
      bottleneck_dim: channels of the features (512 in the published models).
      bins: pyramid pooling grid sizes.
      dropout: channel dropout rate after the bottleneck, applied only in training.
      dtype: computation dtype (None: float32, or bfloat16); parameters stay float32 and
        the features are returned in float32.
    """

    layers: int | Sequence[int]
    width: int = 64
    bottleneck_dim: int = 512
    bins: Sequence[int] = (1, 2, 3, 6)
    dropout: float = 0.1
    dtype: Any = None

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Maps normalised (N, H, W, 3) images to (N, h, w, bottleneck_dim) features.

        In training mode batch norm uses batch statistics (pass `mutable=["batch_stats"]`)
        and dropout needs a `dropout` rng.
        """
        x = resnet.DilatedResNet(self.layers, self.width, dtype=self.dtype, name="backbone")(
            images, train
        )
        x = PyramidPooling(self.bins, dtype=self.dtype, name="ppm")(x, train)
        x = resnet.conv(self.bottleneck_dim, 3, dtype=self.dtype, name="bottleneck_conv")(x)
        x = nn.relu(resnet.batch_norm(train, "bottleneck_bn", self.dtype)(x))
        x = nn.Dropout(self.dropout, broadcast_dims=(-3, -2), deterministic=not train)(x)
        return x.astype(jnp.float32)


def extract_features(
    variables,
    images: jnp.ndarray,
    *,
    layers: int | Sequence[int],
    width: int = 64,
    bottleneck_dim: int = 512,
) -> jnp.ndarray:
    """Computes eval-mode PSPNet features.

    Args:
      variables: `{"params": ..., "batch_stats": ...}` of a `PSPNet`.
      images: (N, H, W, 3) float32 images normalised with ImageNet mean and std.
      layers: ResNet depth (50 or 101) or four block counts.
      width: ResNet base width; 64 for the published models.
      bottleneck_dim: feature channels; 512 for the published models.

    Returns:
      (N, h, w, bottleneck_dim) features with h = (H - 1) // 8 + 1, likewise w.
    """
    model = PSPNet(layers=layers, width=width, bottleneck_dim=bottleneck_dim)
    return _jitted_apply_eval()(model, variables, images)


@functools.cache
def _jitted_apply_eval():
    # Built on first use: the compiler options depend on the backend, which must not be
    # initialised at import (jax.distributed.initialize comes first).
    def apply_eval(model: PSPNet, variables, images: jnp.ndarray) -> jnp.ndarray:
        return model.apply(variables, images, train=False)

    return jax.jit(apply_eval, static_argnums=0, compiler_options=inference_compiler_options())


_YNN_DOT_FUSION = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


@functools.cache
def inference_compiler_options() -> dict[str, str]:
    """XLA options for programs dominated by the PSPNet's forward pass.

    On CPU, XLA's YNNPACK dot fusion also takes the convolutions: PSPNet-50's forward at
    233 px went from 0.9 to 0.5-0.6 s per image on a 2-core AVX-512 machine (same numbers
    to float round-off). It slows the small matrix products of the inner loop (by ~15%)
    and the demo model's training steps, so training does not use it. Elsewhere, or where XLA
    lacks the option, none. Evaluation compiles both its steps with these options, so that
    cached and uncached evaluation fit the same classifiers to the bit.

    Returns:
      `compiler_options` for `jax.jit`.
    """
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(jnp.negative, compiler_options=_YNN_DOT_FUSION).lower(1.0).compile()
    except jax.errors.JaxRuntimeError:  # an XLA without YNNPACK fusions
        return {}
    return _YNN_DOT_FUSION
