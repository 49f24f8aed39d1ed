"""Reading the weights a run or a prediction starts from: .pth files or orbax checkpoints.

Each is checked as it is read, before any work: `load_*` against the configured
architecture, `read_pspnet` / `read_cwt` against the architecture read from the
checkpoint itself (the `predict` command's, which has no config).
"""

import os
import re

import jax
import jax.numpy as jnp

from cwt_jax import errors, models
from cwt_jax.fewshot import inner
from cwt_jax.models import PSPNet, cwt
from cwt_jax.weights import checkpoints, pytorch

# The first convolution of each residual block in a PSPNet .pth file: "layer<stage>.<block>".
_PTH_BLOCK = re.compile(r"layer([1-4])\.\d+\.conv1\.weight")


def load_backbone(path: str, model: PSPNet, key: str) -> dict:
    """Reads PSPNet variables from a .pth file or an orbax checkpoint and checks they fit.

    Args:
      path: PSPNet .pth file, converted checkpoint or a training run's best checkpoint.
      model: the PSPNet of the config.
      key: the config key that named `path`, for error messages.

    Returns:
      `{"params", "batch_stats"}` of the model.
    """
    if path.endswith(".pth"):
        variables = pytorch.load_pspnet(_existing(path, key), model.layers)
    else:
        variables = checkpoints.load_tree(_existing(path, key), key)
    return checked_backbone(variables, model, path, key)


def checked_backbone(variables, model: PSPNet, path: str, key: str) -> dict:
    """PSPNet variables already read, as arrays, once they are checked to fit `model`.

    Args:
      variables: `{"params", "batch_stats"}` read from `path`.
      model: the PSPNet they are for.
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


def read_pspnet(path: str, key: str) -> tuple[PSPNet, dict]:
    """The PSPNet a checkpoint holds, its architecture read from it, and its variables.

    Args:
      path: PSPNet .pth file, converted checkpoint or a run's `pretrain/best`.
      key: the flag or config key that named `path`, for error messages.

    Returns:
      The PSPNet and its checked variables.

    Raises:
      FileNotFoundError, ConversionError: a missing checkpoint, or one holding no
        complete PSPNet.
    """
    is_pth = path.endswith(".pth")
    checkpoint = read_checkpoint(path, key)
    try:
        block_stages, width, channels = (
            _pth_pspnet_shapes(checkpoint) if is_pth else _pspnet_shapes(checkpoint["params"])
        )
    except (KeyError, TypeError):
        raise errors.ConversionError(
            f"{key}={path} holds no PSPNet; give a PSPNet .pth file, a converted "
            "PSPNet checkpoint or a run's pretrain/best."
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
            f"{key}={path} does not fit the configured model (model.layers, model.width, "
            "model.bottleneck_dim, cwt.heads); set them to the checkpoint's architecture."
        )
    return jax.tree.map(jnp.asarray, tree)
