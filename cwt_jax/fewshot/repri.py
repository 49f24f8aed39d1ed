"""RePRI's transductive inference (Boudiaf et al., CVPR 2021) as its official code computes it.

`src/classifier.py` of mboudiaf/RePRI-for-Few-Shot-Segmentation fits, per episode, a
prototype classifier: the foreground probability of a pixel is sigmoid(temperature x
cos(feature, prototype) - bias). The prototype starts as the mean support foreground
feature, the bias as the mean query logit, and SGD moves both on

  λ1 · CE(supports) + λ2 · KL(query's predicted proportions ‖ π) + λ3 · H(query),

where π, the query's foreground/background proportions, starts as the query's predicted
ones and is re-estimated at the iterations `fb_param_update`, each time adding 1 to λ2.
`src/test.py` L2-normalises the features first and upsamples the query's logits to the
label size (bilinear, `align_corners=True`) before the threshold. Everything is computed
at feature resolution, the masks downsampled by nearest as `F.interpolate` does.

The query terms and π's schedule also make the `transductive` objective of CWT's linear
classifier (`classifier.fit`): its support cross-entropy plus RePRI's query terms.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cwt_jax.data.labels import IGNORE_LABEL
from cwt_jax.models import cwt

FB_PARAM_TYPES = ("soft",)
# Which query pixels the query terms count: labelled (the official code: those whose
# nearest-downsampled label is not 255, which leaves out the padding and VOC's object
# borders) or all of them (nothing of the query's label is read).
QUERY_PIXELS = ("labelled", "all")
_EPSILON = 1e-10  # the official code's, in every logarithm, ratio and norm


@dataclasses.dataclass(frozen=True)
class Settings:
    """RePRI's settings (`inner.repri`), static and hashable.

    Attributes:
      optimizer: the optimiser of the prototype and the bias (official: SGD at 0.025).
      temperature: the factor on the cosine similarity.
      adapt_iter: the official loop's `range(1, adapt_iter)`: adapt_iter - 1 updates.
      fb_param_update: the iterations t before which π is re-estimated from the current
        classifier (the official code's: after update t - 1) and λ2 grows by 1.
      weights: (λ1, λ2, λ3) of the support cross-entropy, the KL term and the entropy,
        each a number or "auto", 1 / shot.
      norm_feat: L2-normalise the features over channels first.
      query_pixels: which query pixels the query terms count, one of `QUERY_PIXELS`.
    """

    optimizer: optax.GradientTransformation
    temperature: float
    adapt_iter: int
    fb_param_update: tuple[int, ...]
    weights: tuple[float | str, float | str, float | str]
    norm_feat: bool
    query_pixels: str


def lambdas(weights: tuple, shot: int) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """The float32 (λ1, λ2, λ3) of `weights` at `shot` shots, "auto" as 1 / shot.

    As the official code's `1 / n_shots` of a float32 tensor of shots.
    """
    return tuple(
        jnp.float32(1.0) / jnp.float32(shot) if weight == "auto" else jnp.float32(weight)
        for weight in weights
    )


def reestimation_due(iteration: jnp.ndarray, settings: Settings) -> jnp.ndarray | bool:
    """Whether π is re-estimated before the update of `iteration` (1-based).

    The official code re-estimates after update t - 1 for t in `fb_param_update`, unless
    λ2 is 0 (then it stays 0); done before update t from the same classifier, it is the
    same estimate.
    """
    if not settings.fb_param_update or settings.weights[1] == 0:
        return False
    return jnp.any(iteration == jnp.asarray(settings.fb_param_update))


def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source indices of `F.interpolate(mode="nearest")` from `in_size` to `out_size`.

    PyTorch's: floor(i * (in / out)) in float32, at most in - 1; the identity and the
    doubling are special cases.
    """
    if out_size == in_size:
        return np.arange(out_size)
    if out_size == 2 * in_size:
        return np.arange(out_size) >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    indices = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(indices, in_size - 1)


def downsample_nearest(masks: jnp.ndarray, size: tuple[int, int]) -> jnp.ndarray:
    """Masks resized to `size` by nearest, as the official code's `F.interpolate`.

    Args:
      masks: (..., H, W) masks.
      size: (h, w).

    Returns:
      (..., h, w) masks.
    """
    rows = nearest_indices(masks.shape[-2], size[0])
    columns = nearest_indices(masks.shape[-1], size[1])
    return masks[..., rows[:, None], columns[None, :]]


def query_valid(query_mask: jnp.ndarray, size: tuple[int, int], query_pixels: str) -> jnp.ndarray:
    """The query pixels the query terms count, at feature resolution.

    Args:
      query_mask: (H, W) mask in {0, 1, 255} (only its 255 pixels are read).
      size: the features' (h, w).
      query_pixels: "labelled" (the official code's: the pixels whose nearest-downsampled
        label is not 255) or "all".

    Returns:
      (h, w) float32 map of 1 (counted) and 0.
    """
    if query_pixels == "all":
        return jnp.ones(size, jnp.float32)
    return (downsample_nearest(query_mask, size) != IGNORE_LABEL).astype(jnp.float32)


def _two_classes(foreground: jnp.ndarray) -> jnp.ndarray:
    """(..., 2) background/foreground probabilities from the foreground one, 1 - p and p."""
    return jnp.stack([1 - foreground, foreground], axis=-1)


def proportion(foreground: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
    """The predicted background/foreground proportions of the counted pixels (`compute_FB_param`).

    Args:
      foreground: (h, w) foreground probabilities.
      valid: (h, w) 1 where counted, else 0.

    Returns:
      (2,) proportions.
    """
    return jnp.sum(valid[..., None] * _two_classes(foreground), axis=(0, 1)) / jnp.sum(valid)


def query_terms(
    foreground: jnp.ndarray, valid: jnp.ndarray, pi: jnp.ndarray
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """KL(predicted proportions ‖ π) and the mean entropy of the query (`get_entropies`).

    Args:
      foreground: (h, w) foreground probabilities of the query.
      valid: (h, w) 1 where counted, else 0.
      pi: (2,) background/foreground proportion estimate.

    Returns:
      Scalar KL(marginal ‖ π) and scalar mean entropy over the counted pixels.
    """
    probabilities = _two_classes(foreground)  # (h, w, 2)
    count = jnp.sum(valid)
    entropy = -jnp.sum(valid[..., None] * probabilities * jnp.log(probabilities + _EPSILON))
    marginal = jnp.sum(valid[..., None] * probabilities, axis=(0, 1)) / count
    kl = jnp.sum(marginal * jnp.log(marginal / (pi + _EPSILON)))
    return kl, entropy / count


def scheduled_query_loss(
    foreground: jnp.ndarray,
    valid: jnp.ndarray,
    schedule: tuple[jnp.ndarray, jnp.ndarray],
    lambda3: jnp.ndarray,
    due: jnp.ndarray | bool,
) -> tuple[jnp.ndarray, tuple[jnp.ndarray, jnp.ndarray]]:
    """λ2 · KL + λ3 · H of the query, π re-estimated from `foreground` first where `due`.

    Args:
      foreground: (h, w) foreground probabilities of the query under the current classifier.
      valid: (h, w) 1 where counted, else 0.
      schedule: (π (2,), λ2 ()) so far.
      lambda3: the entropy's weight.
      due: `reestimation_due` of the iteration.

    Returns:
      The scalar loss and the schedule after the iteration; no gradient flows through π,
      as the official code detaches it.
    """
    pi, lambda2 = schedule
    pi = jnp.where(due, jax.lax.stop_gradient(proportion(foreground, valid)), pi)
    lambda2 = jnp.where(due, lambda2 + 1, lambda2)
    kl, entropy = query_terms(foreground, valid, pi)
    return lambda2 * kl + lambda3 * entropy, (pi, lambda2)


def cosine_logits(params: dict, features: jnp.ndarray, temperature: float) -> jnp.ndarray:
    """The temperature times cos(feature, prototype) of each pixel (`get_logits`).

    Args:
      params: {"prototype": (C,), "bias": ()}.
      features: (..., h, w, C) features.
      temperature: the factor.

    Returns:
      (..., h, w) logits.
    """
    prototype = params["prototype"]
    norms = jnp.linalg.norm(prototype) * jnp.linalg.norm(features, axis=-1)
    return temperature * (jnp.einsum("...c,c->...", features, prototype) / (norms + _EPSILON))


def foreground_probability(params: dict, features: jnp.ndarray, temperature: float) -> jnp.ndarray:
    """Each pixel's foreground probability sigmoid(logit - bias) (`get_probas`): (..., h, w)."""
    return jax.nn.sigmoid(cosine_logits(params, features, temperature) - params["bias"])


def support_cross_entropy(foreground: jnp.ndarray, masks: jnp.ndarray) -> jnp.ndarray:
    """The cross-entropy over the supports' labelled pixels (`get_ce`).

    Args:
      foreground: (K, h, w) foreground probabilities.
      masks: (K, h, w) downsampled masks in {0, 1, 255}.

    Returns:
      The scalar sum of -log p(true class) over the pixels not labelled 255, divided by
      their number.
    """
    valid = (masks != IGNORE_LABEL).astype(jnp.float32)
    one_hot = jax.nn.one_hot(jnp.where(masks == IGNORE_LABEL, 0, masks), 2)  # (K, h, w, 2)
    log_probabilities = jnp.log(_two_classes(foreground) + _EPSILON)
    return -jnp.sum(valid[..., None] * one_hot * log_probabilities) / jnp.sum(valid)


def init_classifier(
    support_features: jnp.ndarray,
    small_masks: jnp.ndarray,
    query_features: jnp.ndarray,
    temperature: float,
) -> dict:
    """The initial prototype and bias (`init_prototypes`).

    Args:
      support_features: (K, h, w, C) features (normalised where `norm_feat`).
      small_masks: (K, h, w) support masks downsampled to the features.
      query_features: (h, w, C) features.
      temperature: the cosine's factor.

    Returns:
      {"prototype": (C,) mean support foreground feature, "bias": () mean query logit}.
    """
    foreground = (small_masks == 1)[..., None]
    prototype = jnp.sum(support_features * foreground, axis=(0, 1, 2))
    prototype = prototype / (jnp.sum(foreground) + _EPSILON)
    logits = cosine_logits({"prototype": prototype}, query_features, temperature)
    return {"prototype": prototype, "bias": jnp.mean(logits)}


@functools.partial(jax.jit, static_argnames="settings")
def fit(
    support_features: jnp.ndarray,
    support_masks: jnp.ndarray,
    query_features: jnp.ndarray,
    valid: jnp.ndarray,
    *,
    settings: Settings,
) -> dict:
    """RePRI's classifier of one episode: its prototype and bias after the official loop.

    The `settings.adapt_iter - 1` updates run in one compiled `lax.fori_loop`; vmap this
    function to fit many episodes at once.

    Args:
      support_features: (K, h, w, C) raw support features.
      support_masks: (K, H, W) masks in {0, 1, 255}.
      query_features: (h, w, C) raw query features.
      valid: (h, w) query pixels the query terms count (`query_valid`).
      settings: RePRI's settings (static).

    Returns:
      {"prototype": (C,), "bias": ()}; `logit_difference` applies them.
    """
    if settings.norm_feat:
        support_features = cwt.normalize_features(support_features)
        query_features = cwt.normalize_features(query_features)
    small_masks = downsample_nearest(support_masks, support_features.shape[1:3])
    temperature = settings.temperature
    params = init_classifier(support_features, small_masks, query_features, temperature)
    lambda1, lambda2, lambda3 = lambdas(settings.weights, support_features.shape[0])
    pi = proportion(foreground_probability(params, query_features, temperature), valid)

    def objective(params, schedule, due):
        query = foreground_probability(params, query_features, temperature)
        supports = foreground_probability(params, support_features, temperature)
        query_loss, schedule = scheduled_query_loss(query, valid, schedule, lambda3, due)
        return lambda1 * support_cross_entropy(supports, small_masks) + query_loss, schedule

    def update(iteration, carry):
        params, opt_state, schedule = carry
        due = reestimation_due(iteration, settings)
        grads, schedule = jax.grad(objective, has_aux=True)(params, schedule, due)
        updates, opt_state = settings.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, schedule

    carry = (params, settings.optimizer.init(params), (pi, lambda2))
    params, _, _ = jax.lax.fori_loop(1, settings.adapt_iter, update, carry)
    return params


def logit_difference(params: dict, query_features: jnp.ndarray, settings: Settings) -> jnp.ndarray:
    """The query's logit minus the bias, at feature resolution: foreground where positive.

    Resized bilinearly (`align_corners=True`) to the labels, it is `src/test.py`'s
    upsampled logits minus the bias, up to round-off: the bias is one number.

    Args:
      params: {"prototype", "bias"} (`fit`).
      query_features: (h, w, C) raw query features.
      settings: RePRI's settings.

    Returns:
      (h, w) float32 map.
    """
    if settings.norm_feat:
        query_features = cwt.normalize_features(query_features)
    return cosine_logits(params, query_features, settings.temperature) - params["bias"]
