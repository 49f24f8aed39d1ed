"""Segmentation losses with the semantics of PyTorch's `CrossEntropyLoss`."""

import jax
import jax.numpy as jnp

IGNORE_LABEL = 255


def binary_class_weights(masks: jnp.ndarray) -> jnp.ndarray:
    """Background/foreground weights [1, n_background / n_foreground] counted over masks.

    CWT weights the inner loop's loss by these counts over all support masks of the
    episode, and the meta-training loss by those of the query mask. The original divides
    by zero when no pixel is foreground; the foreground weight then multiplies no pixel,
    so it is set to 1 here instead of inf.

    Args:
      masks: (..., H, W) integer masks in {0, 1, 255}.

    Returns:
      (2,) float32 class weights.
    """
    background = jnp.sum(masks == 0).astype(jnp.float32)
    foreground = jnp.sum(masks == 1).astype(jnp.float32)
    ratio = jnp.where(foreground > 0, background / jnp.maximum(foreground, 1.0), 1.0)
    return jnp.stack([jnp.ones_like(ratio), ratio])


@jax.custom_jvp
def softplus(x: jnp.ndarray) -> jnp.ndarray:
    """`jax.nn.softplus`, differentiated as `sigmoid(x)` rather than through its formula.

    The inner loop needs only the gradient of its loss, and a sigmoid is one exponential per
    pixel where autodiff of softplus takes three transcendental functions.
    """
    return jax.nn.softplus(x)


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (tangent,) = primals, tangents
    return softplus(x), jax.nn.sigmoid(x) * tangent


def binary_cross_entropy(
    logit_difference: jnp.ndarray, labels: jnp.ndarray, class_weights: jnp.ndarray
) -> jnp.ndarray:
    """`cross_entropy` of two-class logits, from their difference d = l_1 - l_0.

    -log p_1 = softplus(-d) and -log p_0 = softplus(d), so this equals
    `cross_entropy(stack([l_0, l_1], -1), labels, class_weights)` up to round-off; on one
    (..., H, W) map instead of (..., H, W, 2) logits it is several times faster, which
    matters in the 200-step inner loop.

    Args:
      logit_difference: (...) foreground minus background logit.
      labels: (...) labels in {0, 1, 255}.
      class_weights: (2,) background/foreground weights.

    Returns:
      Scalar weighted mean loss over the pixels not labelled 255; 0 when there is none.
    """
    valid = labels != IGNORE_LABEL
    foreground = labels == 1
    nll = softplus(jnp.where(foreground, -logit_difference, logit_difference))
    weights = jnp.where(valid, jnp.where(foreground, class_weights[1], class_weights[0]), 0.0)
    normaliser = jnp.sum(weights)
    safe = jnp.where(normaliser > 0, normaliser, 1.0)
    return jnp.where(normaliser > 0, jnp.sum(weights * nll) / safe, 0.0)


def cross_entropy(
    logits: jnp.ndarray,
    labels: jnp.ndarray,
    class_weights: jnp.ndarray | None = None,
    label_smoothing: float = 0.0,
) -> jnp.ndarray:
    """Mean cross-entropy over the pixels whose label is not 255.

    Reproduces `torch.nn.CrossEntropyLoss(weight, ignore_index=255, label_smoothing)`
    with mean reduction: the per-pixel losses are summed and divided by the summed
    weights of the pixels' true classes. With no counted pixel the loss is 0, not NaN.

    Args:
      logits: (..., num_classes) unnormalised scores.
      labels: (...) integer labels in [0, num_classes) or 255.
      class_weights: (num_classes,) weights, or None for uniform weights.
      label_smoothing: mass spread uniformly over the classes.

    Returns:
      Scalar loss.
    """
    num_classes = logits.shape[-1]
    if class_weights is None:
        class_weights = jnp.ones((num_classes,), logits.dtype)
    valid = labels != IGNORE_LABEL
    targets = jnp.where(valid, labels, 0)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    target_log_probs = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    target_weights = jnp.where(valid, class_weights[targets], 0.0)
    nll = -target_weights * target_log_probs
    smooth = -jnp.where(valid, jnp.sum(log_probs * class_weights, axis=-1), 0.0) / num_classes
    total = (1.0 - label_smoothing) * jnp.sum(nll) + label_smoothing * jnp.sum(smooth)
    normaliser = jnp.sum(target_weights)
    return jnp.where(normaliser > 0, total / jnp.where(normaliser > 0, normaliser, 1.0), 0.0)
