"""The inner loop's objective: the transductive loop against a PyTorch reference, what
the inner loop reads of a query, RePRI vmapped, the config's errors, and the objectives
end to end (evaluation side by side, RePRI without a CWT, meta-training on the
transductive loop).
"""

import dataclasses
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import repri_reference as ref
import torch
import torch_reference
from absl import flags as absl_flags
from ml_collections import config_flags

from configs import common
from cwt_jax import cli, config_checks, errors, experiment
from cwt_jax.evaluation import evaluate
from cwt_jax.fewshot import classifier, episode, inner, repri
from cwt_jax.models import cwt

CHANNELS, FEATURES, LABELS = 16, 6, 41
LR, STEPS = 0.1, 20


def episode_arrays(shot, seed):
    """Support features (K, h, w, C), masks (K, H, W), query features (h, w, C), an init."""
    rng = np.random.RandomState(seed)
    support_features = rng.randn(shot, FEATURES, FEATURES, CHANNELS).astype(np.float32)
    query_features = rng.randn(FEATURES, FEATURES, CHANNELS).astype(np.float32)
    masks = (rng.rand(shot, LABELS, LABELS) > 0.6).astype(np.int64)
    masks[:, :3] = 255
    init = rng.uniform(-(CHANNELS**-0.5), CHANNELS**-0.5, (2, CHANNELS)).astype(np.float32)
    return support_features, masks, query_features, init


def repri_settings(**changes):
    config = common.base().inner.repri
    return dataclasses.replace(inner.repri_settings(config), **changes)


def transductive_fit(arrays, terms):
    support_features, masks, query_features, init = arrays
    return classifier.fit(
        jnp.asarray(support_features),
        jnp.asarray(masks),
        jnp.asarray(init),
        optimizer=optax.sgd(LR),
        steps=STEPS,
        query_features=jnp.asarray(query_features),
        query_terms=terms,
    )


@pytest.mark.parametrize("shot", [1, 3])
def test_transductive_loop_matches_cwts_loop_with_repris_query_terms_in_pytorch(shot):
    """CWT's inner loop plus `Classifier.get_entropies`, π re-estimated after update 4."""
    arrays = episode_arrays(shot, seed=shot)
    support_features, masks, query_features, init = arrays
    expected = ref.fit_transductive(
        torch.from_numpy(support_features).permute(0, 3, 1, 2),
        torch.from_numpy(masks),
        torch.from_numpy(query_features).permute(2, 0, 1)[None],
        torch.from_numpy(init),
        lr=LR,
        steps=STEPS,
        weights=(1.0, "auto", "auto"),
        fb=(5,),
    ).numpy()
    actual = np.asarray(transductive_fit(arrays, repri_settings(fb_param_update=(5,))))
    support_only = torch_reference.fit_classifier(
        torch.from_numpy(support_features).permute(0, 3, 1, 2),
        torch.from_numpy(masks),
        torch.from_numpy(init),
        lambda params: torch.optim.SGD(params, lr=LR),
        STEPS,
    ).numpy()
    assert np.abs(expected - support_only).max() > 1e-3  # the query terms changed the fit
    assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-5


def test_transductive_loop_without_query_terms_is_the_support_loop():
    arrays = episode_arrays(2, seed=0)
    alone = classifier.fit(
        *(jnp.asarray(x) for x in (arrays[0], arrays[1], arrays[3])),
        optimizer=optax.sgd(LR),
        steps=STEPS,
    )
    without = transductive_fit(arrays, repri_settings(weights=(1.0, 0.0, 0.0)))
    np.testing.assert_allclose(without, alone, rtol=1e-6, atol=1e-7)


@dataclasses.dataclass(frozen=True)
class FeatureModel:
    """What `evaluate.make_scores` reads of a backbone."""

    feature_channels: int


def scores_of(query_mask, query_features, objective, objectives, query_pixels):
    """Each method's (B, S, S) predictions of two episodes from `evaluate.make_scores`."""
    config = common.synthetic(0, 1)
    config.inner.steps, config.inner.objective = 5, objective
    config.inner.repri.query_pixels = query_pixels
    support_features, masks, _, _ = episode_arrays(1, seed=7)
    batch = {
        "support_features": np.stack([support_features] * 2),
        "support_masks": np.stack([masks] * 2),
        "query_features": query_features,
        "query_mask": query_mask,
        "episode": np.arange(2, dtype=np.int32),
    }
    params = {"cwt": cwt.init(jax.random.key(0), CHANNELS, 2), "inner": {}}
    scores = evaluate.make_scores(FeatureModel(CHANNELS), inner.from_config(config), objectives)
    _, predictions = scores(params, batch, jax.random.key(1))
    return jax.device_get(predictions)


def test_the_inner_loop_reads_the_querys_features_never_its_labels():
    """Two queries' masks, labels and 255 bands, swapped for others: the transductive
    classifier, its CWT and RePRI over all pixels predict the same; RePRI over the
    labelled pixels (the official code's) reads the 255 band, and new features move all."""
    rng = np.random.RandomState(3)
    features = rng.randn(2, FEATURES, FEATURES, CHANNELS).astype(np.float32)
    masks = [rng.choice(np.array([0, 1, 255]), (2, LABELS, LABELS)) for _ in range(2)]
    for query_pixels, label_free in (("all", ("cwt", "transductive", "repri")), ("labelled", ())):
        first, second = (
            scores_of(mask, features, "transductive", ("repri",), query_pixels) for mask in masks
        )
        assert set(first) == {"cwt", "transductive", "repri"}
        for method in label_free:
            np.testing.assert_array_equal(first[method], second[method])
    assert not np.array_equal(first["repri"], second["repri"])
    moved = scores_of(masks[0], features[::-1], "transductive", (), "all")
    assert not np.array_equal(moved["transductive"], first["transductive"])


def test_the_cwt_adapts_the_objectives_classifier_and_the_others_are_fitted_beside_it():
    """`support` with the others: the support-only and CWT maps are those of `support`
    alone, on the same episodes and initialisations."""
    rng = np.random.RandomState(4)
    features = rng.randn(2, FEATURES, FEATURES, CHANNELS).astype(np.float32)
    mask = rng.choice(np.array([0, 1, 255]), (2, LABELS, LABELS))
    together = scores_of(mask, features, "support", ("transductive", "repri"), "labelled")
    alone = scores_of(mask, features, "support", (), "labelled")
    assert set(together) == {"cwt", "support_only", "transductive", "repri"}
    for method in alone:
        np.testing.assert_array_equal(together[method], alone[method])


def test_repri_vmapped_over_episodes_equals_one_at_a_time():
    settings = repri_settings()
    episodes = [episode_arrays(2, seed=seed) for seed in range(3)]
    valid = jnp.ones((FEATURES, FEATURES))
    stacked = [jnp.stack([jnp.asarray(e[i]) for e in episodes]) for i in (0, 1, 2)]
    batched = jax.vmap(lambda s, m, q: repri.fit(s, m, q, valid, settings=settings))(*stacked)
    for index, (support, masks, query, _) in enumerate(episodes):
        single = repri.fit(support, masks, query, valid, settings=settings)
        for name in ("prototype", "bias"):
            np.testing.assert_allclose(batched[name][index], single[name], rtol=1e-6, atol=1e-7)


def config_with(overrides):
    config = common.synthetic(0, 1)
    for dotted, value in overrides.items():
        *sections, key = dotted.split(".")
        section = config
        for name in sections:
            section = section[name]
        section[key] = value
    return config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"inner.objective": "prototype"},
            "inner.objective='prototype' is not one of support, transductive, repri.",
        ),
        (
            {"eval.objectives": ("support", "repri2")},
            "eval.objectives='repri2' is not one of support, transductive, repri.",
        ),
        ({"eval.objectives": ("repri", "repri")}, "eval.objectives=('repri', 'repri') repeats"),
        (
            {"inner.objective": "repri", "inner.init": "learned"},
            "inner.objective=repri starts from the support prototype at its own rate "
            "(inner.repri.lr): inner.init=learned would go unused",
        ),
        (
            {"inner.objective": "repri", "inner.learn_lr": True},
            "inner.learn_lr=True would go unused",
        ),
        (
            {"inner.objective": "repri", "mode": "metatrain"},
            "there is no CWT to meta-train",
        ),
        (
            {"inner.objective": "repri", "inner.repri.fb_param_type": "oracle"},
            "inner.repri.fb_param_type='oracle' is not one of soft.",
        ),
        (
            {"inner.objective": "repri", "inner.repri.fb_param_update": (60,)},
            "the repri loop re-estimates π before its updates 2..49 (inner.repri.adapt_iter), "
            "not before 60.",
        ),
        (
            {"inner.objective": "transductive", "inner.repri.fb_param_update": (120,)},
            "the transductive loop re-estimates π before its updates 2..100 (inner.steps)",
        ),
        (
            {"eval.objectives": ("repri",), "inner.repri.weights": (1.0, "auto")},
            "inner.repri.weights=(1.0, 'auto') must be three weights",
        ),
        (
            {"eval.objectives": ("repri",), "inner.repri.query_pixels": "some"},
            "inner.repri.query_pixels='some' is not one of labelled, all.",
        ),
        (
            {"eval.objectives": ("repri",), "inner.repri.optimizer": "sgdx"},
            "inner.repri.optimizer='sgdx' is not an optax optimiser",
        ),
    ],
)
def test_bad_objective_settings_are_one_line(overrides, message):
    with pytest.raises(errors.ConfigError) as error:
        config_checks.validate(config_with({"mode": "eval", **overrides}))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_tuple_of_bare_words_on_the_command_line_is_a_tuple_of_strings(monkeypatch):
    argv = [
        "main",
        "--config=configs/synthetic_fold0_1shot.py",
        "--config.eval.objectives=(support,repri)",
        "--config.inner.repri.weights=(0.5,auto,1)",
    ]
    values = absl_flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values)
    monkeypatch.setattr(sys, "argv", list(argv))
    cli.parse_flags(list(argv), values)
    assert holder.value.eval.objectives == ("support", "repri")
    assert holder.value.inner.repri.weights == (0.5, "auto", 1)


TINY = {
    "data.synthetic_train": 80,
    "data.synthetic_val": 60,
    "data.image_size": 64,
    "data.num_workers": 0,
    "model.layers": (1, 1, 1, 1),
    "model.width": 8,
    "model.bottleneck_dim": 16,
    "cwt.heads": 2,
    "inner.steps": 5,
    "inner.repri.fb_param_update": (3,),  # within the transductive loop's 5 updates
    "metatrain.epochs": 1,
    "metatrain.episodes_per_epoch": 4,
    "metatrain.episodes_per_step": 2,
    "metatrain.val_episodes": 2,
    "eval.num_runs": 1,
    "eval.num_episodes": 4,
    "eval.episodes_per_step": 2,
    "compilation_cache_dir": "",
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """.pth files of a tiny random PSPNet and CWT."""
    directory = tmp_path_factory.mktemp("torch")
    torch.manual_seed(0)
    paths = {name: str(directory / f"{name}.pth") for name in ("backbone", "cwt")}
    pspnet = torch_reference.PSPNet((1, 1, 1, 1), 8, 16)
    torch.save({"state_dict": pspnet.state_dict()}, paths["backbone"])
    torch.save(torch_reference.MultiHeadAttentionOne(2, 16).state_dict(), paths["cwt"])
    return paths


def read_json(path):
    with open(path) as file:
        return json.load(file)


def test_objectives_end_to_end(weights, tmp_path):
    """Evaluation side by side, RePRI alone without a CWT, meta-training on the
    transductive loop and its CWT evaluated on it."""
    shared = {
        **TINY,
        "data.cache_dir": str(tmp_path / "tfds"),
        "init.backbone": weights["backbone"],
    }
    side_by_side = config_with(
        {
            **shared,
            "mode": "eval",
            "init.cwt": weights["cwt"],
            "eval.objectives": ("repri", "transductive"),
            "eval.visualize": 1,
        }
    )
    experiment.run(side_by_side, str(tmp_path / "side_by_side"))
    together = read_json(tmp_path / "side_by_side" / "results.json")
    methods = ["cwt", "support_only", "transductive", "repri"]
    assert [key for key in together if key in methods] == methods
    assert together["protocol"]["objectives"]["repri"] == {"optimizer": "sgd", "updates": 49}
    assert os.listdir(tmp_path / "side_by_side" / "visualize") == ["episode0000_class1.png"]

    alone = config_with({**shared, "mode": "eval", "inner.objective": "repri"})
    experiment.run(alone, str(tmp_path / "repri"))
    repri_only = read_json(tmp_path / "repri" / "results.json")
    assert "cwt" not in repri_only and repri_only["miou"] == together["repri"]["miou"]

    trained = config_with({**shared, "mode": "metatrain", "inner.objective": "transductive"})
    experiment.run(trained, str(tmp_path / "transductive"))
    stage = tmp_path / "transductive" / "metatrain"
    assert read_json(stage / "settings.json")["inner.objective"] == "transductive"
    logged = [json.loads(line) for line in open(tmp_path / "transductive" / "metrics.jsonl")]
    assert any("val_transductive_miou" in line for line in logged)
    evaluated = config_with({**shared, "mode": "eval", "inner.objective": "transductive"})
    experiment.run(evaluated, str(tmp_path / "transductive"))
    result = read_json(tmp_path / "transductive" / "results.json")
    assert [key for key in result if key in methods] == ["cwt", "transductive"]
    assert result["transductive"]["miou"] == together["transductive"]["miou"]


def test_configs_objectives_default_keeps_the_support_loop():
    config = common.base()
    assert config.inner.objective == "support" and config.eval.objectives == ()
    loop = inner.from_config(config)
    assert loop.objective == "support" and loop.repri_settings.adapt_iter == 50
    assert episode.methods(loop.objective) == ("cwt", "support_only")
    assert isinstance(config.inner.repri, ml_collections.ConfigDict)
