"""Reading the weights a run or a prediction starts from: .pth files or orbax checkpoints.

Each is checked as it is read, before any work: `load_*` against the configured
architecture, `read_backbone` / `read_cwt` against the architecture read from the
checkpoint itself (the `predict` command's, which has no config).

A DINOv2 backbone's architecture is always read from its checkpoint (width, depth,
registers, FFN): `model.backbone` names the hub model it must be, and a checkpoint of
another hub model is an error naming it; one of no hub model's shape (a custom or test
model of the official architecture) is taken as it is.
"""

import os
import re

import jax
import jax.numpy as jnp

from cwt_jax import errors, models
from cwt_jax.fewshot import inner
from cwt_jax.models import PSPNet, cwt, vit
from cwt_jax.weights import checkpoints, pytorch

# The first convolution of each residual block in a PSPNet .pth file: "layer<stage>.<block>".
_PTH_BLOCK = re.compile(r"layer([1-4])\.\d+\.conv1\.weight")


def load_backbone(path: str, model, key: str) -> tuple[PSPNet | vit.DinoV2, dict]:
    """Reads backbone variables from a .pth file or an orbax checkpoint and checks they fit.

    Args:
      path: PSPNet or official DINOv2 .pth file, converted checkpoint or a training run's
        best checkpoint.
      model: the backbone of the config.
      key: the config key that named `path`, for error messages.

    Returns:
      The backbone (for DINOv2, of the checkpoint's architecture) and its variables:
      `{"params", "batch_stats"}` of a PSPNet, `{"params"}` of a ViT.
    """
    if isinstance(model, vit.DinoV2):
        architecture, variables = _read_dinov2(path, key)
        _check_preset(architecture, model.architecture, path, key)
        model = vit.DinoV2(architecture, dtype=model.dtype)
        return model, checked_backbone(variables, model, path, key)
    if path.endswith(".pth"):
        variables = pytorch.load_pspnet(_existing(path, key), model.layers)
    else:
        variables = checkpoints.load_tree(_existing(path, key), key)
    return model, checked_backbone(variables, model, path, key)


def _read_dinov2(path: str, key: str) -> tuple[vit.Architecture, dict]:
    """The architecture and variables of a DINOv2 .pth file or converted checkpoint."""
    if path.endswith(".pth"):
        return pytorch.load_dinov2(_existing(path, key))
    return _converted_dinov2(checkpoints.load_tree(_existing(path, key), key), path, key)


def _converted_dinov2(tree, path: str, key: str) -> tuple[vit.Architecture, dict]:
    """The architecture and variables of a converted DINOv2 checkpoint's tree."""
    try:
        return dinov2_architecture(tree["params"]), tree
    except (KeyError, TypeError):
        raise errors.ConversionError(
            f"{key}={path} holds no complete DINOv2 ViT; give an official DINOv2 .pth file or "
            "one converted with `python -m cwt_jax.convert --format=dinov2`."
        ) from None


def dinov2_architecture(params: dict) -> vit.Architecture:
    """The architecture of converted DINOv2 `params`, read from their shapes.

    Raises:
      KeyError: where `params` are not a DINOv2's.
    """
    width = params["cls_token"].shape[-1]
    depth = sum(1 for name in params if name.startswith("blocks_"))
    registers = params["register_tokens"].shape[1] if "register_tokens" in params else 0
    ffn = "swiglu" if "w12" in params["blocks_0"]["mlp"] else "mlp"
    grid = round((params["pos_embed"].shape[1] - 1) ** 0.5)
    return vit.Architecture(width, depth, width // vit.HEAD_WIDTH, registers, ffn, grid)


def _check_preset(
    architecture: vit.Architecture, configured: vit.Architecture, path: str, key: str
) -> None:
    """A checkpoint of another hub model, or with(out) registers against the config, fails."""
    held, expected = vit.preset_name(architecture), vit.preset_name(configured)
    if held not in (None, expected) or architecture.registers != configured.registers:
        raise errors.ConversionError(
            f"{key}={path} holds {held or f'a DINOv2 ViT with {architecture.registers} registers'}"
            f" but model.backbone={expected}; set model.backbone to the checkpoint's model."
        )


def checked_backbone(variables, model, path: str, key: str) -> dict:
    """Backbone variables already read, as arrays, once they are checked to fit `model`.

    Args:
      variables: `{"params", "batch_stats"}` (PSPNet) or `{"params"}` (ViT) read from `path`.
      model: the backbone they are for.
      path: where they were read, for error messages.
      key: the config key or flag that named `path`.

    Returns:
      The variables.
    """
    expected = jax.eval_shape(lambda: models.init_variables(model, jax.random.key(0)))
    return _checked(variables, expected, path, key)


def load_resnet(path: str, model: PSPNet, key: str) -> dict:
    """Reads ImageNet ResNet variables (for the PSPNet's `backbone` submodule) from a .pth."""
    return pytorch.load_resnet(_existing(path, key), model.layers)


def load_meta_params(path: str, channels: int, config, key: str) -> dict:
    """Reads what meta-training learns: the CWT and the inner loop's learned parts.

    Args:
      path: transformer .pth file, converted checkpoint or a run's best checkpoint.
      channels: feature channels of the model.
      config: the whole config (`cwt.heads`, `inner.init`, `inner.learn_lr`).
      key: the config key that named `path`, for error messages.

    Returns:
      `{"cwt": transformer parameters, "inner": learned inner-loop parameters}`; "inner"
      is checked against `inner.init` and `inner.learn_lr`, so a learned initialisation
      is never replaced by a random one unnoticed.
    """
    params = _read_meta_params(path, key)
    cwt_params = checked_cwt(params["cwt"], channels, config.cwt.heads, path, key)
    expected = jax.eval_shape(lambda: inner.init_inner_params(channels, config.inner))
    inner_params = params["inner"]
    if sorted(inner_params) != sorted(expected):
        raise errors.ConversionError(
            f"{key}={path} holds learned inner-loop parameters {sorted(inner_params) or 'none'}, "
            f"where inner.init={config.inner.init!r} and inner.learn_lr="
            f"{config.inner.learn_lr} need {sorted(expected) or 'none'}; set them as in its "
            "meta-training."
        )
    return {"cwt": cwt_params, "inner": _checked(inner_params, expected, path, key)}


def _read_meta_params(path: str, key: str) -> dict:
    """The CWT and learned inner-loop parameters of a .pth file (none) or a checkpoint."""
    if path.endswith(".pth"):
        return {"cwt": pytorch.load_cwt(_existing(path, key)), "inner": {}}
    tree = checkpoints.load_tree(_existing(path, key), key)
    return {"cwt": tree["params"], "inner": tree.get("inner", {})}


def checked_cwt(params, channels: int, heads: int, path: str, key: str) -> dict:
    """Transformer parameters already read, as arrays, once they are checked to fit.

    Args:
      params: the parameters read from `path`.
      channels: feature channels of the model.
      heads: attention heads.
      path: where they were read, for error messages.
      key: the config key or flag that named `path`.

    Returns:
      The parameters.
    """
    expected = jax.eval_shape(lambda: cwt.init(jax.random.key(0), channels, heads))
    return _checked(params, expected, path, key)


def read_checkpoint(path: str, key: str) -> dict:
    """A .pth file's state dict or an orbax checkpoint's tree, as read, unchecked.

    Args:
      path: .pth file or orbax checkpoint (`checkpoints.load_tree`).
      key: the config key or flag that named `path`, for error messages.

    Returns:
      Parameter name -> array for a .pth file; the checkpoint's pytree otherwise.

    Raises:
      FileNotFoundError, ConversionError: naming `key` and `path`.
    """
    if path.endswith(".pth"):
        return pytorch.read_state_dict(_existing(path, key))
    return checkpoints.load_tree(_existing(path, key), key)


def read_backbone(path: str, key: str) -> tuple[PSPNet | vit.DinoV2, dict]:
    """The backbone a checkpoint holds, its architecture read from it, and its variables.

    Args:
      path: PSPNet or official DINOv2 .pth file, converted checkpoint or a run's
        `pretrain/best`.
      key: the flag or config key that named `path`, for error messages.

    Returns:
      The PSPNet or DINOv2 ViT and its checked variables.

    Raises:
      FileNotFoundError, ConversionError: a missing checkpoint, or one holding no
        complete PSPNet or DINOv2.
    """
    is_pth = path.endswith(".pth")
    checkpoint = read_checkpoint(path, key)
    holds_vit = "cls_token" in (checkpoint if is_pth else checkpoint.get("params", {}))
    if holds_vit:
        if is_pth:
            architecture, variables = pytorch.dinov2_from_state_dict(checkpoint, path)
        else:
            architecture, variables = _converted_dinov2(checkpoint, path, key)
        model = vit.DinoV2(architecture)
        return model, checked_backbone(variables, model, path, key)
    try:
        block_stages, width, channels = (
            _pth_pspnet_shapes(checkpoint) if is_pth else _pspnet_shapes(checkpoint["params"])
        )
    except (KeyError, TypeError):
        raise errors.ConversionError(
            f"{key}={path} holds no PSPNet or DINOv2; give a PSPNet or DINOv2 .pth file, a "
            "converted checkpoint or a run's pretrain/best."
        ) from None
    layers = tuple(block_stages.count(stage) for stage in range(1, 5))
    if min(layers) == 0:
        raise errors.ConversionError(
            f"{key}={path} has no residual block in some stage (block counts {layers}); "
            "give a complete PSPNet checkpoint."
        )
    model = PSPNet(layers=layers, width=width, bottleneck_dim=channels)
    variables = pytorch.pspnet_from_state_dict(checkpoint, layers, path) if is_pth else checkpoint
    return model, checked_backbone(variables, model, path, key)


def _pth_pspnet_shapes(state: dict) -> tuple[list[int], int, int]:
    """The stage of each residual block, the width and the feature channels of a state dict."""
    block_stages = [int(match[1]) for match in map(_PTH_BLOCK.fullmatch, state) if match]
    return block_stages, state["layer0.0.weight"].shape[0], state["bottleneck.0.weight"].shape[0]


def _pspnet_shapes(params: dict) -> tuple[list[int], int, int]:
    """The same of the `params` of PSPNet variables."""
    stages = params["backbone"]
    block_stages = [
        int(name.removeprefix("layer")) for name in stages if name != "layer0" for _ in stages[name]
    ]
    width = stages["layer0"]["conv1"]["kernel"].shape[-1]
    return block_stages, width, params["bottleneck_conv"]["kernel"].shape[-1]


def read_cwt(path: str, channels: int, key: str, backbone: str) -> tuple[dict, dict]:
    """The CWT a checkpoint holds, its heads read from it, and its inner-loop parts.

    Args:
      path: transformer .pth file, converted checkpoint or a run's `metatrain/best`.
      channels: feature channels of the backbone it adapts classifiers of.
      key: the flag or config key that named `path`, for error messages.
      backbone: `KEY=PATH` of the backbone's checkpoint, for error messages.

    Returns:
      The checked transformer parameters and the inner loop's meta-learned parts
      (`{"init"?, "log_lr"?}`; none in a .pth file).

    Raises:
      FileNotFoundError, ConversionError: a missing checkpoint, one holding no CWT, or a
        CWT of other channels than `channels`.
    """
    is_pth = path.endswith(".pth")
    checkpoint = read_checkpoint(path, key)
    try:
        if is_pth:
            d_model = checkpoint["layer_norm.weight"].shape[0]
            projection = checkpoint["w_qkvs.weight"].shape[0]
        else:
            d_model = checkpoint["params"]["layer_norm"]["scale"].shape[0]
            projection = checkpoint["params"]["w_qkvs"]["kernel"].shape[-1]
    except (KeyError, TypeError):
        raise errors.ConversionError(
            f"{key}={path} holds no CWT; give a transformer .pth file, a converted CWT "
            "checkpoint or a run's metatrain/best."
        ) from None
    if d_model != channels:
        raise errors.ConversionError(
            f"{key}={path} adapts {d_model}-channel classifiers but {backbone} "
            f"gives {channels}-channel features; give the CWT meta-trained on this backbone."
        )
    if is_pth:
        params, inner = pytorch.cwt_from_state_dict(checkpoint, path), {}
    else:
        params, inner = checkpoint["params"], checkpoint.get("inner", {})
    params = checked_cwt(params, channels, projection // d_model, path, key)
    return params, jax.tree.map(jnp.asarray, inner)


def _existing(path: str, key: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{key}={path} does not exist; give a .pth file or a checkpoint.")
    return path


def _checked(tree, expected, path: str, key: str):
    shapes = jax.tree.map(jnp.shape, tree)
    expected_shapes = jax.tree.map(lambda leaf: leaf.shape, expected)
    if shapes != expected_shapes:
        raise errors.ConversionError(
            f"{key}={path} does not fit the configured model (model.backbone, model.layers, "
            "model.width, model.bottleneck_dim, cwt.heads); set them to the checkpoint's "
            "architecture."
        )
    return jax.tree.map(jnp.asarray, tree)
