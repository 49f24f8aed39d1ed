"""The few-shot linear classifier: prediction and the inner loop that fits it."""

import functools

import jax
import jax.numpy as jnp
import optax

from cwt_jax.fewshot import losses, repri
from cwt_jax.models import interpolate


def predict(weights: jnp.ndarray, features: jnp.ndarray) -> jnp.ndarray:
    """Applies a bias-free linear classifier (a 1x1 convolution) to a feature map.

    Args:
      weights: (num_classes, C) classifier weights, (2, C) for background/foreground.
      features: (..., h, w, C) features.

    Returns:
      (..., h, w, num_classes) logits.
    """
    return jnp.einsum("nc,...c->...n", weights, features)


def support_loss(
    weights: jnp.ndarray, features: jnp.ndarray, masks: jnp.ndarray, class_weights: jnp.ndarray
) -> jnp.ndarray:
    """Weighted cross-entropy of the classifier on support masks, at mask resolution.

    Args:
      weights: (2, C) classifier weights.
      features: (K, h, w, C) support features.
      masks: (K, H, W) masks in {0, 1, 255}.
      class_weights: (2,) background/foreground weights.

    Returns:
      Scalar loss; logits are resized to (H, W) with `align_corners=True` first.
    """
    difference = logit_difference(weights, features, masks.shape[-2:])
    return losses.binary_cross_entropy(difference, masks, class_weights)


def logit_difference(
    weights: jnp.ndarray, features: jnp.ndarray, size: tuple[int, int]
) -> jnp.ndarray:
    """Foreground minus background logit, bilinearly resized (`align_corners=True`) to `size`.

    Resizing is linear, so resizing the difference equals the difference of the resized
    logits, at half the cost.

    Args:
      weights: (2, C) classifier weights.
      features: (..., h, w, C) features.
      size: output (H, W).

    Returns:
      (..., H, W) logit differences; the predicted class is foreground where positive.
    """
    difference = predict(weights[1:] - weights[:1], features)  # (..., h, w, 1)
    return interpolate.resize_bilinear(difference, size)[..., 0]


def foreground(difference: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Foreground (1) / background (0) map of logit differences resized to `size`.

    Args:
      difference: (..., h, w) foreground minus background logits at feature resolution.
      size: (H, W) of the map (static): bilinear, `align_corners=True`.

    Returns:
      (..., H, W) int32 map.
    """
    resized = interpolate.resize_bilinear(difference[..., None], size)[..., 0]
    return (resized > 0).astype(jnp.int32)


def foreground_at_side(
    difference: jnp.ndarray, size: tuple[int, int], side: jnp.ndarray, grid: int
) -> jnp.ndarray:
    """PFENet's `ori_resize` prediction of one query (`interpolate.resize_via_to_side`).

    The logit difference is resized (bilinear, `align_corners=True`) to the test size
    `size`, then to the side x side square of the original mask padded on its longer
    side, as PFENet resizes its test-size logits.

    Args:
      difference: (h, w) foreground minus background logits at feature resolution.
      size: (S, S) test size (static).
      side: () int, the longer side L of the original mask, at most `grid`.
      grid: side of the output (static).

    Returns:
      (grid, grid) int32 map, the prediction in its top-left L x L square, 0 beyond.
    """
    resized = interpolate.resize_via_to_side(difference, size, side, grid)
    return (resized > 0).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("optimizer", "steps", "first_order", "query_terms"))
def fit(
    features: jnp.ndarray,
    masks: jnp.ndarray,
    init_weights: jnp.ndarray,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    log_learning_rate: jnp.ndarray | None = None,
    first_order: bool = False,
    query_features: jnp.ndarray | None = None,
    query_terms: repri.Settings | None = None,
) -> jnp.ndarray:
    """Fits the classifier on one episode's support set by `steps` optimiser updates.

    The loss is CWT's: logits resized to the masks, cross-entropy ignoring 255 and
    weighted [1, n_background / n_foreground] over the episode's support masks. The
    updates run in one compiled `lax.fori_loop`; `optimizer` and `steps` are static,
    so build the optimiser once and reuse it to hit the compilation cache. Vmap this
    function to fit many episodes at once.

    With `query_terms` (the `transductive` objective) the loss is λ1 times that plus
    RePRI's λ2 · KL + λ3 · H of the classifier's probabilities on every pixel of the raw
    query features, π re-estimated and λ2 raised at `query_terms.fb_param_update`, as
    RePRI's loop numbers its updates from 1 (`repri.scheduled_query_loss`). The query's
    features are all the loop sees of it.

    The result can be differentiated with respect to `init_weights` and
    `log_learning_rate` (MAML, Meta-SGD): through every update, each rematerialised in
    the backward pass so that memory stays flat in `steps` (only the (2, C) weights and
    the optimiser state of each step are kept); or, with `first_order`, with each update
    taken as a constant (first-order MAML), so that the fitted weights move one for one
    with `init_weights` and by their total update with `log_learning_rate`.

    Args:
      features: (K, h, w, C) features of the K support images.
      masks: (K, H, W) integer masks in {0, 1, 255}.
      init_weights: (2, C) initial classifier weights.
      optimizer: any optax gradient transformation.
      steps: number of updates.
      log_learning_rate: (2, C) log of a per-weight factor on every update (Meta-SGD);
        None for none.
      first_order: differentiate with each update taken as a constant.
      query_features: (h, w, C) raw query features, with `query_terms`.
      query_terms: RePRI's settings whose `weights` and `fb_param_update` make the query
        terms (static); None for the support loss alone.

    Returns:
      (2, C) fitted weights.
    """
    class_weights = losses.binary_class_weights(masks)
    if query_terms is not None:
        lambda1, lambda2, lambda3 = repri.lambdas(query_terms.weights, features.shape[0])
        valid = jnp.ones(query_features.shape[:2], jnp.float32)

    def query_foreground(weights):  # (h, w) foreground probabilities of the query
        return jax.nn.sigmoid(predict(weights[1:] - weights[:1], query_features)[..., 0])

    def objective(weights, schedule, iteration):
        loss = support_loss(weights, features, masks, class_weights)
        if query_terms is None:
            return loss, schedule
        due = repri.reestimation_due(iteration, query_terms)
        query_loss, schedule = repri.scheduled_query_loss(
            query_foreground(weights), valid, schedule, lambda3, due
        )
        return lambda1 * loss + query_loss, schedule

    @jax.checkpoint
    def update(step, carry):
        weights, opt_state, schedule = carry
        seen = jax.lax.stop_gradient(weights) if first_order else weights
        grads, schedule = jax.grad(objective, has_aux=True)(seen, schedule, step + 1)
        updates, opt_state = optimizer.update(grads, opt_state, seen)
        if first_order:
            updates, opt_state = jax.lax.stop_gradient((updates, opt_state))
        if log_learning_rate is not None:
            updates = jnp.exp(log_learning_rate) * updates
        return optax.apply_updates(weights, updates), opt_state, schedule

    schedule = ()  # (π, λ2) of the query terms
    if query_terms is not None:
        pi = repri.proportion(jax.lax.stop_gradient(query_foreground(init_weights)), valid)
        schedule = (pi, lambda2)
    carry = (init_weights, optimizer.init(init_weights), schedule)
    weights, _, _ = jax.lax.fori_loop(0, steps, update, carry)
    return weights
