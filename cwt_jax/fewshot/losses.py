"""Segmentation losses: CWT's weighted two-class loss and RePRI's stage-1 loss.

Pixels labelled 255 are ignored by both.
"""

import jax
import jax.numpy as jnp

from cwt_jax.data.labels import IGNORE_LABEL


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
    """PyTorch's weighted two-class cross-entropy, from the logit difference d = l_1 - l_0.

    -log p_1 = softplus(-d) and -log p_0 = softplus(d), so this equals
    `torch.nn.CrossEntropyLoss(weight=class_weights, ignore_index=255)` of the logits
    `[l_0, l_1]` up to round-off: the weighted losses summed and divided by the summed
    weights of the pixels' true classes. On one (..., H, W) map instead of (..., H, W, 2)
    logits it is several times faster, which matters in the 200-step inner loop.

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
    logits: jnp.ndarray, labels: jnp.ndarray, *, label_smoothing: float
) -> jnp.ndarray:
    """RePRI's stage-1 cross-entropy with label smoothing, averaged over the labelled pixels.

    The target distribution gives the true class 1 - label_smoothing and each other class
    label_smoothing / (num_classes - 1) (RePRI's `compute_loss`); PyTorch's
    `label_smoothing` would instead give every class label_smoothing / num_classes. The
    loss is the mean over the pixels not labelled 255 (0 when there is none).

    Args:
      logits: (..., num_classes) unnormalised scores.
      labels: (...) integer labels in [0, num_classes) or 255.
      label_smoothing: probability taken from the true class and shared by the others.

    Returns:
      Scalar loss.
    """
    num_classes = logits.shape[-1]
    valid = labels != IGNORE_LABEL
    true_class = jax.nn.one_hot(jnp.where(valid, labels, 0), num_classes, dtype=jnp.bool_)
    targets = jnp.where(true_class, 1.0 - label_smoothing, label_smoothing / (num_classes - 1))
    pixel_losses = -jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    total = jnp.sum(jnp.where(valid, pixel_losses, 0.0))
    return total / jnp.maximum(jnp.sum(valid), 1)
