"""The support classifier: loss semantics, any optax optimiser, compilation, batching."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch_reference as ref

from cwt_jax import compilation
from cwt_jax.fewshot import classifier, losses

SHOT, SIZE, CHANNELS = 2, 41, 16


@pytest.fixture
def support():
    rng = np.random.RandomState(0)
    features = rng.randn(SHOT, 6, 6, CHANNELS).astype(np.float32)
    masks = (rng.rand(SHOT, SIZE, SIZE) > 0.8).astype(np.int64)
    masks[:, -3:] = 255
    init = rng.uniform(-0.25, 0.25, (2, CHANNELS)).astype(np.float32)
    return features, masks, init


def test_class_weights_count_all_support_masks():
    masks = np.zeros((2, 4, 4), np.int32)
    masks[0, 0, :2] = 1
    masks[1, 3, :] = 1
    masks[1, 0, 0] = 255
    np.testing.assert_allclose(losses.binary_class_weights(masks), [1.0, 25 / 6])


@pytest.mark.parametrize(
    "jax_optimizer, torch_optimizer",
    [
        (optax.sgd(0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
        (optax.sgd(0.05, momentum=0.9), lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)),
        (
            optax.sgd(0.05, momentum=0.9, nesterov=True),
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        ),
        (optax.adam(0.01), lambda p: torch.optim.Adam(p, lr=0.01)),
    ],
    ids=["sgd", "momentum", "nesterov", "adam"],
)
def test_any_optax_optimizer_matches_pytorch(support, jax_optimizer, torch_optimizer):
    features, masks, init = support
    expected = ref.fit_classifier(
        torch.from_numpy(features).permute(0, 3, 1, 2),
        torch.from_numpy(masks),
        torch.from_numpy(init),
        torch_optimizer,
        50,
    ).numpy()
    actual = classifier.fit(features, masks, init, optimizer=jax_optimizer, steps=50)
    assert np.abs(expected - init).max() > 1e-2
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fill", [0, 255])
def test_support_without_foreground_stays_finite(support, fill):
    features, _, init = support
    masks = np.full((SHOT, SIZE, SIZE), fill)
    weights = classifier.fit(features, masks, init, optimizer=optax.sgd(0.1), steps=20)
    assert np.isfinite(np.asarray(weights)).all()
    if fill == 255:  # nothing to learn from: the weights do not move
        np.testing.assert_array_equal(weights, init)


def test_fit_compiles_once_per_shape(support):
    features, masks, init = support
    optimizer = optax.sgd(0.1)
    features = features[..., :7]  # a channel count no other test uses
    init = init[:, :7]
    shifted = [jnp.asarray(features + offset) for offset in (0.0, 1.0, 2.0)]
    one_support = jnp.asarray(features[:1]), jnp.asarray(masks[:1])
    classifier.fit(shifted[0], masks, init, optimizer=optimizer, steps=5)
    with compilation.recorded() as again:
        for shifted_features in shifted[1:]:
            classifier.fit(shifted_features, masks, init, optimizer=optimizer, steps=5)
    assert len(again.durations) == 0
    with compilation.recorded() as new_shape:
        classifier.fit(*one_support, init, optimizer=optimizer, steps=5)
    assert len(new_shape.durations) == 1


def test_vmapped_fit_equals_one_episode_at_a_time(support):
    features, masks, init = support
    rng = np.random.RandomState(3)
    batch_features = np.stack([features, features * 0.5, rng.randn(*features.shape)]).astype(
        np.float32
    )
    batch_masks = np.stack([masks, masks[::-1], (rng.rand(*masks.shape) > 0.5).astype(np.int64)])
    optimizer = optax.adam(0.01)

    def fit(f, m):
        return classifier.fit(f, m, init, optimizer=optimizer, steps=30)

    batched = jax.jit(jax.vmap(fit))(batch_features, batch_masks)
    for index in range(3):
        np.testing.assert_allclose(
            batched[index], fit(batch_features[index], batch_masks[index]), rtol=1e-5, atol=1e-6
        )


def test_predict_is_a_per_pixel_linear_map():
    weights = np.arange(6, dtype=np.float32).reshape(2, 3)
    features = np.random.RandomState(0).randn(4, 5, 3).astype(np.float32)
    logits = classifier.predict(weights, features)
    assert logits.shape == (4, 5, 2)
    np.testing.assert_allclose(logits[1, 2], weights @ features[1, 2], rtol=1e-6)


def test_binary_cross_entropy_matches_pytorch():
    """CWT's weighted `CrossEntropyLoss(weight, ignore_index=255)` of two-class logits."""
    rng = np.random.RandomState(4)
    logits = rng.randn(2, 9, 7, 2).astype(np.float32) * 3
    labels = rng.randint(0, 2, (2, 9, 7))
    labels[1, :3] = 255
    weights = np.array([1.0, 3.5], np.float32)
    criterion = torch.nn.CrossEntropyLoss(weight=torch.from_numpy(weights), ignore_index=255)
    expected = criterion(torch.from_numpy(logits).permute(0, 3, 1, 2), torch.from_numpy(labels))
    actual = losses.binary_cross_entropy(logits[..., 1] - logits[..., 0], labels, weights)
    np.testing.assert_allclose(actual, expected.item(), rtol=1e-6)
    assert losses.binary_cross_entropy(logits[..., 0], np.full((2, 9, 7), 255), weights) == 0.0
