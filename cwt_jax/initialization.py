"""Resolving the weights a run starts from: .pth files or orbax checkpoints, checked early."""

import os

import jax
import jax.numpy as jnp

from cwt_jax import checkpoints, convert, cwt, errors, fewshot, models
from cwt_jax.models import PSPNet, resnet


def pspnet(model_config) -> PSPNet:
    """The PSPNet feature extractor described by the `model` config section.

    `model.layers` is a depth (50, 101) or four block counts.
    """
    layers = model_config.layers
    if not isinstance(layers, int):
        layers = tuple(layers)
    try:
        resnet.stage_sizes(layers)
    except ValueError as error:
        raise errors.ConfigError(str(error)) from None
    return PSPNet(
        layers=layers,
        width=model_config.width,
        bottleneck_dim=model_config.bottleneck_dim,
        dropout=model_config.dropout,
        dtype=jnp.dtype(model_config.dtype),
    )


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
        variables = convert.load_pspnet(_existing(path, key), model.layers)
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
    return convert.load_resnet(_existing(path, key), model.layers)


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
    expected = jax.eval_shape(lambda: fewshot.init_inner_params(channels, config.inner))
    inner = params["inner"]
    if sorted(inner) != sorted(expected):
        raise errors.ConversionError(
            f"{key}={path} holds learned inner-loop parameters {sorted(inner) or 'none'}, "
            f"where inner.init={config.inner.init!r} and inner.learn_lr="
            f"{config.inner.learn_lr} need {sorted(expected) or 'none'}; set them as in its "
            "meta-training."
        )
    return {"cwt": cwt_params, "inner": _checked(inner, expected, path, key)}


def _read_meta_params(path: str, key: str) -> dict:
    """The CWT and learned inner-loop parameters of a .pth file (none) or a checkpoint."""
    if path.endswith(".pth"):
        return {"cwt": convert.load_cwt(_existing(path, key)), "inner": {}}
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
        return convert.read_state_dict(_existing(path, key))
    return checkpoints.load_tree(_existing(path, key), key)


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
