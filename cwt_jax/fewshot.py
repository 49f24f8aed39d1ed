"""One few-shot episode end to end, written for one episode and vmapped over a batch.

Support features -> classifier fitted by the inner loop -> CWT adaptation to the query
-> logits. `adapt` is the one composition of these steps: meta-training differentiates
`episode_loss` built on it, evaluation scores `episode_logit_differences` built on it
(`episode_predictions` turns them into the maps of one query), and
both draw an episode's random keys from `episode_keys`. `jax.jit` is applied by the
loops that call them.
"""

import jax
import jax.numpy as jnp
import optax

from cwt_jax import classifier, cwt, losses, models
from cwt_jax.models import PSPNet

CLASSIFIER_INITS = ("torch", "zeros")


def init_classifier(rng: jax.Array, channels: int, kind: str) -> jnp.ndarray:
    """Initial (2, C) weights of the support classifier.

    Args:
      rng: random key.
      channels: feature channels C.
      kind: "torch" for PyTorch's Conv2d default, uniform(-1/sqrt(C), 1/sqrt(C)), or "zeros".

    Returns:
      (2, C) weights.
    """
    if kind not in CLASSIFIER_INITS:
        raise ValueError(f"inner.init={kind!r} is not one of {', '.join(CLASSIFIER_INITS)}.")
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
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    attention_dropout_rate: float = 0.0,
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The support classifier of one episode and its CWT adaptation to the query.

    As the original, no gradient flows from the adapted weights back through the inner
    loop: the CWT learns from the fitted weights as given.

    Args:
      cwt_params: transformer parameters.
      support_features: (K, h, w, C) raw support features.
      support_masks: (K, H, W) masks in {0, 1, 255}.
      query_features: (h, w, C) raw query features (L2-normalised here).
      init_weights: (2, C) initial classifier weights.
      optimizer: the inner loop's optimiser (static).
      steps: the inner loop's updates (static).
      dropout_rng: key for the CWT's dropout in training; None is eval mode.
      dropout_rate: dropout on the CWT's output projection.
      attention_dropout_rate: dropout on the CWT's attention map.

    Returns:
      (2, C) support-fitted weights, (2, C) adapted weights and the (h, w, C) normalised
      query features both apply to.
    """
    weights = jax.lax.stop_gradient(
        classifier.fit(
            support_features, support_masks, init_weights, optimizer=optimizer, steps=steps
        )
    )
    normalized = cwt.normalize_features(query_features)
    adapted = cwt.apply(
        cwt_params,
        weights,
        normalized,
        dropout_rng=dropout_rng,
        dropout_rate=dropout_rate,
        attention_dropout_rate=attention_dropout_rate,
    )
    return weights, adapted, normalized


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
      init_weights: (2, C) initial classifier weights.
      optimizer: the inner loop's optimiser (static).
      steps: the inner loop's updates (static).
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
    )
    return {
        method: classifier.predict(w[1:] - w[:1], normalized)[..., 0]
        for method, w in (("cwt", adapted), ("support_only", weights))
    }


def episode_predictions(
    cwt_params,
    support_features: jnp.ndarray,
    support_masks: jnp.ndarray,
    query_features: jnp.ndarray,
    init_weights: jnp.ndarray,
    size: tuple[int, int],
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
) -> dict[str, jnp.ndarray]:
    """Foreground (1) / background (0) maps of one query, with and without the CWT.

    Args:
      cwt_params: transformer parameters.
      support_features: (K, h, w, C) raw support features.
      support_masks: (K, H, W) masks in {0, 1, 255}.
      query_features: (h, w, C) raw query features.
      init_weights: (2, C) initial classifier weights.
      size: (H, W) of the maps: the logits are resized to it before the argmax.
      optimizer: the inner loop's optimiser (static).
      steps: the inner loop's updates (static).

    Returns:
      {"cwt": (H, W), "support_only": (H, W)} int32 maps.
    """
    differences = episode_logit_differences(
        cwt_params,
        support_features,
        support_masks,
        query_features,
        init_weights,
        optimizer=optimizer,
        steps=steps,
    )
    return {method: classifier.foreground(d, size) for method, d in differences.items()}
