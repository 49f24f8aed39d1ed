"""Evaluation at the original label resolution (PFENet's `ori_resize`) against PyTorch and
NumPy, and the seeds of the runs."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F

from configs import common
from cwt_jax import models
from cwt_jax.data import transforms
from cwt_jax.evaluation import evaluate
from cwt_jax.fewshot import episode, inner
from cwt_jax.models import cwt, interpolate

TEST_SIZE, GRID = 33, 41


def torch_ori_resize(logits: np.ndarray, size: int, side: int) -> np.ndarray:
    """PFENet's evaluation resize: (2, h, w) logits to the test size, then to side x side."""
    resized = torch.tensor(logits)[None]
    for length in (size, side):
        resized = F.interpolate(resized, size=(length, length), mode="bilinear", align_corners=True)
    return resized[0].numpy()


@pytest.mark.parametrize("height, width", [(37, 23), (20, 41), (1, 6), (33, 33), (41, 2)])
def test_original_resolution_resize_matches_torch(height, width):
    """Non-square originals, one longer than the test size, a side of 1 and one equal to the
    grid: the top-left side x side square is PyTorch's resize, the rest is zero."""
    side = max(height, width)
    image = np.random.default_rng(side).normal(size=(5, 5)).astype(np.float32)
    resize = jax.jit(
        lambda x, s: interpolate.resize_via_to_side(x, (TEST_SIZE, TEST_SIZE), s, GRID)
    )
    resized = np.asarray(resize(image, side))  # one program for every side
    expected = torch_ori_resize(np.stack([np.zeros_like(image), image]), TEST_SIZE, side)[1]
    np.testing.assert_allclose(resized[:side, :side], expected, rtol=1e-5, atol=1e-6)
    assert not resized[side:].any() and not resized[:, side:].any()
    matrix = jax.jit(lambda s: interpolate.bilinear_matrix_to_side(TEST_SIZE, s, GRID))(side)
    np.testing.assert_array_equal(matrix[:side], interpolate.bilinear_matrix(TEST_SIZE, side))


def test_original_resolution_counts_match_numpy_on_tiny_episodes():
    """Three 1-shot episodes, their queries' originals 20 x 13, 30 x 41 and 7 x 5 pixels:
    `make_scores` counts what PyTorch's resize and NumPy's comparison with the original
    masks padded to a square (255 beyond the image) count."""
    config = common.synthetic(fold=0, shot=1)
    config.model.bottleneck_dim, config.inner.steps = 8, 5
    model = models.from_config(config.model)
    rng = np.random.default_rng(0)
    feature_size, originals = 5, [(20, 13), (30, 41), (7, 5)]
    masks = [
        rng.choice(np.array([0, 1, 255], np.uint8), size=shape, p=(0.5, 0.4, 0.1))
        for shape in originals
    ]
    batch = {
        "support_features": rng.normal(size=(3, 1, feature_size, feature_size, 8)),
        "support_masks": rng.choice(np.array([0, 1, 255], np.uint8), (3, 1, TEST_SIZE, TEST_SIZE)),
        "query_features": rng.normal(size=(3, feature_size, feature_size, 8)),
        "query_mask": rng.choice(np.array([0, 1], np.uint8), (3, TEST_SIZE, TEST_SIZE)),
        "episode": np.arange(3, dtype=np.int32),
        "query_original_mask": np.stack([transforms.pad_to_grid(m, GRID) for m in masks]),
        "query_side": np.array([max(shape) for shape in originals], np.int32),
    }
    batch = {
        name: jnp.asarray(array, jnp.float32 if "features" in name else None)
        for name, array in batch.items()
    }
    params, run_key = {"cwt": cwt.init(jax.random.key(1), 8, 2), "inner": {}}, jax.random.key(2)
    counts, _ = evaluate.make_scores(model, inner.from_config(config))(params, batch, run_key)

    for index, (mask, (height, width)) in enumerate(zip(masks, originals, strict=True)):
        init_key, _ = episode.episode_keys(run_key, index)
        differences = episode.episode_logit_differences(
            params,
            batch["support_features"][index],
            batch["support_masks"][index],
            batch["query_features"][index],
            inner.init_classifier(init_key, {}, 8, "torch"),
            inner.InnerLoop(
                optimizer=optax.sgd(config.inner.lr),
                steps=config.inner.steps,
                init="torch",
                learn_lr=False,
                gradient="none",
            ),
        )
        side = max(height, width)
        target = np.full((side, side), 255)  # PFENet's backmask
        target[:height, :width] = mask
        for method in differences:
            logits = np.stack([np.zeros((feature_size,) * 2), np.asarray(differences[method])])
            prediction = torch_ori_resize(logits.astype(np.float32), TEST_SIZE, side).argmax(0)
            valid = target != 255
            expected = [
                [np.sum((prediction == c) & (target == c) & valid) for c in (0, 1)],
                [np.sum(((prediction == c) | (target == c)) & valid) for c in (0, 1)],
            ]
            actual = [np.asarray(counts["original"][method][i][index]) for i in (0, 1)]
            np.testing.assert_array_equal(actual, expected)
            assert 0 < expected[1][1] < valid.sum()  # both classes predicted or present
    assert set(counts) == {"padded", "original"}


def test_runs_take_eval_seeds_or_num_runs_seeds_from_seed():
    section = ml_collections.ConfigDict({"seeds": (), "num_runs": 3})
    config = ml_collections.ConfigDict({"seed": 5, "eval": section})
    assert evaluate.evaluation_seeds(config, None) == [5, 6, 7]
    config.eval.seeds = (9, 2)
    assert evaluate.evaluation_seeds(config, None) == [9, 2]
    assert evaluate.evaluation_seeds(config, [{"class_id": 1}]) == [9]  # an episode list
