"""The inner loop's settings, and the initialisation of the classifier it fits.

What meta-training learns is a pytree `{"cwt": transformer parameters, "inner":
learned parts of the inner loop}`; "inner" holds `init`, a (2, C) classifier
initialisation (`inner.init=learned`, MAML), and `log_lr`, a (2, C) log factor on the
inner loop's updates (`inner.learn_lr`, Meta-SGD), each only when configured.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from cwt_jax import optimizers
from cwt_jax.fewshot import repri

CLASSIFIER_INITS = ("torch", "zeros", "learned")
# What the inner loop fits (`inner.objective`): CWT's (2, C) classifier on the supports'
# cross-entropy, the same classifier with RePRI's query terms added, or RePRI's own
# prototype classifier (`repri`). The CWT adapts the (2, C) classifiers only.
OBJECTIVES = ("support", "transductive", "repri")
CWT_OBJECTIVES = ("support", "transductive")
# How meta-training's gradient reaches the inner loop: not at all (the paper), through
# each update taken as a constant (first-order MAML), or through every update.
INNER_GRADIENTS = ("none", "first_order", "full")


@dataclasses.dataclass(frozen=True)
class InnerLoop:
    """How an episode's support classifier is fitted: static, hashable settings.

    Attributes:
      optimizer: the inner optimiser.
      steps: its updates.
      init: the classifier's initialisation, one of `CLASSIFIER_INITS`.
      learn_lr: whether the learned (2, C) log factor `inner["log_lr"]` scales the
        updates (Meta-SGD).
      gradient: how meta-training's gradient reaches the loop, one of `INNER_GRADIENTS`.
      objective: what it fits, one of `OBJECTIVES`.
      repri_settings: RePRI's settings (`inner.repri`): the whole of "repri", and the
        query terms and their schedule of "transductive"; None for "support" alone.
    """

    optimizer: optax.GradientTransformation
    steps: int
    init: str
    learn_lr: bool
    gradient: str
    objective: str = "support"
    repri_settings: repri.Settings | None = None


def from_config(config) -> InnerLoop:
    """The inner loop of a config: its `inner` section and `metatrain.inner_gradient`.

    `inner.objective` names what it fits; `episode.episode_logit_differences` fits the
    others of `eval.objectives` with the same object.

    Built once per setting: the same settings give the same object (and optimiser), so
    the programs compiled for it are reused.

    Raises:
      ConfigError: naming an optimiser optax does not have, or a bad argument of it.
    """
    return _inner_loop(
        ml_collections.FrozenConfigDict(config.inner), config.metatrain.inner_gradient
    )


@functools.cache
def _inner_loop(section: ml_collections.FrozenConfigDict, gradient: str) -> InnerLoop:
    return InnerLoop(
        optimizer=optimizers.from_config(section, "inner"),
        steps=section.steps,
        init=section.init,
        learn_lr=section.learn_lr,
        gradient=gradient,
        objective=section.objective,
        repri_settings=repri_settings(section.repri),
    )


def repri_settings(section) -> repri.Settings:
    """RePRI's settings of the `inner.repri` config section, its optimiser built here.

    Raises:
      ConfigError: naming an optimiser optax does not have, or a bad argument of it.
    """
    return repri.Settings(
        optimizer=optimizers.from_config(section, "inner.repri"),
        temperature=section.temperature,
        adapt_iter=section.adapt_iter,
        fb_param_update=tuple(section.fb_param_update),
        weights=tuple(section.weights),
        norm_feat=section.norm_feat,
        query_pixels=section.query_pixels,
    )


def init_inner_params(channels: int, inner_config) -> dict:
    """The learned parts of the inner loop at the start of meta-training.

    A learned initialisation starts at zeros, and a learned log learning-rate factor at
    zeros, i.e. at `inner.lr` itself.

    Args:
      channels: feature channels C.
      inner_config: the `inner` config section (`init`, `learn_lr`).

    Returns:
      `{"init": (2, C)}` with `inner.init=learned`, `{"log_lr": (2, C)}` with
      `inner.learn_lr`, both, or {}.
    """
    params = {}
    if inner_config.init == "learned":
        params["init"] = jnp.zeros((2, channels))
    if inner_config.learn_lr:
        params["log_lr"] = jnp.zeros((2, channels))
    return params


def init_classifier(rng: jax.Array, inner_params: dict, channels: int, kind: str) -> jnp.ndarray:
    """Initial (2, C) weights of an episode's support classifier.

    Args:
      rng: random key.
      inner_params: the learned parts of the inner loop (`init_inner_params`).
      channels: feature channels C.
      kind: "torch" for PyTorch's Conv2d default, uniform(-1/sqrt(C), 1/sqrt(C)),
        "zeros", or "learned" for `inner_params["init"]` (`InnerLoop.init`).

    Returns:
      (2, C) weights.
    """
    if kind not in CLASSIFIER_INITS:
        raise ValueError(f"inner.init={kind!r} is not one of {', '.join(CLASSIFIER_INITS)}.")
    if kind == "learned":
        return inner_params["init"]
    if kind == "zeros":
        return jnp.zeros((2, channels))
    bound = channels**-0.5
    return jax.random.uniform(rng, (2, channels), minval=-bound, maxval=bound)
