"""The Classifier Weight Transformer: per-query function, vmapped, eval and train modes."""

import jax
import jax.numpy as jnp
import numpy as np

from cwt_jax import compilation
from cwt_jax.models import cwt

CHANNELS, HEADS = 16, 4


def inputs(seed, batch=()):
    rng = np.random.RandomState(seed)
    weights = rng.randn(*batch, 2, CHANNELS).astype(np.float32)
    features = cwt.normalize_features(jnp.asarray(rng.randn(*batch, 5, 6, CHANNELS), jnp.float32))
    return jnp.asarray(weights), features


def test_init_follows_pytorch_shapes_and_scales():
    params = cwt.init(jax.random.key(0), 64, HEADS)
    assert params["w_qkvs"]["kernel"].shape == (64, HEADS * 64)
    assert params["fc"]["kernel"].shape == (HEADS * 64, 64)
    np.testing.assert_allclose(np.std(params["w_qkvs"]["kernel"]), (1 / 64) ** 0.5, rtol=0.05)
    np.testing.assert_allclose(np.std(params["fc"]["kernel"]), (2 / (5 * 64)) ** 0.5, rtol=0.05)


def test_output_is_layer_normalised_weights():
    params = cwt.init(jax.random.key(0), CHANNELS, HEADS)
    adapted = cwt.apply(params, *inputs(0))
    assert adapted.shape == (2, CHANNELS)
    np.testing.assert_allclose(np.mean(adapted, -1), 0, atol=1e-5)
    np.testing.assert_allclose(np.std(adapted, -1), 1, atol=1e-3)


def test_vmapped_over_queries_and_episodes_equals_loop():
    params = cwt.init(jax.random.key(1), CHANNELS, HEADS)
    weights, features = inputs(2, batch=(3,))  # 3 episodes
    queries = jnp.stack([features, features[::-1]], axis=1)  # (3 episodes, 2 queries, h, w, C)
    per_query = jax.vmap(cwt.apply, in_axes=(None, None, 0))
    batched = jax.vmap(per_query, in_axes=(None, 0, 0))(params, weights, queries)
    for episode in range(3):
        for query in range(2):
            expected = cwt.apply(params, weights[episode], queries[episode, query])
            np.testing.assert_allclose(batched[episode, query], expected, rtol=1e-5, atol=1e-6)


def test_dropout_only_in_training():
    params = cwt.init(jax.random.key(2), CHANNELS, HEADS)
    weights, features = inputs(3)
    evaluated = cwt.apply(params, weights, features)
    no_rate = cwt.apply(params, weights, features, dropout_rng=jax.random.key(0))
    np.testing.assert_allclose(no_rate, evaluated, rtol=1e-5, atol=1e-6)
    rates = {"dropout": cwt.Dropout(rate=0.5, attention_rate=0.1)}
    first = cwt.apply(params, weights, features, dropout_rng=jax.random.key(0), **rates)
    second = cwt.apply(params, weights, features, dropout_rng=jax.random.key(1), **rates)
    assert not np.allclose(first, evaluated) and not np.allclose(first, second)


def test_apply_compiles_once_per_shape():
    params = cwt.init(jax.random.key(3), CHANNELS, HEADS)
    weights, features = inputs(4)
    features = features[:3]  # a query size no other test uses
    shifted = [weights + offset for offset in (0.0, 1.0, 2.0)]
    smaller = features[:2]
    cwt.apply(params, shifted[0], features)
    with compilation.recorded() as again:
        for weights in shifted[1:]:
            cwt.apply(params, weights, features)
    assert len(again.durations) == 0
    with compilation.recorded() as new_shape:
        cwt.apply(params, weights, smaller)
    assert len(new_shape.durations) == 1
