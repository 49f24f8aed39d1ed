"""Optimiser construction from configs: every optimiser of cwt-jax is built here.

Each optimising config section (`pretrain`, `inner`, `metatrain`) names an optax
optimiser with `optimizer`, its further arguments with `optimizer_args`, its learning
rate with `lr` and a PyTorch-style coupled weight decay with `weight_decay`.
"""

import inspect

import jax
import optax

from cwt_jax.errors import ConfigError


def from_config(
    section, key: str, learning_rate: float | optax.Schedule | None = None
) -> optax.GradientTransformation:
    """The optimiser of a config section.

    Args:
      section: a config section with `optimizer`, `optimizer_args`, `lr`, `weight_decay`.
      key: the section's name, for error messages ("inner", "metatrain", "pretrain").
      learning_rate: a schedule (or rate) to use instead of `section.lr`.

    Returns:
      The gradient transformation.
    """
    return build(
        section.optimizer,
        section.lr if learning_rate is None else learning_rate,
        weight_decay=section.weight_decay,
        key=key,
        **section.optimizer_args.to_dict(),
    )


def meta_optimizer(section) -> optax.GradientTransformation:
    """Meta-training's optimiser of the meta-parameters `{"cwt", "inner"}` (`fewshot`).

    The `metatrain` section's optimiser, whose updates of the learned inner-loop parts
    (`inner`) are scaled by `inner_params_lr_scale`: their learning rate is that multiple
    of the CWT's. At 1 it is the section's optimiser itself, with its state.

    Args:
      section: the `metatrain` config section.

    Returns:
      The gradient transformation.
    """
    optimizer = from_config(section, "metatrain")
    if section.inner_params_lr_scale == 1:
        return optimizer
    scaled = optax.multi_transform(
        {"cwt": optax.identity(), "inner": optax.scale(section.inner_params_lr_scale)},
        lambda params: {
            part: jax.tree.map(lambda _, label=part: label, tree) for part, tree in params.items()
        },
    )
    return optax.chain(optimizer, scaled)


def build(
    name: str,
    learning_rate: float | optax.Schedule,
    *,
    weight_decay: float = 0.0,
    key: str,
    **kwargs,
) -> optax.GradientTransformation:
    """Builds an optax optimiser by name, with PyTorch-style (coupled) weight decay.

    PyTorch's `weight_decay` adds `weight_decay * param` to the gradient before the
    optimiser sees it; `optax.add_decayed_weights` placed first does the same. Each
    argument must be one of the optimiser's, of the type of its default.

    Args:
      name: an optax optimiser taking `learning_rate`, e.g. "sgd", "adam", "adamw".
      learning_rate: constant or schedule.
      weight_decay: coupled L2 weight decay; 0 for none.
      key: the config section, for error messages (`<key>.optimizer`, `<key>.optimizer_args`).
      **kwargs: further arguments of the optax optimiser, e.g. momentum=0.9.

    Returns:
      The gradient transformation.
    """
    factory = getattr(optax, name, None)
    if not callable(factory) or name.startswith("_") or "learning_rate" not in _parameters(factory):
        raise ConfigError(
            f"{key}.optimizer={name!r} is not an optax optimiser; use e.g. sgd, adam or adamw."
        )
    parameters = _parameters(factory)
    for argument, value in kwargs.items():
        _check_argument(f"{key}.optimizer_args.{argument}", value, parameters.get(argument), name)
    optimizer = factory(learning_rate=learning_rate, **kwargs)
    if weight_decay:
        optimizer = optax.chain(optax.add_decayed_weights(weight_decay), optimizer)
    return optimizer


def _parameters(factory) -> dict[str, inspect.Parameter]:
    try:
        return dict(inspect.signature(factory).parameters)
    except (TypeError, ValueError):  # not a function with a signature
        return {}


def _check_argument(key: str, value, parameter: inspect.Parameter | None, name: str) -> None:
    """Raises unless `value` fits the optimiser's parameter: known, and typed as its default."""
    if parameter is None or parameter.name == "learning_rate":
        raise ConfigError(f"{key} is not an argument of optax.{name}; see its documentation.")
    default = parameter.default
    if isinstance(default, bool):
        fits = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, str):
        fits = isinstance(value, str)
    else:  # None, or no default: optax checks the value itself
        fits = True
    if not fits:
        raise ConfigError(
            f"{key}={value!r} is not of the type of optax.{name}'s default, {default!r}."
        )
