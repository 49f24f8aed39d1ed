"""One few-shot episode end to end, written for one episode and vmapped over a batch.

Support features -> classifier fitted by the inner loop -> CWT adaptation to the query
-> logits. `adapt` is the one composition of these steps: meta-training differentiates
`episode_loss` built on it, evaluation scores `episode_logit_differences` built on it,
and both draw an episode's random keys from `episode_keys`. `jax.jit` is applied by the
loops that call them. `params` are the meta-learned `{"cwt", "inner"}` (see
`fewshot.inner`); the inner loop's settings come as one `inner.InnerLoop`, whose
objective says what it fits (`inner.OBJECTIVES`): the CWT adapts a (2, C) classifier,
and RePRI's prototype classifier (`repri`) is scored alone.
"""

import dataclasses

import jax
import jax.numpy as jnp

from cwt_jax import models
from cwt_jax.fewshot import classifier, inner, losses, repri
from cwt_jax.models import cwt


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
    model, variables, support_images: jnp.ndarray, query_images: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Eval-mode features of a batch of episodes, in one backbone pass.

    One compiled program (`models.backbone_jit`) per model and batch shape.

    Args:
      model: the frozen backbone (static).
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


def fit_support(
    inner_params: dict,
    support_features: jnp.ndarray,
    support_masks: jnp.ndarray,
    init_weights: jnp.ndarray,
    inner_loop: inner.InnerLoop,
    query_features: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """The (2, C) classifier of one episode, fitted by the inner loop (`classifier.fit`).

    Args:
      inner_params: the inner loop's learned parts; `log_lr` scales the updates where
        `inner_loop.learn_lr`.
      support_features: (K, h, w, C) raw support features.
      support_masks: (K, H, W) masks in {0, 1, 255}.
      init_weights: (2, C) initial classifier weights.
      inner_loop: the inner loop's settings (static); its objective "support" or
        "transductive".
      query_features: (h, w, C) raw query features, which the transductive objective
        reads (never the query's labels).

    Returns:
      (2, C) fitted weights.
    """
    if inner_loop.objective not in inner.CWT_OBJECTIVES:
        raise ValueError(
            f"inner.objective={inner_loop.objective!r} fits no (2, C) classifier; use one "
            f"of {', '.join(inner.CWT_OBJECTIVES)}."
        )
    transductive = inner_loop.objective == "transductive"
    return classifier.fit(
        support_features,
        support_masks,
        init_weights,
        optimizer=inner_loop.optimizer,
        steps=inner_loop.steps,
        log_learning_rate=inner_params["log_lr"] if inner_loop.learn_lr else None,
        first_order=inner_loop.gradient == "first_order",
        query_features=query_features if transductive else None,
        query_terms=inner_loop.repri_settings if transductive else None,
    )


def adapt(
    params: dict,
    support_features: jnp.ndarray,
    support_masks: jnp.ndarray,
    query_features: jnp.ndarray,
    init_weights: jnp.ndarray,
    inner_loop: inner.InnerLoop,
    *,
    dropout: cwt.Dropout | None = None,
    dropout_rng: jax.Array | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The support classifier of one episode and its CWT adaptation to the query.

    With `inner_loop.gradient="none"`, as the original, no gradient flows from the
    adapted weights back through the inner loop: the CWT learns from the fitted weights
    as given. "first_order" and "full" let it reach `init_weights` and the learned
    learning-rate factor (`classifier.fit`).

    Args:
      params: the meta-learned `{"cwt", "inner"}`.
      support_features: (K, h, w, C) raw support features.
      support_masks: (K, H, W) masks in {0, 1, 255}.
      query_features: (h, w, C) raw query features (L2-normalised here).
      init_weights: (2, C) initial classifier weights.
      inner_loop: the inner loop's settings (static).
      dropout: the CWT's dropout rates (static), used with `dropout_rng`.
      dropout_rng: key for the CWT's dropout in training; None is eval mode.

    Returns:
      (2, C) support-fitted weights, (2, C) adapted weights and the (h, w, C) normalised
      query features both apply to.
    """
    if inner_loop.gradient not in inner.INNER_GRADIENTS:
        raise ValueError(
            f"inner_gradient={inner_loop.gradient!r} is not one of {inner.INNER_GRADIENTS}."
        )
    weights = fit_support(
        params["inner"], support_features, support_masks, init_weights, inner_loop, query_features
    )
    if inner_loop.gradient == "none":
        weights = jax.lax.stop_gradient(weights)
    adapted, normalized = adapt_to_query(
        params["cwt"], weights, query_features, dropout=dropout, dropout_rng=dropout_rng
    )
    return weights, adapted, normalized


def adapt_to_query(
    cwt_params,
    weights: jnp.ndarray,
    query_features: jnp.ndarray,
    *,
    dropout: cwt.Dropout | None = None,
    dropout_rng: jax.Array | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The CWT's adaptation of fitted classifier weights to one query: `adapt` after its fit.

    Args:
      cwt_params: transformer parameters.
      weights: (2, C) support-fitted weights.
      query_features: (h, w, C) raw query features (L2-normalised here).
      dropout: the CWT's dropout rates (static), used with `dropout_rng`.
      dropout_rng: key for the CWT's dropout in training; None is eval mode.

    Returns:
      (2, C) adapted weights and the (h, w, C) normalised query features they apply to.
    """
    normalized = cwt.normalize_features(query_features)
    adapted = cwt.apply(cwt_params, weights, normalized, dropout=dropout, dropout_rng=dropout_rng)
    return adapted, normalized


def episode_loss(
    params: dict,
    support_features: jnp.ndarray,
    support_masks: jnp.ndarray,
    query_features: jnp.ndarray,
    query_mask: jnp.ndarray,
    init_weights: jnp.ndarray,
    inner_loop: inner.InnerLoop,
    *,
    dropout: cwt.Dropout | None = None,
    dropout_rng: jax.Array | None = None,
) -> jnp.ndarray:
    """CWT's meta-training loss of one episode (`src/train.py`).

    The classifier fitted on the supports is adapted to the query by the CWT; its logits
    on the normalised query features, resized to the mask (bilinear, `align_corners=True`),
    are scored by cross-entropy ignoring 255 and weighted [1, n_bg / n_fg] of the query
    mask. Meta-training's step is the mean of this over its episodes.

    Args:
      params: the meta-learned `{"cwt", "inner"}` (differentiated; "inner" and
        `init_weights` only where `inner_loop.gradient` is not "none").
      support_features: (K, h, w, C) raw support features.
      support_masks: (K, H, W) masks in {0, 1, 255}.
      query_features: (h, w, C) raw query features.
      query_mask: (H, W) mask in {0, 1, 255}.
      init_weights: (2, C) initial classifier weights.
      inner_loop: the inner loop's settings (static).
      dropout: the CWT's dropout rates (static), used with `dropout_rng`.
      dropout_rng: key for the CWT's dropout; None turns dropout off.

    Returns:
      The scalar loss.
    """
    _, adapted, normalized = adapt(
        params,
        support_features,
        support_masks,
        query_features,
        init_weights,
        inner_loop,
        dropout=dropout,
        dropout_rng=dropout_rng,
    )
    difference = classifier.logit_difference(adapted, normalized, query_mask.shape)
    return losses.binary_cross_entropy(
        difference, query_mask, losses.binary_class_weights(query_mask)
    )


def without_cwt(objective: str) -> str:
    """The name of an objective's scores without the CWT: "support_only" for "support"."""
    return "support_only" if objective == "support" else objective


def methods(inner_objective: str, objectives: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The names of what `episode_logit_differences` scores, in order.

    Args:
      inner_objective: `inner.objective`; the CWT adapts its classifier where it has one.
      objectives: further objectives scored without the CWT (`eval.objectives`).

    Returns:
      "cwt" where `inner_objective` is in `inner.CWT_OBJECTIVES`, then each scored
      objective's `without_cwt` name, in the order of `inner.OBJECTIVES` (a dict of
      arrays leaves `jax.jit` with its keys sorted: an order of its own is kept here).
    """
    scored = {inner_objective, *objectives}
    cwt_first = ("cwt",) if inner_objective in inner.CWT_OBJECTIVES else ()
    return cwt_first + tuple(without_cwt(o) for o in inner.OBJECTIVES if o in scored)


def episode_logit_differences(
    params: dict,
    support_features: jnp.ndarray,
    support_masks: jnp.ndarray,
    query_features: jnp.ndarray,
    init_weights: jnp.ndarray,
    inner_loop: inner.InnerLoop,
    *,
    objectives: tuple[str, ...] = (),
    query_valid: jnp.ndarray | None = None,
) -> dict[str, jnp.ndarray]:
    """Foreground minus background logits of one query, with and without the CWT.

    At feature resolution: evaluation resizes them to the label resolutions it reports
    (`classifier.foreground`, `classifier.foreground_at_side`). No gradient is taken,
    so the inner loop runs as with `gradient="none"` whatever meta-training's was. The
    CWT adapts the classifier of `inner_loop.objective`; each of `objectives` is fitted
    on the same episode (the (2, C) ones from `init_weights`) and scored without it.

    Args:
      params: the meta-learned `{"cwt", "inner"}`.
      support_features: (K, h, w, C) raw support features.
      support_masks: (K, H, W) masks in {0, 1, 255}.
      query_features: (h, w, C) raw query features.
      init_weights: (2, C) initial classifier weights.
      inner_loop: the inner loop's settings (static).
      objectives: further objectives (static), e.g. ("repri",).
      query_valid: (h, w) the query pixels RePRI's query terms count
        (`repri.query_valid`), where "repri" is scored.

    Returns:
      {method: (h, w) float32 logit differences} for each of `methods(inner_loop.objective,
      objectives)`, e.g. {"cwt", "support_only"}.
    """
    inner_loop = dataclasses.replace(inner_loop, gradient="none")
    normalized = cwt.normalize_features(query_features)
    differences = {}
    for objective in dict.fromkeys((inner_loop.objective, *objectives)):
        if objective == "repri":
            settings = inner_loop.repri_settings
            fitted = repri.fit(
                support_features, support_masks, query_features, query_valid, settings=settings
            )
            differences["repri"] = repri.logit_difference(fitted, query_features, settings)
            continue
        loop = dataclasses.replace(inner_loop, objective=objective)
        weights = fit_support(
            params["inner"], support_features, support_masks, init_weights, loop, query_features
        )
        if objective == inner_loop.objective:
            adapted, _ = adapt_to_query(params["cwt"], weights, query_features)
            differences["cwt"] = classifier.predict(adapted[1:] - adapted[:1], normalized)[..., 0]
        differences[without_cwt(objective)] = classifier.predict(
            weights[1:] - weights[:1], normalized
        )[..., 0]
    return {method: differences[method] for method in methods(inner_loop.objective, objectives)}
