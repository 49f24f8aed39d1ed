"""The Classifier Weight Transformer: one attention layer that adapts classifier weights.

Query = the support classifier's (2, C) weights; key = value = the query image's
L2-normalised features flattened to (h * w, C). One bias-free projection
(C -> heads * C) is shared by query, key and value, as in CWT's
`MultiHeadAttentionOne`; the heads' outputs are projected back to C with a bias,
added to the weights and layer-normalised. Parameters are a plain pytree:
`{"w_qkvs": {"kernel"}, "fc": {"kernel", "bias"}, "layer_norm": {"scale", "bias"}}`.
Functions here take one query image; vmap them over queries and episodes.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp

LAYER_NORM_EPSILON = 1e-5  # PyTorch's nn.LayerNorm default.


@dataclasses.dataclass(frozen=True)
class Dropout:
    """The CWT's dropout rates in training (`cwt.dropout`, `cwt.attention_dropout`).

    Attributes:
      rate: dropout on the output projection.
      attention_rate: dropout on the attention map.
    """

    rate: float
    attention_rate: float


def dropout_from_config(cwt_config) -> Dropout:
    """The dropout of the `cwt` config section."""
    return Dropout(rate=cwt_config.dropout, attention_rate=cwt_config.attention_dropout)


def init(rng: jax.Array, d_model: int, heads: int) -> dict:
    """Initialises parameters as CWT does in PyTorch.

    The shared projection is normal with std sqrt(2 / (d_model + d_k)), the output
    projection Xavier-normal with PyTorch's default uniform bias, the layer norm 1 and 0.

    Args:
      rng: random key.
      d_model: feature channels C (also d_k and d_v, as in CWT).
      heads: number of attention heads.

    Returns:
      The parameter pytree.
    """
    qkv_rng, fc_rng, bias_rng = jax.random.split(rng, 3)
    width = heads * d_model
    qkv_std = (2.0 / (2 * d_model)) ** 0.5
    fc_std = (2.0 / (width + d_model)) ** 0.5
    bias_bound = width**-0.5
    return {
        "w_qkvs": {"kernel": qkv_std * jax.random.normal(qkv_rng, (d_model, width))},
        "fc": {
            "kernel": fc_std * jax.random.normal(fc_rng, (width, d_model)),
            "bias": jax.random.uniform(bias_rng, (d_model,), minval=-bias_bound, maxval=bias_bound),
        },
        "layer_norm": {"scale": jnp.ones((d_model,)), "bias": jnp.zeros((d_model,))},
    }


@functools.partial(jax.jit, static_argnames="dropout")
def apply(
    params: dict,
    weights: jnp.ndarray,
    query_features: jnp.ndarray,
    *,
    dropout: Dropout | None = None,
    dropout_rng: jax.Array | None = None,
) -> jnp.ndarray:
    """Adapts classifier weights to one query image.

    Args:
      params: CWT parameters (see the module docstring).
      weights: (n, C) classifier weights, n = 2 for background/foreground.
      query_features: (h, w, C) query features, already L2-normalised over channels.
      dropout: the dropout rates (static), used only with `dropout_rng`; None for none.
      dropout_rng: key for dropout in training; None (the default) is eval mode.

    Returns:
      (n, C) adapted weights.
    """
    d_model = weights.shape[-1]
    heads = params["w_qkvs"]["kernel"].shape[-1] // d_model
    kernel = params["w_qkvs"]["kernel"].reshape(d_model, heads, d_model)  # (C, heads, C)
    tokens = query_features.reshape(-1, d_model)  # (h * w, C)
    queries = jnp.einsum("nc,chd->nhd", weights, kernel)
    # Keys and values are the tokens through `kernel`. With n = 2 queries, moving the
    # projection onto the queries and onto the attention-pooled tokens (associativity)
    # gives the same numbers, to round-off, for ~100x fewer FLOPs than projecting h * w
    # tokens to heads * C channels.
    query_directions = jnp.einsum("nhd,chd->hnc", queries, kernel)  # (heads, n, C)
    scores = jnp.einsum("hnc,lc->hnl", query_directions, tokens) / jnp.sqrt(jnp.float32(d_model))
    attention = jax.nn.softmax(scores, axis=-1)  # (heads, n, h * w)
    rates = dropout or Dropout(rate=0.0, attention_rate=0.0)
    if dropout_rng is not None:
        attention_rng, output_rng = jax.random.split(dropout_rng)
        attention = _dropout(attention_rng, attention, rates.attention_rate)
    pooled = jnp.einsum("hnl,lc->hnc", attention, tokens)  # (heads, n, C)
    heads_output = jnp.einsum("hnc,chd->nhd", pooled, kernel).reshape(-1, heads * d_model)
    output = heads_output @ params["fc"]["kernel"] + params["fc"]["bias"]
    if dropout_rng is not None:
        output = _dropout(output_rng, output, rates.rate)
    return _layer_norm(output + weights, params["layer_norm"])


def normalize_features(features: jnp.ndarray) -> jnp.ndarray:
    """L2-normalises features over channels as `F.normalize(dim=1)` (epsilon 1e-12).

    Args:
      features: (..., C) features.

    Returns:
      Features of unit norm (zero vectors stay zero).
    """
    norm = jnp.linalg.norm(features, axis=-1, keepdims=True)
    return features / jnp.maximum(norm, 1e-12)


def _layer_norm(x: jnp.ndarray, params: dict) -> jnp.ndarray:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    variance = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(variance + LAYER_NORM_EPSILON) * params["scale"] + params[
        "bias"
    ]


def _dropout(rng: jax.Array, x: jnp.ndarray, rate: float) -> jnp.ndarray:
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)
