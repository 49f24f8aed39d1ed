"""Meta-learning through the inner loop: `metatrain.inner_gradient` and what it learns.

The meta-gradient of one episode's loss with respect to the learned classifier
initialisation (MAML) and log learning-rate factors (Meta-SGD), next to the CWT's:
`full` against finite differences, `first_order` against its definition, `none` zero,
and the memory of `full`, which rematerialisation keeps flat in the number of steps.
"""

import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from configs import common
from cwt_jax import models, optimizers
from cwt_jax.fewshot import classifier, episode, inner
from cwt_jax.models import cwt
from cwt_jax.training import loop, metatrain

REPO = pathlib.Path(__file__).resolve().parents[1]
SHOT, FEATURE_SIZE, CHANNELS, MASK_SIZE, HEADS = 2, 5, 8, 17, 2


def random_episode(dtype=np.float32, seed=0):
    """Support and query features and masks of a random episode, and meta-parameters."""
    rng = np.random.RandomState(seed)
    support_masks = (rng.rand(SHOT, MASK_SIZE, MASK_SIZE) > 0.6).astype(np.int32)
    support_masks[:, -2:] = 255
    arrays = {
        "support_features": jnp.asarray(
            rng.randn(SHOT, FEATURE_SIZE, FEATURE_SIZE, CHANNELS), dtype
        ),
        "support_masks": jnp.asarray(support_masks),
        "query_features": jnp.asarray(rng.randn(FEATURE_SIZE, FEATURE_SIZE, CHANNELS), dtype),
        "query_mask": jnp.asarray((rng.rand(MASK_SIZE, MASK_SIZE) > 0.6).astype(np.int32)),
    }
    params = {
        "cwt": cwt.init(jax.random.key(seed), CHANNELS, HEADS),
        "inner": {"init": 0.3 * rng.randn(2, CHANNELS), "log_lr": 0.2 * rng.randn(2, CHANNELS)},
    }
    return arrays, jax.tree.map(lambda leaf: jnp.asarray(leaf, dtype), params)


def meta_loss(params, arrays, *, inner_gradient, steps=8, optimizer=None):
    """One episode's loss as meta-training's step computes it, dropout off."""
    inner_loop = inner.InnerLoop(
        optimizer=optimizer or optax.sgd(0.5, momentum=0.9),
        steps=steps,
        init="learned",
        learn_lr=True,
        gradient=inner_gradient,
    )
    return episode.episode_loss(
        params,
        arrays["support_features"],
        arrays["support_masks"],
        arrays["query_features"],
        arrays["query_mask"],
        params["inner"]["init"],
        inner_loop,
    )


def test_full_meta_gradient_matches_finite_differences():
    """Reverse mode through every (rematerialised) momentum-SGD update, in float64.

    Central differences of the loss along random directions of every meta-parameter
    (CWT, initialisation, log learning rates) against the gradient's inner product.
    """
    with jax.enable_x64(True):
        arrays, params = random_episode(np.float64)
        loss = jax.jit(lambda p: meta_loss(p, arrays, inner_gradient="full"))
        grads = jax.grad(loss)(params)
        rng = np.random.RandomState(1)
        for name in ("cwt", "init", "log_lr"):
            for _ in range(2):
                direction = jax.tree.map(jnp.zeros_like, params)
                if name == "cwt":
                    direction["cwt"] = jax.tree.map(
                        lambda leaf: jnp.asarray(rng.randn(*leaf.shape)), params["cwt"]
                    )
                else:
                    direction["inner"][name] = jnp.asarray(rng.randn(2, CHANNELS))
                numeric = _directional_difference(loss, params, direction, 1e-6)
                analytic = sum(
                    jnp.vdot(g, d)
                    for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True)
                )
                assert abs(numeric) > 1e-4, name  # the direction moves the loss
                np.testing.assert_allclose(analytic, numeric, rtol=1e-6, err_msg=name)


def _directional_difference(function, params, direction, step):
    """Central difference of `function` at `params` along `direction`."""
    plus = jax.tree.map(lambda p, d: p + step * d, params, direction)
    minus = jax.tree.map(lambda p, d: p - step * d, params, direction)
    return (function(plus) - function(minus)) / (2 * step)


def test_first_order_meta_gradient_is_its_definition():
    """Each update taken as a constant: w_T = w_0 + sum_t exp(log_lr) * u_t.

    So the gradient reaching the initialisation is g_T, the loss's gradient with respect
    to the fitted weights w_T, and the one reaching the log learning rates is
    g_T * (w_T - w_0). The CWT's gradient is the same whichever way the inner loop is
    differentiated.
    """
    arrays, params = random_episode()
    optimizer = optax.sgd(0.5, momentum=0.9)
    grads = {
        mode: jax.grad(meta_loss)(params, arrays, inner_gradient=mode, optimizer=optimizer)
        for mode in inner.INNER_GRADIENTS
    }
    fitted = classifier.fit(
        arrays["support_features"],
        arrays["support_masks"],
        params["inner"]["init"],
        optimizer=optimizer,
        steps=8,
        log_learning_rate=params["inner"]["log_lr"],
    )
    at_fitted = {"cwt": params["cwt"], "inner": {**params["inner"], "init": fitted}}
    fitted_grad = jax.grad(meta_loss)(at_fitted, arrays, inner_gradient="full", steps=0)
    fitted_grad = fitted_grad["inner"]["init"]  # g_T: no update between init and w_T
    first_order = grads["first_order"]["inner"]
    np.testing.assert_allclose(first_order["init"], fitted_grad, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(
        first_order["log_lr"],
        fitted_grad * (fitted - params["inner"]["init"]),
        rtol=1e-4,
        atol=1e-8,
    )
    assert not np.allclose(grads["full"]["inner"]["init"], fitted_grad, rtol=1e-2)
    for leaf in jax.tree.leaves(grads["none"]["inner"]):
        np.testing.assert_array_equal(leaf, 0.0)
    for mode in ("first_order", "full"):
        for actual, expected in zip(
            jax.tree.leaves(grads[mode]["cwt"]), jax.tree.leaves(grads["none"]["cwt"]), strict=True
        ):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-7)


def test_a_zero_log_learning_rate_is_the_configured_rate():
    """Meta-SGD starts from `inner.lr`: the learned factors start at exp(0) = 1."""
    arrays, params = random_episode()
    learned = inner.init_inner_params(CHANNELS, _inner_config(init="learned", learn_lr=True))
    assert set(learned) == {"init", "log_lr"}

    def fit(**kwargs):
        return classifier.fit(
            arrays["support_features"],
            arrays["support_masks"],
            params["inner"]["init"],
            optimizer=optax.sgd(0.5),
            steps=8,
            **kwargs,
        )

    np.testing.assert_array_equal(fit(log_learning_rate=learned["log_lr"]), fit())
    np.testing.assert_array_equal(learned["init"], 0.0)
    assert inner.init_inner_params(CHANNELS, _inner_config(init="torch", learn_lr=False)) == {}


def test_meta_gradient_memory_does_not_grow_with_inner_steps():
    """XLA's temporary memory of one episode's meta-gradient at 10 and at 100 steps, as
    `scripts/inner_gradient_memory.py` prints it.

    Without rematerialisation, `full` keeps each step's resized logits for the backward
    pass: at least a (K, H, W) float map per step. With it, a step keeps its (2, C)
    weights and optimiser state only.
    """
    size = 65
    process = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "inner_gradient_memory.py")]
        + ["--channels=16", "--feature_size=9", f"--mask_size={size}", "--steps=10,100"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    mebibytes = {}
    for line in process.stdout.splitlines():
        mode, steps, _, value, _ = line.split()
        mebibytes[mode, int(steps)] = float(value)
    assert {mode for mode, _ in mebibytes} == set(inner.INNER_GRADIENTS)
    one_map = size * size * 4 / 2**20
    for mode in inner.INNER_GRADIENTS:
        assert mebibytes[mode, 100] - mebibytes[mode, 10] < 90 * one_map / 8, mode


def _inner_config(**values):
    return ml_collections.ConfigDict(values)


def test_inner_params_lr_scale_scales_the_learned_parts_updates_only():
    """`metatrain.inner_params_lr_scale`: the inner-loop parts move that multiple of what
    they would at 1 (momentum and weight decay included), the CWT as at 1; at 1 the
    optimiser is the section's own, so its state, and checkpoints, keep their shape."""
    section = common.synthetic(fold=0, shot=1).metatrain
    _, params = random_episode(seed=1)
    _, grads = random_episode(seed=2)
    updates = {}
    for scale in (1.0, 10.0):
        section.inner_params_lr_scale = scale
        optimizer = optimizers.meta_optimizer(section)
        state = optimizer.init(params)
        for _ in range(2):  # the second update goes through the momentum
            step, state = optimizer.update(grads, state, params)
        updates[scale] = step
        if scale == 1.0:
            assert jax.tree.structure(state) == jax.tree.structure(
                optimizers.from_config(section, "metatrain").init(params)
            )
    jax.tree.map(np.testing.assert_array_equal, updates[10.0]["cwt"], updates[1.0]["cwt"])
    for name in ("init", "log_lr"):
        np.testing.assert_allclose(
            updates[10.0]["inner"][name], 10 * updates[1.0]["inner"][name], rtol=1e-6
        )
        assert np.abs(updates[1.0]["inner"][name]).max() > 0


def test_meta_training_steps_lower_their_batchs_loss_and_move_the_cwt():
    """`metatrain.make_train_step` with the synthetic job's settings (dropout on), taken
    eight times on one batch of two episodes, lowers that batch's loss at each step.

    The main program's meta-training sees new episodes at every step, so its logged loss
    falls only on average over many steps; on one batch the fall is the update's own.
    """
    config = common.synthetic(fold=0, shot=1)
    config.model.layers, config.model.width, config.model.bottleneck_dim = (1, 1, 1, 1), 8, 16
    config.cwt.heads, config.inner.steps = HEADS, 10
    model = models.from_config(config.model)
    backbone = models.init_variables(model, jax.random.key(0))
    train_step = metatrain.make_train_step(model, inner.from_config(config), config)
    start = {"cwt": cwt.init(jax.random.key(1), 16, HEADS), "inner": {}}
    state = loop.new_train_state(start, optimizers.meta_optimizer(config.metatrain))
    rng = np.random.RandomState(0)
    masks = np.zeros((2, 2, 33, 33), np.int32)  # (episode, support then query, H, W)
    masks[0, :, 5:20, 8:25], masks[1, :, 12:30, 3:16] = 1, 1
    images = rng.uniform(-1, 1, (2, 2, 33, 33, 3)).astype(np.float32)
    images[masks == 1] += 1.5  # the object is brighter than its background
    batch = {
        "support_images": images[:, :1],
        "support_masks": masks[:, :1],
        "query_image": images[:, 1],
        "query_mask": masks[:, 1],
    }
    losses = []
    for _ in range(8):
        state, metrics = train_step(state, backbone, batch, jax.random.key(2))
        losses.append(float(metrics["loss"]))
    assert np.all(np.diff(losses) < 0), losses
    moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), state["params"]["cwt"], start["cwt"])
    # The layer norm's bias shifts both class weights alike: its gradient is 0.
    assert moved["layer_norm"].pop("bias") == 0
    assert min(jax.tree.leaves(moved)) > 0.1, moved
