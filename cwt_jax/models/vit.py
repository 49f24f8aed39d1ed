"""DINOv2 vision transformer (Oquab et al., 2023), as the official hub backbones compute it.

The features are the official `forward_features(x)["x_norm_patchtokens"]` as a
channels-last (N, H/14, W/14, C) map: patch embedding, the class token, position
embeddings interpolated to the image's patch grid, the register tokens (the `_reg`
variants), pre-norm blocks with layer scale, and the final LayerNorm. Parameter names
follow the official state dict (`blocks_N/attn/qkv` is `blocks.N.attn.qkv`), so the
converter maps them one to one (`cwt_jax.weights.pytorch.dinov2_from_state_dict`).

The position embeddings are interpolated as the hub models do it: PyTorch's bicubic
(a = -0.75, `align_corners=False`, indices clamped at the borders) with
`scale_factor=(grid + 0.1) / M`, whose inverse maps output to input coordinates. That is
a linear map along each axis, built in NumPy at trace time (`bicubic_matrix`) as
`interpolate.py` builds its bilinear matrices.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PATCH_SIZE = 14
LAYER_NORM_EPSILON = 1e-6
INTERPOLATE_OFFSET = 0.1  # the hub models' `interpolate_offset`
HEAD_WIDTH = 64  # channels per attention head in every hub model
BICUBIC_A = -0.75  # PyTorch's bicubic kernel parameter
FFN_KINDS = ("mlp", "swiglu")


@dataclasses.dataclass(frozen=True)
class Architecture:
    """The hyperparameters of a DINOv2 ViT.

    Attributes:
      width: token channels (embed_dim).
      depth: number of blocks.
      heads: attention heads (width / 64 in the hub models).
      registers: register tokens (4 in the `_reg` variants, else 0).
      ffn: "mlp" (GELU MLP of 4 x width) or "swiglu" (the giant's fused SwiGLU).
      grid: side of the position-embedding grid of the checkpoint (37: 518 px / 14).
    """

    width: int
    depth: int
    heads: int
    registers: int = 0
    ffn: str = "mlp"
    grid: int = 37


_SIZES = {"s": (384, 12), "b": (768, 12), "l": (1024, 24), "g": (1536, 40)}
# The 8 hub backbones, e.g. dinov2_vits14 and dinov2_vits14_reg.
PRESETS = {
    f"dinov2_vit{size}14{suffix}": Architecture(
        width,
        depth,
        width // HEAD_WIDTH,
        registers=4 if suffix else 0,
        ffn="swiglu" if size == "g" else "mlp",
    )
    for size, (width, depth) in _SIZES.items()
    for suffix in ("", "_reg")
}


def preset_name(architecture: Architecture) -> str | None:
    """The hub name of an architecture, None for one that is not a hub model's."""
    names = [name for name, preset in PRESETS.items() if preset == architecture]
    return names[0] if names else None


def hub_file_name(name: str) -> str:
    """The official checkpoint's file name of a hub backbone: dinov2_vits14_reg4_pretrain.pth."""
    return f"{name.removesuffix('_reg')}{'_reg4' if name.endswith('_reg') else ''}_pretrain.pth"


def hub_url(name: str) -> str:
    """The download address of a hub backbone's official checkpoint."""
    return (
        f"https://dl.fbaipublicfiles.com/dinov2/{name.removesuffix('_reg')}/{hub_file_name(name)}"
    )


def swiglu_hidden(width: int) -> int:
    """Hidden channels of the official `SwiGLUFFNFused` for a 4 x width MLP."""
    return (int(4 * width * 2 / 3) + 7) // 8 * 8


def bicubic_matrix(in_size: int, scale_factor: float) -> np.ndarray:
    """Interpolation matrix of PyTorch's bicubic resize by `scale_factor`, no antialias.

    As `F.interpolate(mode="bicubic", align_corners=False, scale_factor=...)` on CPU: the
    output length is floor(in_size * scale_factor); output pixel i reads source
    coordinate (i + 0.5) / scale_factor - 0.5, the inverse factor computed in double and
    used as float32; the four taps' indices are clamped to the axis.

    Args:
      in_size: length of the input axis.
      scale_factor: the factor passed to PyTorch.

    Returns:
      (floor(in_size * scale_factor), in_size) float32 matrix.
    """
    out_size = math.floor(in_size * scale_factor)
    scale = np.float64(np.float32(1.0 / scale_factor))
    # PyTorch's build contracts scale * (i + 0.5) - 0.5 into one fused multiply-add: one
    # rounding to float32, which float64 arithmetic reproduces.
    source = (scale * (np.arange(out_size) + 0.5) - 0.5).astype(np.float32)
    index = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    t = np.clip(source - index.astype(np.float32), 0, 1).astype(np.float64)
    a = BICUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    # The weights in float64, rounded once: PyTorch's float32 polynomials are within 6e-7.
    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1).astype(np.float32)
    matrix = np.zeros((out_size, in_size), np.float32)
    rows = np.repeat(np.arange(out_size), 4)
    taps = np.clip(index[:, None] + np.arange(-1, 3), 0, in_size - 1)
    np.add.at(matrix, (rows, taps.reshape(-1)), weights.reshape(-1))
    return matrix


def position_matrix(grid: int, patches: int) -> np.ndarray:
    """The hub models' map from the checkpoint's grid side to an image's patch count.

    Args:
      grid: side M of the checkpoint's position-embedding grid.
      patches: patches along the image's axis.

    Returns:
      (patches, grid) float32 matrix.
    """
    matrix = bicubic_matrix(grid, (patches + INTERPOLATE_OFFSET) / grid)
    assert matrix.shape[0] == patches, (patches, grid)  # the offset keeps floor() exact
    return matrix


class LayerScale(nn.Module):
    """Per-channel scale of a residual branch (`ls1`, `ls2`)."""

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Scales (..., C) by the learned per-channel gamma."""
        gamma = self.param("gamma", nn.initializers.ones, (x.shape[-1],))
        return x * gamma.astype(x.dtype)


# Queries per block of `_attention`: the (heads, block, T) scores stay in cache.
QUERY_BLOCK = 256


def _attention(query: jnp.ndarray, key: jnp.ndarray, value: jnp.ndarray) -> jnp.ndarray:
    """softmax(q k^T) v of (N, T, heads, d) arrays, heads first, the queries in blocks.

    Each query's row is computed as a whole, so blocks change nothing but round-off; they
    keep the scores in cache. On this project's CPU, ViT-S/14 at 476 px runs 1.4x faster
    than with one (N, heads, T, T) product, which runs 2x faster than
    `jax.nn.dot_product_attention` (docs/foundation_backbones.md).
    """
    query, key, value = (x.transpose(0, 2, 1, 3) for x in (query, key, value))  # (N, h, T, d)

    def block(queries):  # (N, heads, B, d)
        return jax.nn.softmax(queries @ key.swapaxes(-1, -2), axis=-1) @ value

    # Unrolled (a static count): XLA's cost analysis counts a loop's body once.
    starts = range(0, query.shape[2], QUERY_BLOCK)
    out = jnp.concatenate([block(query[:, :, i : i + QUERY_BLOCK]) for i in starts], axis=2)
    return out.transpose(0, 2, 1, 3)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, as the official `Attention`."""

    heads: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Maps (N, T, C) tokens to (N, T, C)."""
        batch, tokens, width = x.shape
        qkv = nn.Dense(3 * width, dtype=self.dtype, name="qkv")(x)
        # (N, T, 3, heads, C / heads), as the official reshape splits the projection.
        qkv = qkv.reshape(batch, tokens, 3, self.heads, width // self.heads)
        query, key, value = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        out = _attention(query * (width // self.heads) ** -0.5, key, value)
        return nn.Dense(width, dtype=self.dtype, name="proj")(out.reshape(batch, tokens, width))


class Mlp(nn.Module):
    """The blocks' feed-forward network: GELU MLP (`fc1`, `fc2`) or SwiGLU (`w12`, `w3`)."""

    ffn: str
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Maps (N, T, C) tokens to (N, T, C)."""
        width = x.shape[-1]
        if self.ffn == "mlp":
            hidden = nn.Dense(4 * width, dtype=self.dtype, name="fc1")(x)
            return nn.Dense(width, dtype=self.dtype, name="fc2")(nn.gelu(hidden, approximate=False))
        gate, hidden = jnp.split(
            nn.Dense(2 * swiglu_hidden(width), dtype=self.dtype, name="w12")(x), 2, axis=-1
        )
        return nn.Dense(width, dtype=self.dtype, name="w3")(nn.silu(gate) * hidden)


class Block(nn.Module):
    """Pre-norm transformer block with layer scale on both residual branches."""

    heads: int
    ffn: str
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """Maps (N, T, C) tokens to (N, T, C)."""

        def norm(name):
            return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, name=name)

        x = x + LayerScale(name="ls1")(
            Attention(self.heads, self.dtype, name="attn")(norm("norm1")(x))
        )
        return x + LayerScale(name="ls2")(Mlp(self.ffn, self.dtype, name="mlp")(norm("norm2")(x)))


class _Projection(nn.Module):
    """The patch embedding's 14x14 stride-14 convolution (`patch_embed.proj`)."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        """Maps (N, H, W, 3) images to (N, H/14, W/14, features)."""
        batch, height, width, channels = images.shape
        kernel = self.param(
            "kernel",
            nn.initializers.lecun_normal(),
            (PATCH_SIZE, PATCH_SIZE, channels, self.features),
        )
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        images, kernel, bias = nn.dtypes.promote_dtype(images, kernel, bias, dtype=self.dtype)
        # Non-overlapping patches: the convolution is one product over each patch's pixels.
        patches = images.reshape(
            batch, height // PATCH_SIZE, PATCH_SIZE, width // PATCH_SIZE, PATCH_SIZE, channels
        )
        return jnp.einsum("nyuxvc,uvcf->nyxf", patches, kernel) + bias


class PatchEmbed(nn.Module):
    """Patch embedding, named as the official module (`patch_embed.proj`)."""

    features: int
    dtype: Any = None

    @nn.compact
    def __call__(self, images: jnp.ndarray) -> jnp.ndarray:
        """Maps (N, H, W, 3) images to (N, H/14, W/14, features) patch embeddings."""
        return _Projection(self.features, self.dtype, name="proj")(images)


class DinoV2(nn.Module):
    """DINOv2 patch features, frozen: a pure function of its variables `{"params"}`.

    Attributes:
      architecture: the hyperparameters (`PRESETS` holds the hub models').
      dtype: computation dtype (None: float32, or bfloat16); parameters stay float32 and
        the features are returned in float32.
    """

    architecture: Architecture
    dtype: Any = None
    cpu_dot_fusion = False  # `backbone_jit`: YNNPACK's dot fusion on CPU is slower here

    @property
    def feature_channels(self) -> int:
        """Channels of the features: the token width."""
        return self.architecture.width

    @nn.compact
    def __call__(self, images: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Maps normalised (N, H, W, 3) images to (N, H/14, W/14, width) patch features.

        Args:
          images: H and W multiples of 14.
          train: unused (the encoder is frozen and has no dropout); for the backbones'
            common signature.
        """
        del train
        arch = self.architecture
        batch, height, width = images.shape[:3]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise ValueError(f"DINOv2 needs sides that are multiples of 14, not {height}x{width}.")
        rows, cols = height // PATCH_SIZE, width // PATCH_SIZE
        init = nn.initializers.normal(0.02)
        cls_token = self.param("cls_token", init, (1, 1, arch.width))
        pos_embed = self.param("pos_embed", init, (1, 1 + arch.grid**2, arch.width))
        x = PatchEmbed(arch.width, self.dtype, name="patch_embed")(images)  # (N, h, w, C)
        if (rows, cols) == (arch.grid, arch.grid):  # the official code skips interpolating
            patch_pos = pos_embed[0, 1:].reshape(arch.grid, arch.grid, arch.width)
        else:
            grid = pos_embed[0, 1:].reshape(arch.grid, arch.grid, arch.width)
            patch_pos = jnp.einsum(
                "yi,ijc,xj->yxc",
                position_matrix(arch.grid, rows),
                grid,
                position_matrix(arch.grid, cols),
            )
        x = (x + patch_pos.astype(x.dtype)).reshape(batch, rows * cols, arch.width)
        cls = jnp.broadcast_to(cls_token + pos_embed[:, :1], (batch, 1, arch.width))
        tokens = [cls.astype(x.dtype)]
        if arch.registers:
            registers = self.param("register_tokens", init, (1, arch.registers, arch.width))
            tokens.append(jnp.broadcast_to(registers, (batch, arch.registers, arch.width)))
        x = jnp.concatenate([*tokens, x], axis=1).astype(x.dtype)
        for index in range(arch.depth):
            x = Block(arch.heads, arch.ffn, self.dtype, name=f"blocks_{index}")(x)
        x = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, name="norm")(x)
        x = x[:, 1 + arch.registers :].reshape(batch, rows, cols, arch.width)
        return x.astype(jnp.float32)
