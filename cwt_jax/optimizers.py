"""Optimiser construction from configs: every optimiser of cwt-jax is built here."""

from collections.abc import Mapping

import optax

from cwt_jax.errors import ConfigError


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
    optimiser sees it; `optax.add_decayed_weights` placed first does the same.

    Args:
      name: an optax optimiser taking `learning_rate`, e.g. "sgd", "adam", "adamw".
      learning_rate: constant or schedule.
      weight_decay: coupled L2 weight decay; 0 for none.
      key: the config key naming the optimiser, for error messages.
      **kwargs: further arguments of the optax optimiser, e.g. momentum=0.9.

    Returns:
      The gradient transformation.
    """
    factory = getattr(optax, name, None)
    if not callable(factory) or name.startswith("_"):
        raise ConfigError(f"{key}={name!r} is not an optax optimiser; use e.g. sgd, adam or adamw.")
    try:
        optimizer = factory(learning_rate=learning_rate, **kwargs)
    except TypeError as error:
        raise ConfigError(f"{key}={name!r} does not accept {dict(kwargs)}: {error}") from None
    if not isinstance(optimizer, optax.GradientTransformation):
        raise ConfigError(f"{key}={name!r} is not an optax optimiser; use e.g. sgd, adam or adamw.")
    if weight_decay:
        optimizer = optax.chain(optax.add_decayed_weights(weight_decay), optimizer)
    return optimizer


def inner_optimizer(inner_config) -> optax.GradientTransformation:
    """The support classifier's optimiser from the `inner` config section."""
    arguments: Mapping = inner_config.optimizer_args.to_dict()
    return build(inner_config.optimizer, inner_config.lr, key="inner.optimizer", **arguments)


def sgd_with_decay(section, schedule, key: str) -> optax.GradientTransformation:
    """SGD with momentum, Nesterov and weight decay from a training config section.

    Args:
      section: config with `momentum`, `nesterov`, `weight_decay`.
      schedule: learning rate or schedule.
      key: config section name, for error messages.

    Returns:
      The gradient transformation.
    """
    return build(
        "sgd",
        schedule,
        weight_decay=section.weight_decay,
        momentum=section.momentum,
        nesterov=section.nesterov,
        key=key,
    )
