"""The backbone of a run, by `model.backbone`: the PSPNet or a frozen DINOv2 ViT.

The loops see one interface: a flax module applied as `model.apply(variables, images,
train=False)` (`apply_backbone`), its `feature_channels`, and random variables of the
right shapes from `init_variables`. Features come at the module's own grid: stride 8 for
the PSPNet, the 14-pixel patches for the ViT.
"""

import jax.numpy as jnp

from cwt_jax.errors import ConfigError
from cwt_jax.models import pspnet, vit

BACKBONES = ("pspnet", *vit.PRESETS)


def from_config(model_config) -> pspnet.PSPNet | vit.DinoV2:
    """The backbone described by the `model` config section.

    `model.backbone` is `pspnet` (`model.layers`, `width`, `bottleneck_dim`, `dropout`) or
    a DINOv2 hub name (`vit.PRESETS`); `model.dtype` applies to both.

    Raises:
      ConfigError: for an unknown backbone, or a depth the ResNet does not have.
    """
    name = model_config.backbone
    if name == "pspnet":
        return pspnet.from_config(model_config)
    if name not in vit.PRESETS:
        raise ConfigError(f"model.backbone={name!r} is not one of {', '.join(BACKBONES)}.")
    return vit.DinoV2(vit.PRESETS[name], dtype=jnp.dtype(model_config.dtype))


def is_frozen_encoder(model) -> bool:
    """Whether the backbone is a pre-trained encoder used frozen (no stage 1)."""
    return isinstance(model, vit.DinoV2)


def check_image_size(model, image_size: int, key: str) -> None:
    """Raises `ConfigError` naming `key` where the backbone cannot take S x S images.

    Args:
      model: the backbone.
      image_size: the side S.
      key: the config key or flag that set it.
    """
    if isinstance(model, vit.DinoV2) and image_size % vit.PATCH_SIZE:
        below = image_size // vit.PATCH_SIZE * vit.PATCH_SIZE
        raise ConfigError(
            f"{key}={image_size} is not a multiple of 14, the patch size of DINOv2; use "
            f"{below} or {below + vit.PATCH_SIZE}."
        )
