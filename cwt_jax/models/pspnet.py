"""PSPNet feature extractor: dilated ResNet, pyramid pooling and a 3x3 bottleneck.

The base classifier of stage 1 is not part of this module: it is a plain (classes, C)
weight matrix applied with `cwt_jax.fewshot.classifier.predict`, like the few-shot
classifier.
"""

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cwt_jax.errors import ConfigError
from cwt_jax.models import interpolate, resnet


class PyramidPooling(nn.Module):
    """Pyramid Pooling Module: per bin, adaptive average pooling, 1x1 conv, BN, ReLU.

    PSPNet upsamples the pooled maps back with `align_corners=True` and concatenates them
    after the input; that happens inside `PyramidBottleneck`, which never builds the
    concatenation.
    """

    bins: Sequence[int]
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> list[jnp.ndarray]:
        """Maps (N, h, w, C) to one (N, bins, bins, C / len(bins)) map per bin size."""
        reduction = x.shape[-1] // len(self.bins)
        pyramid = []
        for index, bins in enumerate(self.bins):
            pooled = interpolate.adaptive_avg_pool(x, bins)
            pooled = resnet.conv(reduction, 1, dtype=self.dtype, name=f"conv{index}")(pooled)
            pyramid.append(nn.relu(resnet.batch_norm(train, f"bn{index}", self.dtype)(pooled)))
        return pyramid


class PyramidBottleneck(nn.Module):
    """PSPNet's 3x3 convolution over [x, upsampled pyramid maps], without upsampling them.

    The kernel is the one of a convolution over the (N, h, w, C + sum of pyramid channels)
    concatenation, and so is the result, to float round-off. A convolution is a sum over
    its input channels, so it splits into a convolution of x and one term per pyramid map.
    For a map, the bilinear upsampling and the shift of each of the 3 x 3 taps (with the
    zero padding at the borders) are linear along each spatial axis: (h, i) and (w, j)
    matrices for an (i, j) map. The term is therefore computed at the map's size and
    brought to (h, w) by those matrices. Only x is convolved at full resolution: half the
    FLOPs of PSPNet-50's bottleneck (2048 of its 4096 input channels).
    """

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray, pyramid: Sequence[jnp.ndarray]) -> jnp.ndarray:
        """Maps (N, h, w, C) and (N, i, j, c) pyramid maps to (N, h, w, features)."""
        channels = x.shape[-1] + sum(level.shape[-1] for level in pyramid)
        kernel = self.param("kernel", resnet.conv_init, (3, 3, channels, self.features))
        x, kernel, *pyramid = nn.dtypes.promote_dtype(x, kernel, *pyramid, dtype=self.dtype)
        out = jax.lax.conv_general_dilated(
            x,
            kernel[:, :, : x.shape[-1]],
            (1, 1),
            [(1, 1), (1, 1)],
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
        )
        height, width = x.shape[-3:-1]
        row_terms, row_matrices, start = [], [], x.shape[-1]
        for level in pyramid:
            level_rows, level_columns, level_channels = level.shape[-3:]
            taps = jnp.einsum(
                "nijc,uvcf->nuvijf", level, kernel[:, :, start : start + level_channels]
            )  # (N, 3, 3, i, j, features): the map through each tap's weights
            start += level_channels
            columns = _tap_shifted_bilinear(level_columns, width)  # (3, w, j)
            row_terms.append(
                jnp.einsum("vxj,nuvijf->nuixf", jnp.asarray(columns, x.dtype), taps).reshape(
                    (x.shape[0], 3 * level_rows, width, self.features)
                )
            )
            rows = _tap_shifted_bilinear(level_rows, height)  # (3, h, i)
            row_matrices.append(rows.transpose(1, 0, 2).reshape(height, 3 * level_rows))
        rows = jnp.asarray(np.concatenate(row_matrices, axis=1), x.dtype)  # (h, 3 * sum(i))
        return out + jnp.einsum("yk,nkxf->nyxf", rows, jnp.concatenate(row_terms, axis=1))


def _tap_shifted_bilinear(in_size: int, size: int) -> np.ndarray:
    """(3, size, in_size): the bilinear upsampling matrix with its rows moved by tap offsets.

    Row y of tap u is row y + u - 1 of `interpolate.bilinear_matrix(in_size, size)`, or
    zero where that falls outside [0, size): the zero padding of a 3x3 convolution.
    """
    matrix = interpolate.bilinear_matrix(in_size, size)
    padded = np.pad(matrix, ((1, 1), (0, 0)))
    return np.stack([padded[tap : tap + size] for tap in range(3)])


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

    cpu_dot_fusion = True  # `backbone_jit`: YNNPACK's dot fusion on CPU, 2x faster here

    @property
    def feature_channels(self) -> int:
        """Channels of the features: `bottleneck_dim`."""
        return self.bottleneck_dim

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Maps normalised (N, H, W, 3) images to (N, h, w, bottleneck_dim) features.

        In training mode batch norm uses batch statistics (pass `mutable=["batch_stats"]`)
        and dropout needs a `dropout` rng.
        """
        x = resnet.DilatedResNet(self.layers, self.width, dtype=self.dtype, name="backbone")(
            images, train
        )
        pyramid = PyramidPooling(self.bins, dtype=self.dtype, name="ppm")(x, train)
        x = PyramidBottleneck(self.bottleneck_dim, dtype=self.dtype, name="bottleneck_conv")(
            x, pyramid
        )
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

    Raises:
      ValueError: if `variables` are not those of a PSPNet of these `layers`, `width` and
        `bottleneck_dim` (flax would ignore extra blocks, or fail deep inside).
    """
    model = PSPNet(layers=layers, width=width, bottleneck_dim=bottleneck_dim)
    if jax.tree.map(jnp.shape, variables) != _variable_shapes(model):
        raise ValueError(
            f"The variables are not those of a PSPNet with layers={layers}, width={width}, "
            f"bottleneck_dim={bottleneck_dim}; pass the architecture they were trained with."
        )
    return apply_backbone(model, variables, images)


@functools.cache
def _variable_shapes(model: PSPNet):
    abstract = jax.eval_shape(lambda: resnet.init_variables(model, jax.random.key(0)))
    return jax.tree.map(lambda leaf: leaf.shape, abstract)


def backbone_jit(function: Callable, **jit_arguments) -> Callable:
    """`jax.jit` for the programs that run the frozen backbone, with their compiler options.

    The one place compiler options are set. On CPU, XLA's YNNPACK dot fusion also takes
    the convolutions, which makes the PSPNet's forward pass about twice as fast (same
    numbers to float round-off). It slows small matrix products, such as the inner loop's,
    and the DINOv2 ViT's forward pass (by about 25%), so only the programs of a backbone
    whose `cpu_dot_fusion` is True use it: `function`'s first argument is the backbone
    module (static). The options are chosen at the first call: the backend must not be
    initialised at import (`jax.distributed.initialize` comes first).

    Args:
      function: the function to compile; its first argument is the backbone module.
      **jit_arguments: further arguments of `jax.jit`, e.g. `static_argnums`.

    Returns:
      The compiled function.
    """
    compiled = functools.cache(
        lambda fused: jax.jit(
            function,
            compiler_options=_backbone_compiler_options() if fused else {},
            **jit_arguments,
        )
    )
    return functools.wraps(function)(
        lambda model, *args: compiled(model.cpu_dot_fusion)(model, *args)
    )


def _apply_eval(model: nn.Module, variables, images: jnp.ndarray) -> jnp.ndarray:
    """A frozen backbone's eval-mode features: (N, H, W, 3) images -> (N, h, w, C)."""
    return model.apply(variables, images, train=False)


apply_backbone = backbone_jit(_apply_eval, static_argnums=0)


_YNN_DOT_FUSION = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


def _backbone_compiler_options() -> dict[str, str]:
    """YNNPACK dot fusion on CPU, where XLA has it; nothing elsewhere."""
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(jnp.negative, compiler_options=_YNN_DOT_FUSION).lower(1.0).compile()
    except jax.errors.JaxRuntimeError:  # an XLA without YNNPACK fusions
        return {}
    return _YNN_DOT_FUSION


def from_config(model_config) -> PSPNet:
    """The PSPNet feature extractor described by the `model` config section.

    `model.layers` is a depth (50, 101) or four block counts.

    Raises:
      ConfigError: for a depth or block counts the ResNet does not have.
    """
    layers = model_config.layers
    if not isinstance(layers, int):
        layers = tuple(layers)
    try:
        resnet.stage_sizes(layers)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return PSPNet(
        layers=layers,
        width=model_config.width,
        bottleneck_dim=model_config.bottleneck_dim,
        dropout=model_config.dropout,
        dtype=jnp.dtype(model_config.dtype),
    )
