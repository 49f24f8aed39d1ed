"""The pipeline on a frozen DINOv2: meta-training, evaluation (with and without the
feature cache), learned inner loops, `predict` and the config checks, on a tiny ViT of
the official architecture (width 64, 2 blocks) saved in the official .pth format."""

import importlib
import json
import os

import cv2
import numpy as np
import pytest
import torch
import torch_reference as ref
from absl import flags
from test_main import TINY, tiny_config

from cwt_jax import config_checks, errors, experiment
from cwt_jax.data import input_pipeline
from cwt_jax.predict import command
from cwt_jax.weights import checkpoints

WIDTH, HEADS, SIZE = 64, 2, 56  # 56 px: a 4 x 4 patch grid

VIT = {
    **TINY,
    "model.backbone": "dinov2_vits14_reg",
    "data.image_size": SIZE,
    "cwt.heads": HEADS,
    "metatrain.epochs": 1,
    "metatrain.episodes_per_epoch": 2,
    "metatrain.val_episodes": 2,
}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Official-format .pth files: a tiny DINOv2 with 4 registers and a CWT of its width."""
    directory = tmp_path_factory.mktemp("dinov2")
    torch.manual_seed(0)
    paths = {"backbone": str(directory / "vit.pth"), "cwt": str(directory / "cwt.pth")}
    torch.save(ref.DinoV2(WIDTH, 2, registers=4).state_dict(), paths["backbone"])
    torch.save(ref.MultiHeadAttentionOne(HEADS, WIDTH).state_dict(), paths["cwt"])
    return paths


@pytest.fixture(scope="module")
def settings(weights, tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("tfds"))
    config = tiny_config({"data.cache_dir": directory})
    input_pipeline.prepare(config.data, config.seed, directory)
    return {**VIT, "data.cache_dir": directory, "init.backbone": weights["backbone"]}


def run(settings, workdir, **overrides):
    lines = []
    experiment.run(tiny_config({**settings, **overrides}), str(workdir), lines.append)
    return lines


def results(workdir):
    with open(os.path.join(workdir, "results.json")) as file:
        return json.load(file)


@pytest.fixture(scope="module")
def trained(settings, tmp_path_factory):
    """mode=all on the ViT: stage 1 skipped, the CWT meta-trained, then evaluated."""
    workdir = tmp_path_factory.mktemp("all")
    return workdir, run(settings, workdir, mode="all")


def test_all_skips_stage_1_and_meta_trains_and_evaluates(trained, settings, tmp_path):
    workdir, lines = trained
    assert any(line.startswith("Stage 1 (pretrain) skipped") for line in lines)
    assert not os.path.exists(workdir / "pretrain")
    assert os.path.isdir(workdir / "metatrain" / "best")
    assert results(workdir)["protocol"]["test_size"] == SIZE
    # The run evaluated the CWT it saved: evaluating that checkpoint anew gives its numbers.
    run(settings, tmp_path, mode="eval", **{"init.cwt": str(workdir / "metatrain" / "best")})
    assert results(tmp_path)["runs"] == results(workdir)["runs"]


def test_eval_of_pth_files_is_the_same_with_and_without_the_feature_cache(
    settings, weights, tmp_path
):
    runs = []
    for cache in (True, False):
        workdir = tmp_path / str(cache)
        overrides = {"init.cwt": weights["cwt"], "eval.feature_cache": cache}
        run(settings, workdir, mode="eval", **overrides)
        runs.append(results(workdir)["runs"])
    for cached, direct in zip(*runs, strict=True):
        np.testing.assert_allclose(cached["cwt"]["miou"], direct["cwt"]["miou"], rtol=1e-6)


def test_learned_inner_loop_meta_trains_and_evaluates(settings, tmp_path):
    learned = {
        "inner.init": "learned",
        "inner.learn_lr": True,
        "metatrain.inner_gradient": "first_order",
    }
    run(settings, tmp_path, mode="all", **learned)
    assert results(tmp_path)["config"]["metatrain"]["inner_gradient"] == "first_order"
    # Meta-training moved the learned parts from their start (zeros), and evaluating the
    # checkpoint with them anew gives the run's numbers.
    best = str(tmp_path / "metatrain" / "best")
    learned_parts = checkpoints.load_tree(best)["inner"]
    assert set(learned_parts) == {"init", "log_lr"}
    for leaf in learned_parts.values():
        assert leaf.shape == (2, WIDTH) and np.abs(leaf).max() > 1e-6
    evaluation = tmp_path / "eval"
    run(settings, evaluation, mode="eval", **learned, **{"init.cwt": best})
    assert results(evaluation)["runs"] == results(tmp_path)["runs"]


def test_predict_segments_with_the_vit_and_its_meta_trained_cwt(trained, weights, tmp_path):
    workdir, _ = trained
    image = np.random.default_rng(0).integers(0, 255, (70, 90, 3), np.uint8)
    mask = np.zeros((70, 90), np.uint8)
    mask[20:50, 30:60] = 1

    paths = {name: str(tmp_path / f"{name}.png") for name in ("image", "mask")}
    cv2.imwrite(paths["image"], image)
    cv2.imwrite(paths["mask"], mask)
    argv = {
        "backbone": weights["backbone"],
        "cwt": str(workdir / "metatrain" / "best"),
        "support": f"{paths['image']}:{paths['mask']}",
        "query": paths["image"],
        "output": str(tmp_path / "out"),
        "image_size": SIZE,
        "inner_steps": 5,
        "compilation_cache_dir": "",
    }
    values = flags.FlagValues()
    command.define_flags(values)
    command.main(values(["predict", *(f"--{k}={v}" for k, v in argv.items())]), values)
    written = cv2.imread(str(tmp_path / "out" / "image_mask.png"), cv2.IMREAD_UNCHANGED)
    assert written.shape == (70, 90)
    values = flags.FlagValues()
    command.define_flags(values)
    argv["image_size"] = SIZE + 1
    with pytest.raises(SystemExit, match="image_size=57 is not a multiple of 14"):
        command.main(values(["predict", *(f"--{k}={v}" for k, v in argv.items())]), values)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"data.image_size": 113}, "data.image_size=113 is not a multiple of 14, the patch size"),
        ({"mode": "pretrain"}, "mode=pretrain trains a PSPNet"),
        ({"init.resnet": "r.pth"}, "init.resnet=r.pth initialises stage 1, which"),
        (
            {"init.backbone": ""},
            "model.backbone=dinov2_vits14_reg needs init.backbone: the official checkpoint "
            "dinov2_vits14_reg4_pretrain.pth (https://dl.fbaipublicfiles.com/dinov2/",
        ),
        ({"model.backbone": "dinov2_vitl"}, "model.backbone='dinov2_vitl' is not one of"),
    ],
)
def test_config_errors_are_one_line(settings, overrides, message):
    with pytest.raises(errors.ConfigError, match="^" + message.replace("(", r"\(")) as info:
        config_checks.validate(tiny_config({**settings, "mode": "eval", **overrides}))
    assert "\n" not in str(info.value)


def test_a_checkpoint_without_registers_for_a_reg_backbone_is_named(settings, tmp_path):
    path = str(tmp_path / "plain.pth")
    torch.save(ref.DinoV2(WIDTH, 1).state_dict(), path)
    with pytest.raises(
        errors.ConversionError,
        match="holds a DINOv2 ViT with 0 registers but model.backbone=dinov2_vits14_reg",
    ):
        run(settings, tmp_path / "run", mode="eval", **{"init.backbone": path})


@pytest.mark.parametrize("dataset", ["pascal", "coco"])
def test_dinov2_configs_are_valid_with_the_official_checkpoint(dataset):
    for fold in range(4):
        for shot in (1, 5):
            module = importlib.import_module(f"configs.{dataset}_dinov2_fold{fold}_{shot}shot")
            config = module.get_config()
            assert (config.data.dataset, config.data.fold, config.data.shot) == (
                dataset,
                fold,
                shot,
            )
            assert config.model.backbone == "dinov2_vitb14"
            assert config.data.image_size % 14 == 0
            assert "dinov2_vitb14_pretrain.pth" in module.__doc__
            config.init.backbone = "dinov2_vitb14_pretrain.pth"
            config_checks.validate(config)
