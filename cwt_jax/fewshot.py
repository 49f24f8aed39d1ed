"""One few-shot episode end to end, written for one episode and vmapped over a batch.

Support features -> classifier fitted by the inner loop -> CWT adaptation to the query
-> logits. `adapt` is the one composition of these steps: meta-training differentiates
`episode_loss` built on it, evaluation scores `episode_logit_differences` built on it,
and both draw an episode's random keys from `episode_keys`. `jax.jit` is applied by the
loops that call them.

What meta-training learns is a pytree `{"cwt": transformer parameters, "inner":
learned parts of the inner loop}`; "inner" holds `init`, a (2, C) classifier
initialisation (`inner.init=learned`, MAML), and `log_lr`, a (2, C) log factor on the
inner loop's updates (`inner.learn_lr`, Meta-SGD), each only when configured.
"""

import jax
import jax.numpy as jnp
import optax

from cwt_jax import classifier, cwt, losses, models
from cwt_jax.models import PSPNet

CLASSIFIER_INITS = ("torch", "zeros", "learned")
# How meta-training's gradient reaches the inner loop: not at all (the paper), through
# each update taken as a constant (first-order MAML), or through every update.
INNER_GRADIENTS = ("none", "first_order", "full")


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
        "zeros", or "learned" for `inner_params["init"]`.

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


def episode_keys(key: jax.Array, episode: jnp.ndarray) -> tuple[jax.Array, jax.Array]:
    """The classifier-initialisation and dropout keys of one episode.

    Keyed by the episode's index, so results do not depend on how episodes are batched
    or sharded.

    Args:
      key: key of the batch (meta-training step) or of the run (evaluation).
      episode: the episode's index under `key`.

    Returns:
      (initialisation key, dropout key).
    """
    init_key, dropout_key = jax.random.split(jax.random.fold_in(key, episode))
    return init_key, dropout_key


def _episode_features(
    model: PSPNet, variables, support_images: jnp.ndarray, query_images: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Eval-mode features of a batch of episodes, in one backbone pass.

    One compiled program (`models.backbone_jit`) per model and batch shape.

    Args:
      model: the frozen PSPNet (static).
      variables: its variables.
      support_images: (B, K, H, W, 3) normalised images.
      query_images: (B, H, W, 3) normalised images.

    Returns:
      Support features (B, K, h, w, C) and query features (B, h, w, C).
    """
    batch, shot = support_images.shape[:2]
    # Each episode's images stay together, so a batch sharded over episodes stays local.
    images = jnp.concatenate([support_images, query_images[:, None]], axis=1)
    features = model.apply(variables, images.reshape(-1, *images.shape[2:]), train=False)
    features = features.reshape(batch, shot + 1, *features.shape[1:])
    return features[:, :shot], features[:, shot]


episode_features = models.backbone_jit(_episode_features, static_argnums=0)


def adapt(
    cwt_params,
    support_features: jnp.ndarray,
    support_masks: jnp.ndarray,
    query_features: jnp.ndarray,
    init_weights: jnp.ndarray,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    log_learning_rate: jnp.ndarray | None = None,
    inner_gradient: str = "none",
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The support classifier of one episode and its CWT adaptation to the query.

    With `inner_gradient="none"`, as the original, no gradient flows from the adapted
    weights back through the inner loop: the CWT learns from the fitted weights as given.
    "first_order" and "full" let it reach `init_weights` and `log_learning_rate`
    (`classifier.fit`).

    Args:
      cwt_params: transformer parameters.
      support_features: (K, h, w, C) raw support features.
      support_masks: (K, H, W) masks in {0, 1, 255}.
      query_features: (h, w, C) raw query features (L2-normalised here).
      init_weights: (2, C) initial classifier weights.
      optimizer: the inner loop's optimiser (static).
      steps: the inner loop's updates (static).
      log_learning_rate: (2, C) log factor on the inner loop's updates; None for none.
      inner_gradient: one of `INNER_GRADIENTS` (static).
      dropout_rng: key for the CWT's dropout in training; None is eval mode.
      dropout_rate: dropout on the CWT's output projection.
      attention_dropout_rate: dropout on the CWT's attention map.

    Returns:
      (2, C) support-fitted weights, (2, C) adapted weights and the (h, w, C) normalised
      query features both apply to.
    """
    if inner_gradient not in INNER_GRADIENTS:
        raise ValueError(f"inner_gradient={inner_gradient!r} is not one of {INNER_GRADIENTS}.")
    weights = classifier.fit(
        support_features,
        support_masks,
        init_weights,
        optimizer=optimizer,
        steps=steps,
        log_learning_rate=log_learning_rate,
        first_order=inner_gradient == "first_order",
    )
    if inner_gradient == "none":
        weights = jax.lax.stop_gradient(weights)
    adapted, normalized = adapt_to_query(
        cwt_params,
        weights,
        query_features,
        dropout_rng=dropout_rng,
        dropout_rate=dropout_rate,
        attention_dropout_rate=attention_dropout_rate,
    )
    return weights, adapted, normalized


def adapt_to_query(
    cwt_params,
    weights: jnp.ndarray,
    query_features: jnp.ndarray,
    *,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The CWT's adaptation of fitted classifier weights to one query: `adapt` after its fit.

    Args:
      cwt_params: transformer parameters.
      weights: (2, C) support-fitted weights.
      query_features: (h, w, C) raw query features (L2-normalised here).
      dropout_rng: key for the CWT's dropout in training; None is eval mode.
      dropout_rate: dropout on the CWT's output projection.
      attention_dropout_rate: dropout on the CWT's attention map.

    Returns:
      (2, C) adapted weights and the (h, w, C) normalised query features they apply to.
    """
    normalized = cwt.normalize_features(query_features)
    adapted = cwt.apply(
        cwt_params,
        weights,
        normalized,
        dropout_rng=dropout_rng,
        dropout_rate=dropout_rate,
        attention_dropout_rate=attention_dropout_rate,
    )
    return adapted, normalized


def episode_loss(
    cwt_params,
    support_features: jnp.ndarray,
    support_masks: jnp.ndarray,
    query_features: jnp.ndarray,
    query_mask: jnp.ndarray,
    init_weights: jnp.ndarray,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    log_learning_rate: jnp.ndarray | None = None,
    inner_gradient: str = "none",
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
) -> jnp.ndarray:
    """CWT's meta-training loss of one episode (`src/train.py`).

    The classifier fitted on the supports is adapted to the query by the CWT; its logits
    on the normalised query features, resized to the mask (bilinear, `align_corners=True`),
    are scored by cross-entropy ignoring 255 and weighted [1, n_bg / n_fg] of the query
    mask. Meta-training's step is the mean of this over its episodes.

    Args:
      cwt_params: transformer parameters (differentiated).
      support_features: (K, h, w, C) raw support features.
      support_masks: (K, H, W) masks in {0, 1, 255}.
      query_features: (h, w, C) raw query features.
      query_mask: (H, W) mask in {0, 1, 255}.
      init_weights: (2, C) initial classifier weights (differentiated unless
        `inner_gradient="none"`).
      optimizer: the inner loop's optimiser (static).
      steps: the inner loop's updates (static).
      log_learning_rate: (2, C) log factor on the inner loop's updates; None for none.
      inner_gradient: how the gradient reaches the inner loop, one of `INNER_GRADIENTS`.
      dropout_rng: key for the CWT's dropout; None turns dropout off.
      dropout_rate: dropout on the CWT's output projection.
      attention_dropout_rate: dropout on the CWT's attention map.

    Returns:
      The scalar loss.
    """
    _, adapted, normalized = adapt(
        cwt_params,
        support_features,
        support_masks,
        query_features,
        init_weights,
        optimizer=optimizer,
        steps=steps,
        log_learning_rate=log_learning_rate,
        inner_gradient=inner_gradient,
        dropout_rng=dropout_rng,
        dropout_rate=dropout_rate,
        attention_dropout_rate=attention_dropout_rate,
    )
    difference = classifier.logit_difference(adapted, normalized, query_mask.shape)
    return losses.binary_cross_entropy(
        difference, query_mask, losses.binary_class_weights(query_mask)
    )


def episode_logit_differences(
    cwt_params,
    support_features: jnp.ndarray,
    support_masks: jnp.ndarray,
    query_features: jnp.ndarray,
    init_weights: jnp.ndarray,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    log_learning_rate: jnp.ndarray | None = None,
) -> dict[str, jnp.ndarray]:
    """Foreground minus background logits of one query, with and without the CWT.

    At feature resolution: evaluation resizes them to the label resolutions it reports
    (`classifier.foreground`, `classifier.foreground_at_side`).

    Args:
      cwt_params: transformer parameters.
      support_features: (K, h, w, C) raw support features.
      support_masks: (K, H, W) masks in {0, 1, 255}.
      query_features: (h, w, C) raw query features.
      init_weights: (2, C) initial classifier weights.
      optimizer: the inner loop's optimiser (static).
      steps: the inner loop's updates (static).
      log_learning_rate: (2, C) log factor on the inner loop's updates; None for none.

    Returns:
      {"cwt": (h, w), "support_only": (h, w)} float32 logit differences.
    """
    weights, adapted, normalized = adapt(
        cwt_params,
        support_features,
        support_masks,
        query_features,
        init_weights,
        optimizer=optimizer,
        steps=steps,
        log_learning_rate=log_learning_rate,
    )
    return {
        method: classifier.predict(w[1:] - w[:1], normalized)[..., 0]
        for method, w in (("cwt", adapted), ("support_only", weights))
    }
