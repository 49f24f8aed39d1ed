"""One few-shot episode end to end, written for one episode and vmapped over a batch.

Backbone features -> support classifier fitted by the inner loop -> CWT adaptation to
the query -> logits. The functions here are shared by meta-training and evaluation;
`jax.jit` is applied by the loops that call them.
"""

import jax
import jax.numpy as jnp
import optax

from cwt_jax import classifier, cwt, losses
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


def episode_features(
    model: PSPNet, variables, support_images: jnp.ndarray, query_images: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Eval-mode features of a batch of episodes, in one backbone pass.

    Args:
      model: the frozen PSPNet.
      variables: its variables.
      support_images: (B, K, H, W, 3) normalised images.
      query_images: (B, H, W, 3) normalised images.

    Returns:
      Support features (B, K, h, w, C) and query features (B, h, w, C).
    """
    batch, shot = support_images.shape[:2]
    images = jnp.concatenate([support_images.reshape(-1, *support_images.shape[2:]), query_images])
    features = model.apply(variables, images, train=False)
    return features[: batch * shot].reshape(batch, shot, *features.shape[1:]), features[
        batch * shot :
    ]


def fit_episodes(
    support_features: jnp.ndarray,
    support_masks: jnp.ndarray,
    init_weights: jnp.ndarray,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
) -> jnp.ndarray:
    """`classifier.fit` vmapped over a batch of episodes: (B, K, h, w, C) -> (B, 2, C)."""
    return jax.vmap(lambda f, m, w: classifier.fit(f, m, w, optimizer=optimizer, steps=steps))(
        support_features, support_masks, init_weights
    )


def query_weights(
    cwt_params, weights: jnp.ndarray, query_features: jnp.ndarray, **dropout
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """The CWT-adapted classifier of one query image, and its normalised features.

    Args:
      cwt_params: transformer parameters.
      weights: (2, C) fitted support classifier.
      query_features: (h, w, C) raw query features (normalised here).
      **dropout: `dropout_rng` and rates for `cwt.apply` in training; none in eval.

    Returns:
      (2, C) adapted weights and (h, w, C) normalised features; the support-only and
      the CWT prediction apply `weights` and the adapted weights to the latter.
    """
    normalized = cwt.normalize_features(query_features)
    return cwt.apply(cwt_params, weights, normalized, **dropout), normalized


def query_loss(weights: jnp.ndarray, features: jnp.ndarray, query_mask: jnp.ndarray) -> jnp.ndarray:
    """CWT's outer loss: cross-entropy at mask size, weighted [1, n_bg / n_fg] of the query."""
    difference = classifier.logit_difference(weights, features, query_mask.shape)
    return losses.binary_cross_entropy(
        difference, query_mask, losses.binary_class_weights(query_mask)
    )


def segment(weights: jnp.ndarray, features: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Foreground (1) / background (0) map at `size`, as argmax of the resized logits."""
    return (classifier.logit_difference(weights, features, size) > 0).astype(jnp.int32)
