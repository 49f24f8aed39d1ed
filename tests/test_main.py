"""The entry point end to end on a shrunken config: every mode, resumption after a kill,
.pth inputs, episode lists, a non-default inner optimiser, user errors and the scripts.

All runs share one synthetic dataset and one persistent XLA compilation cache (in-process
and subprocesses alike), so each jitted function is compiled about once. XLA compiles on
one core: the command-line runs go on in background threads meanwhile, on the other.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
from concurrent import futures

import cv2
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import torch
import torch_reference as ref
from absl import flags as absl_flags
from flax import traverse_util
from jax.experimental.compilation_cache import compilation_cache
from ml_collections import config_flags

from configs import common
from cwt_jax import cli, errors, experiment, models, optimizers, seeds
from cwt_jax.data import input_pipeline
from cwt_jax.evaluation import evaluate
from cwt_jax.models import cwt
from cwt_jax.training import metatrain
from cwt_jax.weights import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILE = "configs/synthetic_fold0_1shot.py"
LAYERS, WIDTH, BOTTLENECK, HEADS = (1, 1, 1, 1), 8, 16, 2
# Every size the tests rely on, so that tuning `common.synthetic()` cannot break them.
# 128 px synthetic images give each class >= 2 eligible images in 80 train and 60 val
# images (the 2*32*32 rule); the model sees them at 64 px.
TINY = {
    "seed": 0,
    "compilation_cache_dir": "",  # set to the module's own cache by `compile_cache`
    "data.synthetic_train": 80,
    "data.synthetic_val": 60,
    "data.synthetic_size": 128,
    "data.image_size": 64,
    "data.num_workers": 0,
    "model.layers": LAYERS,
    "model.width": WIDTH,
    "model.bottleneck_dim": BOTTLENECK,
    "model.dropout": 0.1,
    "cwt.heads": HEADS,
    "cwt.dropout": 0.5,
    "cwt.attention_dropout": 0.1,
    "pretrain.epochs": 1,
    "pretrain.batch_size": 4,
    "pretrain.image_size": 64,
    "pretrain.val_images": 8,
    "pretrain.checkpoint_every": 100,
    "pretrain.lr": 0.02,
    "pretrain.final_lr": 1e-4,
    "pretrain.optimizer": "sgd",
    "pretrain.optimizer_args": {"momentum": 0.9, "nesterov": True},
    "pretrain.weight_decay": 1e-4,
    "pretrain.label_smoothing": 0.1,
    "pretrain.scale_range": (),
    "pretrain.rotation_range": (),
    "metatrain.epochs": 2,
    "metatrain.episodes_per_epoch": 4,
    "metatrain.episodes_per_step": 2,
    "metatrain.val_episodes": 2,
    "metatrain.checkpoint_every": 1,
    "metatrain.lr": 0.1,
    "metatrain.optimizer": "sgd",
    "metatrain.optimizer_args": {"momentum": 0.9, "nesterov": True},
    "metatrain.weight_decay": 1e-4,
    "metatrain.inner_gradient": "none",
    "inner.optimizer": "sgd",
    "inner.lr": 0.1,
    "inner.steps": 5,
    "inner.init": "torch",
    "inner.learn_lr": False,
    "eval.num_runs": 1,
    "eval.num_episodes": 4,
    "eval.episodes_per_step": 2,
    "eval.visualize": 0,
    "eval.episodes": "",
}
METATRAIN_STEPS = 4  # epochs * episodes_per_epoch / episodes_per_step


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """A persistent XLA cache for this module and its subprocesses, reset afterwards."""
    previous = jax.config.jax_compilation_cache_dir
    directory = str(tmp_path_factory.mktemp("xla_cache"))
    compilation_cache.set_cache_dir(directory)
    compilation_cache.reset_cache()
    TINY["compilation_cache_dir"] = directory  # every run of the module, in process or not
    yield directory
    TINY["compilation_cache_dir"] = ""
    jax.config.update("jax_compilation_cache_dir", previous)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The TFDS cache holding the tiny synthetic dataset, generated once."""
    directory = str(tmp_path_factory.mktemp("tfds"))
    config = tiny_config({"data.cache_dir": directory})
    input_pipeline.prepare(config.data, config.seed, directory)
    return directory


@pytest.fixture(scope="module")
def settings(data_dir):
    """TINY with the shared dataset."""
    return {**TINY, "data.cache_dir": data_dir}


@pytest.fixture(scope="module")
def subprocess_env(compile_cache):
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": compile_cache}


def tiny_config(overrides):
    """`common.synthetic(0, 1)` with TINY and `overrides` ({"section.key": value}) set."""
    config = common.synthetic(fold=0, shot=1)
    for dotted, value in {**TINY, **overrides}.items():
        *sections, key = dotted.split(".")
        section = config
        for name in sections:
            section = section[name]
        section[key] = value
    return config


def flags(overrides):
    """Command-line flags setting `overrides`."""
    return [f"--config.{key}={value}" for key, value in overrides.items()]


def command(workdir, overrides, config_file=CONFIG_FILE):
    return [sys.executable, "-m", "cwt_jax.main", *main_arguments(workdir, overrides, config_file)]


def main_arguments(workdir, overrides, config_file=CONFIG_FILE):
    return [f"--config={config_file}", f"--workdir={workdir}", *flags(overrides)]


def run_cli(workdir, overrides, env, **kwargs):
    return subprocess.run(
        command(workdir, overrides), cwd=REPO, env=env, capture_output=True, text=True, **kwargs
    )


# A line in absl's (glog's) format, as TFDS, orbax and absl's own warnings print them:
# "W1207 06:44:02.196657 140235529317248 file_utils.py:394] ...".
LIBRARY_FORMAT_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\]", re.M)


def assert_quiet(process):
    """No library notice reaches the terminal of a normal run, and no absl-format line."""
    for notice in ("custom data configuration", "read only", "Downloading", "backend 'tpu'"):
        assert notice not in process.stderr + process.stdout
    assert not LIBRARY_FORMAT_LINE.findall(process.stderr + process.stdout)


def read_results(workdir):
    with open(os.path.join(workdir, "results.json")) as file:
        return json.load(file)


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as file:
        return [json.loads(line) for line in file]


def steps_of(directory):
    """Finished checkpoint steps in an orbax manager directory."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def restore_state(workdir, stage):
    """The train state in `<workdir>/<stage>/latest` and its step."""
    directory = os.path.join(workdir, stage, "latest")
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(read_only=True))
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, jax.device_get(restored["state"])


def assert_trees_close(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(e), rtol=1e-5, atol=1e-6)


# Runs shared by several tests. The command-line runs are started in background threads
# as early as their inputs exist (see `jobs`); tests wait for their results.


@pytest.fixture(scope="module")
def executor():
    with futures.ThreadPoolExecutor(max_workers=3) as pool:
        yield pool


@pytest.fixture(scope="module")
def torch_weights(tmp_path_factory):
    """.pth files of the TINY architecture: PSPNet (released layout), CWT, and misfits."""
    directory = tmp_path_factory.mktemp("torch")
    torch.manual_seed(0)
    pspnet = ref.PSPNet(LAYERS, WIDTH, BOTTLENECK)
    with torch.no_grad():
        ref.randomize_batch_norm(pspnet, torch.Generator().manual_seed(0))
    paths = {
        name: str(directory / f"{name}.pth") for name in ("backbone", "cwt", "deeper", "heads")
    }
    torch.save({"state_dict": pspnet.state_dict()}, paths["backbone"])
    torch.save(ref.MultiHeadAttentionOne(HEADS, BOTTLENECK).state_dict(), paths["cwt"])
    deeper = ref.PSPNet((1, 2, 1, 1), WIDTH, BOTTLENECK)
    torch.save({"state_dict": deeper.state_dict()}, paths["deeper"])
    torch.save(ref.MultiHeadAttentionOne(2 * HEADS, BOTTLENECK).state_dict(), paths["heads"])
    return paths


@pytest.fixture(scope="module", autouse=True)
def jobs(executor, torch_weights, subprocess_env, tmp_path_factory):
    """Command-line runs that need no trained weights, started before the first test."""
    converted = tmp_path_factory.mktemp("converted")
    return {
        "convert": executor.submit(convert_torch_weights, torch_weights, converted, subprocess_env),
    }


def convert_torch_weights(torch_weights, directory, env):
    """The .pth files written as orbax checkpoints by `python -m cwt_jax.convert`."""
    paths = {"backbone": str(directory / "pspnet"), "cwt": str(directory / "cwt")}
    for name, kind in (("backbone", "pspnet"), ("cwt", "cwt")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cwt_jax.convert",
                f"--format={kind}",
                f"--layers={','.join(map(str, LAYERS))}",
                f"--input={torch_weights[name]}",
                f"--output={paths[name]}",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            check=True,
            timeout=300,
        )
    return paths


@pytest.fixture(scope="module")
def converted(jobs):
    return jobs["convert"].result()


@pytest.fixture(scope="module")
def pretrained(settings, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("pretrain"))
    experiment.run(tiny_config({**settings, "mode": "pretrain"}), workdir)
    return workdir


@pytest.fixture(scope="module")
def metatrain_settings(settings, pretrained):
    return {
        **settings,
        "mode": "metatrain",
        "init.backbone": os.path.join(pretrained, "pretrain", "best"),
    }


# `python -m cwt_jax.main` that sends itself the signal argv[1] names once the first state
# of metatrain/latest is on disk: the kill lands at the same point however loaded the
# machine is (a watcher polling the folder could be late enough to miss the run's end).
KILLED_AFTER_FIRST_SAVE = """
import os, runpy, signal, sys
import orbax.checkpoint as ocp

kill = signal.Signals[sys.argv.pop(1)]
save = ocp.CheckpointManager.save
# Ctrl-C's handler, as in a terminal: a process started in the background by a
# non-interactive shell (a CI runner's `cmd &`) inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

def save_then_kill(manager, *args, **kwargs):
    saved = save(manager, *args, **kwargs)
    if manager.directory.name == "latest":
        manager.wait_until_finished()
        os.kill(os.getpid(), kill)
    return saved

ocp.CheckpointManager.save = save_then_kill
runpy.run_module("cwt_jax.main", run_name="__main__", alter_sys=True)
"""


def kill_and_rerun(workdir, overrides, env, kill=signal.SIGKILL):
    """Returns (killed run's exit code and stderr, latest step at the kill, rerun, work dir)."""
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_AFTER_FIRST_SAVE,
            kill.name,
            *main_arguments(workdir, overrides),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=600,
    )
    killed_at = steps_of(workdir / "metatrain" / "latest")
    rerun = run_cli(workdir, overrides, env, timeout=600)
    return (killed.returncode, killed.stderr), killed_at, rerun, workdir


@pytest.fixture(scope="module")
def metatrained(executor, metatrain_settings, subprocess_env, tmp_path_factory):
    """The uninterrupted in-process run, and the command-line run killed and rerun.

    The latter starts once the former has filled the compilation cache.

    Returns:
      (work dir, futures of `kill_and_rerun` after SIGKILL and after SIGINT (Ctrl-C)).
    """
    workdir = str(tmp_path_factory.mktemp("metatrain"))
    experiment.run(tiny_config(metatrain_settings), workdir)
    return workdir, {
        kill: executor.submit(
            kill_and_rerun,
            tmp_path_factory.mktemp(f"resumed_{kill.name}"),
            metatrain_settings,
            subprocess_env,
            kill,
        )
        for kill in (signal.SIGKILL, signal.SIGINT)
    }


@pytest.fixture(scope="module")
def converted_eval(executor, settings, converted, torch_weights, subprocess_env, tmp_path_factory):
    """Evaluation (sgd inner loop) on the converted orbax checkpoints in-process, and on
    the .pth files on the command line (started once the former has filled the cache).

    Returns:
      (work dir, future of the command line's `subprocess.CompletedProcess`).
    """
    workdir = str(tmp_path_factory.mktemp("eval_orbax"))
    overrides = {**settings, "mode": "eval"}
    experiment.run(
        tiny_config(
            {**overrides, "init.backbone": converted["backbone"], "init.cwt": converted["cwt"]}
        ),
        workdir,
    )
    pth_overrides = {
        **overrides,
        "init.backbone": torch_weights["backbone"],
        "init.cwt": torch_weights["cwt"],
    }
    pth_workdir = tmp_path_factory.mktemp("eval_pth")
    return workdir, executor.submit(
        run_cli, pth_workdir, pth_overrides, subprocess_env, timeout=600
    )


# Modes and evaluation options.


def test_pretrain_mode_writes_its_checkpoints_and_metrics_only(pretrained):
    steps = steps_of(os.path.join(pretrained, "pretrain", "latest"))
    assert len(steps) == 1
    assert len(steps_of(os.path.join(pretrained, "pretrain", "best"))) == 1
    lines = read_metrics(pretrained)
    assert {line["stage"] for line in lines} == {"pretrain"}
    assert [line["step"] for line in lines if "loss" in line] == list(range(1, steps[0] + 1))
    assert [line["step"] for line in lines if "val_miou" in line] == steps
    assert os.listdir(os.path.join(pretrained, "tb"))
    assert not os.path.exists(os.path.join(pretrained, "metatrain"))
    assert not os.path.exists(os.path.join(pretrained, "results.json"))


def test_metatrain_mode_trains_the_cwt_on_the_given_backbone(metatrained, metatrain_settings):
    metatrained, _ = metatrained
    assert steps_of(os.path.join(metatrained, "metatrain", "latest")) == [METATRAIN_STEPS]
    assert steps_of(os.path.join(metatrained, "metatrain", "best"))[0] in (2, 4)
    lines = read_metrics(metatrained)
    assert {line["stage"] for line in lines} == {"metatrain"}
    losses = [line["loss"] for line in lines if "loss" in line]
    assert len(losses) == METATRAIN_STEPS and np.all(np.isfinite(losses))
    # The CWT moved from its initialisation (`metatrain.metatrain`'s). Its loss falls on
    # a batch (test_meta_learning); these four steps each see new episodes.
    _, state = restore_state(metatrained, "metatrain")
    config = tiny_config(metatrain_settings)
    start = cwt.init(seeds.key(config.seed, seeds.Stream.INIT), BOTTLENECK, config.cwt.heads)
    moved = jax.tree.map(
        lambda a, b: float(np.abs(np.asarray(a) - b).max()), state["params"]["cwt"], start
    )
    assert moved["layer_norm"].pop("bias") == 0  # its gradient is 0 (test_meta_learning)
    assert min(jax.tree.leaves(moved)) > 1e-4, moved
    assert [line["step"] for line in lines if "val_miou" in line] == [2, 4]
    assert not os.path.exists(os.path.join(metatrained, "pretrain"))  # init.backbone given
    assert not os.path.exists(os.path.join(metatrained, "results.json"))


def test_metatrain_validation_gives_the_same_numbers_without_the_feature_cache(
    metatrained, metatrain_settings, tmp_path
):
    """Validation reuses one feature cache every epoch (the default) or runs the backbone."""
    cached, _ = metatrained
    workdir = str(tmp_path / "uncached")
    experiment.run(tiny_config({**metatrain_settings, "eval.feature_cache": False}), workdir)
    names = {"loss", "val_miou", "val_support_only_miou"}
    expected, actual = read_metrics(cached), read_metrics(workdir)
    assert [line.keys() & names for line in actual] == [line.keys() & names for line in expected]
    for line, reference in zip(actual, expected, strict=True):
        for name in line.keys() & names:
            np.testing.assert_allclose(line[name], reference[name], rtol=1e-6)


def test_non_default_inner_optimizer_runs_end_to_end(settings, converted, converted_eval, tmp_path):
    workdir = str(tmp_path / "adam")
    overrides = {
        **settings,
        "mode": "eval",
        "init.backbone": converted["backbone"],
        "init.cwt": converted["cwt"],
        "inner.optimizer": "adam",
        "inner.optimizer_args": {"b1": 0.8},
        "inner.lr": 0.01,
        "eval.visualize": 3,
    }
    experiment.run(tiny_config(overrides), workdir)
    results = read_results(workdir)
    assert results["config"]["inner"]["optimizer"] == "adam"
    assert results["config"]["inner"]["optimizer_args"] == {"b1": 0.8}
    assert results["runs"] != read_results(converted_eval[0])["runs"]  # the optimiser is used

    panels = sorted(os.listdir(os.path.join(workdir, "visualize")))
    assert len(panels) == 3 and all(name.endswith(".png") for name in panels)
    lines = read_metrics(workdir)
    assert [(line["stage"], line["step"]) for line in lines] == [("eval", 0)]
    assert {"cwt_miou", "cwt_fb_iou", "support_only_miou", "support_only_fb_iou"} <= set(lines[0])
    events = list(pathlib.Path(workdir, "tb").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_meta_learned_inner_loop_runs_end_to_end_and_its_checkpoint_is_checked(
    settings, metatrain_settings, tmp_path
):
    """`metatrain.inner_gradient=full` with a learned initialisation and learning rates.

    Meta-training moves them and keeps them in its best checkpoint beside the CWT;
    evaluation reads them back; an evaluation configured for a random initialisation
    refuses that checkpoint rather than ignore what it learned.
    """
    workdir = str(tmp_path / "meta_sgd")
    learned = {"metatrain.inner_gradient": "full", "inner.init": "learned", "inner.learn_lr": True}
    experiment.run(tiny_config({**metatrain_settings, **learned, "mode": "all"}), workdir)
    best = checkpoints.load_tree(os.path.join(workdir, "metatrain", "best"))
    assert set(best) == {"params", "inner"} and set(best["inner"]) == {"init", "log_lr"}
    for leaf in best["inner"].values():
        assert leaf.shape == (2, BOTTLENECK) and np.abs(leaf).max() > 0  # moved from zeros
    assert read_results(workdir)["config"]["metatrain"]["inner_gradient"] == "full"
    evaluation = {
        **settings,
        "mode": "eval",
        "init.backbone": metatrain_settings["init.backbone"],
        "init.cwt": os.path.join(workdir, "metatrain", "best"),
    }
    with pytest.raises(
        errors.ConversionError, match=r"\['init', 'log_lr'\], where inner.init='torch'"
    ):
        experiment.run(tiny_config(evaluation), str(tmp_path / "random_init"))


def test_a_seed_gives_its_run_wherever_it_stands_and_both_resolutions_are_reported(
    settings, converted, converted_eval, tmp_path, capsys
):
    """eval.seeds=(3, 0): the run of seed 0 is the one run of the default evaluation
    (num_runs=1 from seed 0), episodes and classifier initialisations alike; with
    label_resolution=both the padded numbers lead and the original ones (the 128 px
    images, evaluated at 64) follow, in results.json, the metrics and the table."""
    workdir = tmp_path / "both"
    overrides = {
        **settings,
        "mode": "eval",
        "init.backbone": converted["backbone"],
        "init.cwt": converted["cwt"],
        "eval.seeds": (3, 0),
        "eval.label_resolution": "both",
    }
    experiment.run(tiny_config(overrides), str(workdir), report=print)
    results, default = read_results(workdir), read_results(converted_eval[0])
    assert [run["seed"] for run in results["runs"]] == [3, 0]
    assert default["runs"][0]["seed"] == 0
    for method in ("cwt", "support_only"):
        assert results["runs"][1][method] == default["runs"][0][method]
        assert results["runs"][0][method] != default["runs"][0][method]
    original = results["original_resolution"]
    assert {"miou", "fb_iou", "per_class_iou", "support_only"} <= set(original)
    assert original["miou"] == np.mean(
        [run["original_resolution"]["cwt"]["miou"] for run in results["runs"]]
    )
    assert results["protocol"] == {
        "label_resolution": "both",
        "top_level": "padded",
        "seeds": [3, 0],
        "episodes_per_run": [TINY["eval.num_episodes"]] * 2,
        "test_size": TINY["data.image_size"],
        "shot": 1,
        "inner_optimizer": TINY["inner.optimizer"],
        "inner_steps": TINY["inner.steps"],
        "inner_objective": "support",
        "objectives": {
            "support": {"optimizer": TINY["inner.optimizer"], "updates": TINY["inner.steps"]}
        },
        "aggregation": "mean ± std over runs",
    }
    assert all("original_cwt_miou" in line for line in read_metrics(workdir))
    table = capsys.readouterr().out
    assert "Labels at the padded test size (64 px):" in table
    assert "Labels at the original image size (PFENet's ori_resize):" in table


def test_exported_episodes_are_evaluated_exactly_in_order(settings, converted, tmp_path):
    export_dir = tmp_path / "export"
    experiment.run(tiny_config({**settings, "mode": "export_episodes"}), str(export_dir))
    assert os.listdir(export_dir) == ["episodes.json"]
    with open(export_dir / "episodes.json") as file:
        episodes = json.load(file)
    assert len(episodes) == TINY["eval.num_episodes"]
    for episode in episodes:
        assert set(episode) == {"class_id", "query_id", "support_ids"}
        assert episode["class_id"] in range(1, 6)  # fold 0's novel classes
        assert isinstance(episode["query_id"], str)
        assert len(episode["support_ids"]) == 1 and isinstance(episode["support_ids"][0], str)

    # Another order and a subset: what is listed runs, not what would be sampled.
    chosen = [episodes[3], episodes[0]]
    episode_file = tmp_path / "chosen.json"
    episode_file.write_text(json.dumps(chosen))
    workdir = tmp_path / "eval"
    overrides = {
        **settings,
        "mode": "eval",
        "init.backbone": converted["backbone"],
        "init.cwt": converted["cwt"],
        "eval.episodes": str(episode_file),
        "eval.num_runs": 3,
        "eval.visualize": 5,
    }
    experiment.run(tiny_config(overrides), str(workdir))
    panels = sorted(os.listdir(workdir / "visualize"))
    assert panels == [
        f"episode{index:04d}_class{episode['class_id']}.png" for index, episode in enumerate(chosen)
    ]
    results = read_results(workdir)
    assert len(results["runs"]) == 1 and results["episodes"] == [2]
    assert set(results["overridden"]) == {"eval.num_runs", "eval.num_episodes"}
    listed = {episode["class_id"] for episode in chosen}
    assert set(results["per_class_iou"]) == {str(class_id) for class_id in listed}
    assert results["classes_without_episodes"] == sorted(set(range(1, 6)) - listed)


def test_all_skips_a_finished_stage_and_eval_reads_the_stage_results(
    pretrained, settings, tmp_path, capsys
):
    """Rerunning mode=all after stage 1 finished goes on with stage 2 and evaluation."""
    workdir = str(tmp_path / "run")
    shutil.copytree(pretrained, workdir)
    pretrain_lines = read_metrics(workdir)
    experiment.run(tiny_config({**settings, "mode": "all"}), workdir)
    lines = read_metrics(workdir)
    assert lines[: len(pretrain_lines)] == pretrain_lines
    assert {line["stage"] for line in lines[len(pretrain_lines) :]} == {"metatrain", "eval"}
    assert steps_of(os.path.join(workdir, "metatrain", "latest")) == [METATRAIN_STEPS]
    results = read_results(workdir)
    assert {"miou", "fb_iou", "per_class_iou", "support_only", "runs", "config"} <= set(results)
    assert {"miou", "fb_iou"} <= set(results["support_only"])
    assert len(results["runs"]) == 1
    assert set(results["per_class_iou"]) <= {"1", "2", "3", "4", "5"}  # fold 0's novel classes
    assert results["config"]["mode"] == "all"
    (run,) = results["runs"]
    assert (results["miou"], results["support_only"]["miou"]) == (
        run["cwt"]["miou"],
        run["support_only"]["miou"],
    )

    # Provenance: what was read, with what, on what.
    assert re.fullmatch("[0-9a-f]{64}", results["data"]["fingerprint"])
    assert results["environment"]["jax"] == jax.__version__
    assert results["environment"]["opencv"] == cv2.__version__
    assert results["devices"] == {
        "kind": jax.devices()[0].device_kind,
        "count": jax.device_count(),
        "platform": "cpu",
    }

    capsys.readouterr()
    experiment.run(tiny_config({**settings, "mode": "eval"}), workdir)
    assert "meta-trained" not in capsys.readouterr().err
    again = read_results(workdir)
    assert again["runs"] == results["runs"]
    assert again["data"] == results["data"]
    assert again["config"]["mode"] == "eval"
    assert steps_of(os.path.join(workdir, "metatrain", "latest")) == [METATRAIN_STEPS]

    # Evaluating at another shot than the CWT's meta-training warns, naming both, in one
    # plain line.
    experiment.run(tiny_config({**settings, "mode": "eval", "data.shot": 2}), workdir)
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "meta-trained" in line]
    assert warning.startswith("warning: ")
    assert "meta-trained 1-shot" in warning and "evaluated 2-shot" in warning


def test_cli_eval_on_pth_files_matches_eval_on_their_orbax_conversion(
    converted_eval, torch_weights
):
    converted_workdir, pth_eval = converted_eval
    process = pth_eval.result()
    assert process.returncode == 0, process.stderr
    assert_quiet(process)
    results = read_results(next(a for a in process.args if a.startswith("--workdir="))[10:])
    assert results["config"]["init"]["backbone"] == torch_weights["backbone"]
    assert results["config"]["model"]["layers"] == list(LAYERS)
    expected = read_results(converted_workdir)
    assert results["runs"] == expected["runs"]
    assert (results["miou"], results["fb_iou"]) == (expected["miou"], expected["fb_iou"])
    assert results["support_only"]["miou"] == expected["support_only"]["miou"]
    assert any(iou > 0 for iou in results["per_class_iou"].values())


# Resumption.


def test_rerun_after_kill_between_best_and_latest_saves_completes(
    metatrain_settings, metatrained, tmp_path
):
    """A kill after `best/` got step N but before `latest/` did: the rerun redoes step N."""
    metatrained, _ = metatrained
    workdir = str(tmp_path / "run")
    shutil.copytree(metatrained, workdir)
    shutil.rmtree(os.path.join(workdir, "metatrain", "latest"))
    experiment.run(tiny_config(metatrain_settings), workdir)
    assert_trees_close(restore_state(workdir, "metatrain"), restore_state(metatrained, "metatrain"))


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGINT])
def test_rerun_after_kill_reaches_the_uninterrupted_state(metatrained, kill):
    """Killed (kill -9) or interrupted (Ctrl-C), a rerun of the same command resumes: it
    ends where the uninterrupted run ended, and its metrics hold each step once."""
    metatrained, resumed = metatrained
    (killed_code, killed_stderr), killed_at, rerun, workdir = resumed[kill].result()
    if kill == signal.SIGKILL:
        assert killed_code == -signal.SIGKILL, killed_stderr
    else:
        assert killed_code == 130, killed_stderr
        assert "Traceback" not in killed_stderr
        assert killed_stderr.strip().splitlines()[-1] == (
            f"interrupted: rerun the same command to resume from {workdir}'s last checkpoint."
        )
    assert killed_at and killed_at[-1] < METATRAIN_STEPS
    assert rerun.returncode == 0, rerun.stderr
    assert_quiet(rerun)  # it reads an orbax checkpoint (init.backbone)
    assert f"metatrain in {workdir / 'metatrain'} resumes at step {killed_at[-1]}." in rerun.stdout
    steps = [line["step"] for line in read_metrics(workdir) if "loss" in line]
    assert steps == list(range(1, METATRAIN_STEPS + 1))
    step, state = restore_state(workdir, "metatrain")
    expected_step, expected = restore_state(metatrained, "metatrain")
    assert step == expected_step == METATRAIN_STEPS
    assert_trees_close(state, expected)
    assert_trees_close(
        checkpoints.load_tree(str(workdir / "metatrain" / "best")),
        checkpoints.load_tree(os.path.join(metatrained, "metatrain", "best")),
    )


def test_rerun_of_a_finished_stage_names_the_settings_that_changed(
    pretrained, settings, tmp_path, capsys
):
    workdir = str(tmp_path / "run")
    shutil.copytree(pretrained, workdir)
    lines = read_metrics(workdir)
    experiment.run(
        tiny_config({**settings, "mode": "pretrain", "pretrain.lr": 0.05}), workdir, report=print
    )
    assert capsys.readouterr().out.splitlines()[-2:] == [
        f"pretrain in {workdir}/pretrain is finished: reusing it, although these settings "
        "differ from its own: pretrain.lr (0.02 there, 0.05 now).",
        f"pretrain: the best checkpoint, step {steps_of(f'{workdir}/pretrain/best')[-1]} "
        f"(validation mIoU {best_miou(workdir):.4f}), is in {workdir}/pretrain/best",
    ]
    assert read_metrics(workdir) == lines


def best_miou(workdir):
    return max(line["val_miou"] for line in read_metrics(workdir) if "val_miou" in line)


def test_validation_never_uses_an_evaluation_episode(tmp_path):
    """novel_val: other episodes of the same classes and split; base_holdout: base classes
    on train images meta-training does not see."""
    overrides = {"metatrain.val_episodes": 8, "eval.num_runs": 2, "data.synthetic_train": 400}
    config = tiny_config({**overrides, "data.cache_dir": str(tmp_path)})
    inputs = input_pipeline.prepare(config.data, config.seed, str(tmp_path))
    evaluated = [
        (spec["class_id"], spec["query_id"], tuple(spec["support_ids"]))
        for run in evaluate.evaluation_runs(config, inputs, None)
        for spec in run
    ]
    train, val, specs = metatrain.validation_episodes(config, inputs)
    assert (train, val) == (inputs.train, inputs.val) and len(specs) == 8
    assert {s["class_id"] for s in specs} <= set(inputs.test_classes)
    validated = [(s["class_id"], s["query_id"], tuple(s["support_ids"])) for s in specs]
    assert not set(validated) & set(evaluated)

    config.metatrain.val_source, config.metatrain.holdout_fraction = "base_holdout", 0.5
    train, held_out, specs = metatrain.validation_episodes(config, inputs)
    assert len(train) + len(held_out) == len(inputs.train)
    assert not set(train.ids) & set(held_out.ids)
    assert {s["class_id"] for s in specs} <= set(inputs.classes.base)
    assert {i for s in specs for i in (s["query_id"], *s["support_ids"])} <= set(held_out.ids)


# User errors: one line naming the culprit, no traceback, non-zero exit, no work done.


def error_cases(root, torch_weights, settings):
    """{case: (overrides, work dir, texts the message names)} of inputs that stop a run.

    Each case has a fresh data cache, so a dataset built before the error shows; but
    init.resnet is read by stage 1 only: that case reads the shared dataset.
    """
    (root / "a_file").write_text("")
    (root / "empty_folder").mkdir()
    cases = {
        "dataset_root": (
            {
                "data.dataset": "pascal",
                "data.root": str(root / "no_voc"),
                "init.backbone": torch_weights["backbone"],
                "init.cwt": torch_weights["cwt"],
            },
            [str(root / "no_voc")],
        ),
        "eval_without_stage_2": (  # a stage's missing result is found before the data
            {"init.backbone": torch_weights["backbone"]},
            ["No metatrain result in", "set init.cwt to a checkpoint or run mode=metatrain"],
        ),
        "metatrain_without_stage_1": (
            {"mode": "metatrain"},
            ["No pretrain result in", "set init.backbone"],
        ),
        "backbone_missing": (
            {"init.backbone": str(root / "missing.pth")},
            ["init.backbone", "missing.pth"],
        ),
        "resnet_missing": (
            {
                "mode": "pretrain",
                "init.resnet": str(root / "missing_resnet.pth"),
                "data.cache_dir": settings["data.cache_dir"],
            },
            ["init.resnet", "missing_resnet.pth"],
        ),
        "backbone_misfit": ({"init.backbone": torch_weights["deeper"]}, ["deeper.pth"]),
        "backbone_not_a_checkpoint": (
            {"init.backbone": str(root / "empty_folder")},
            [f"init.backbone={root / 'empty_folder'} is not an orbax checkpoint"],
        ),
        "cwt_misfit": ({"init.cwt": torch_weights["heads"]}, ["init.cwt", "heads.pth"]),
        "optimizer": ({"inner.optimizer": "adamx"}, ["inner.optimizer", "adamx"]),
        "optimizer_argument": (
            {"inner.optimizer": "adam", "inner.optimizer_args": {"momentum": 0.9}},
            ["inner.optimizer_args.momentum is not an argument of optax.adam"],
        ),
        "optimizer_argument_type": (
            {"inner.optimizer": "adam", "inner.optimizer_args": {"b1": "high"}},
            ["inner.optimizer_args.b1='high'", "optax.adam"],
        ),
        "workdir": ({}, ["--workdir", str(root / "a_file" / "run")]),
        "learned_without_inner_gradient": (
            {"mode": "metatrain", "inner.init": "learned", "inner.learn_lr": True},
            ["inner.init=learned and inner.learn_lr=True need metatrain.inner_gradient"],
        ),
        "inner_gradient_without_learning": (
            {"mode": "metatrain", "metatrain.inner_gradient": "full"},
            ["metatrain.inner_gradient=full has nothing to train"],
        ),
        "inner_params_lr_scale_without_learning": (
            {"mode": "metatrain", "metatrain.inner_params_lr_scale": 10.0},
            ["metatrain.inner_params_lr_scale=10.0 scales nothing"],
        ),
        "inner_params_lr_scale_not_positive": (
            {
                "mode": "metatrain",
                "metatrain.inner_gradient": "full",
                "inner.learn_lr": True,
                "metatrain.inner_params_lr_scale": 0.0,
            },
            ["metatrain.inner_params_lr_scale=0.0 must be a positive number"],
        ),
        "learned_init_from_pth": (
            {"inner.init": "learned", "init.cwt": torch_weights["cwt"]},
            ["init.cwt", "cwt.pth", "inner.init='learned'"],
        ),
    }
    return {
        case: (
            {**TINY, "mode": "eval", "data.cache_dir": str(root / f"{case}_tfds"), **overrides},
            root / "a_file" / "run" if case == "workdir" else root / case,
            expected,
        )
        for case, (overrides, expected) in cases.items()
    }


def assert_no_work_done(overrides, workdir, shared_cache):
    cache_dir = pathlib.Path(overrides["data.cache_dir"])
    if cache_dir != pathlib.Path(shared_cache):
        assert not cache_dir.exists()  # no dataset was built
    for output in ("results.json", "metrics.jsonl", "tb", "pretrain", "metatrain"):
        assert not (workdir / output).exists()


@pytest.mark.parametrize(
    "case",
    [
        "dataset_root",
        "eval_without_stage_2",
        "metatrain_without_stage_1",
        "backbone_missing",
        "resnet_missing",
        "backbone_misfit",
        "backbone_not_a_checkpoint",
        "cwt_misfit",
        "optimizer",
        "optimizer_argument",
        "optimizer_argument_type",
        "workdir",
        "learned_without_inner_gradient",
        "inner_gradient_without_learning",
        "inner_params_lr_scale_without_learning",
        "inner_params_lr_scale_not_positive",
        "learned_init_from_pth",
    ],
)
def test_user_error_stops_the_run_before_any_work(settings, torch_weights, tmp_path, case):
    overrides, workdir, expected = error_cases(tmp_path, torch_weights, settings)[case]
    with pytest.raises(errors.USER_ERRORS) as error:
        experiment.run(tiny_config(overrides), str(workdir))
    for text in expected:
        assert text in str(error.value)
    assert "\n" not in str(error.value)
    assert_no_work_done(overrides, workdir, settings["data.cache_dir"])


@pytest.mark.parametrize("case", ["optimizer", "backbone_not_a_checkpoint"])
def test_command_line_error_is_one_line_without_traceback(
    settings, torch_weights, subprocess_env, tmp_path, case
):
    """The command line's path for every user error: optimiser arguments given as flags,
    one checked against the optimiser's signature; a folder that is not a checkpoint,
    which orbax would report with warnings and a traceback."""
    overrides, workdir, _ = error_cases(tmp_path, torch_weights, settings)[case]
    expected = {
        "optimizer": "error: inner.optimizer_args.eps='tiny' is not of the type of optax.adam's "
        "default, 1e-08.",
        "backbone_not_a_checkpoint": f"error: init.backbone={tmp_path / 'empty_folder'} is not "
        "an orbax checkpoint; give a converted checkpoint (python -m cwt_jax.convert), a run's "
        "pretrain/best or metatrain/best, or a .pth file.",
    }[case]
    if case == "optimizer":
        overrides = {**overrides, "inner.optimizer": "adam", "inner.optimizer_args.eps": "tiny"}
    process = run_cli(workdir, overrides, subprocess_env, timeout=300)
    assert process.returncode == 1
    assert "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines() == [expected]
    assert_no_work_done(overrides, workdir, settings["data.cache_dir"])


def parse_command_line(argv, monkeypatch):
    """`cli.parse_flags` on a flag registry of its own; returns the config or the exit."""
    values = absl_flags.FlagValues()
    holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values)
    monkeypatch.setattr(sys, "argv", list(argv))  # config_flags reads its overrides there
    try:
        cli.parse_flags(list(argv), values)
    except SystemExit as exit:
        return str(exit)
    return holder.value


def test_print_config_lists_every_key_with_the_overrides_and_runs_nothing():
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "cwt_jax.main",
            f"--config={CONFIG_FILE}",
            "--config.inner.steps=7",
            "--config.model.layers=(2,1,1,1)",
            "--print_config",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    lines = process.stdout.splitlines()
    assert "--config.inner.steps=7" in lines and "--config.model.layers=(2, 1, 1, 1)" in lines
    assert "--config.data.dataset='synthetic'" in lines
    assert len(lines) == len(traverse_util.flatten_dict(common.synthetic(0, 1).to_dict()))


def test_command_line_takes_a_config_file_from_anywhere(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    config = parse_command_line(
        [
            "main",
            f"--config={REPO / CONFIG_FILE}",
            "--config.inner.optimizer=adam",
            "--config.inner.optimizer_args.b1=0.8",
            "--config.inner.optimizer_args.eps_root=1e-9",
            "--config.eval.seeds=(3,0)",
        ],
        monkeypatch,
    )
    assert config.eval.seeds == (3, 0)
    assert config.inner.optimizer == "adam"
    assert config.inner.optimizer_args.to_dict() == {"b1": 0.8, "eps_root": 1e-9}
    optimizers.from_config(config.inner, "inner")  # what config_checks.validate does


@pytest.mark.parametrize(
    "config_file, layers, expected",
    [
        ("configs/pascal_fold0_1shot.py", ["(3,4,6,3)"], (3, 4, 6, 3)),  # a depth there
        ("configs/pascal_fold0_1shot.py", ["1,1,1,1"], (1, 1, 1, 1)),
        ("configs/synthetic_fold0_1shot.py", ["101"], 101),  # block counts there
        ("configs/synthetic_fold0_1shot.py", ["50", "(1,2,1,1)"], (1, 2, 1, 1)),  # last wins
    ],
)
def test_model_layers_takes_a_depth_or_block_counts_in_any_config(
    config_file, layers, expected, monkeypatch
):
    config = parse_command_line(
        ["main", f"--config={REPO / config_file}", *(f"--config.model.layers={v}" for v in layers)],
        monkeypatch,
    )
    assert config.model.layers == expected
    assert models.from_config(config.model).layers == expected


@pytest.mark.parametrize(
    "argument, message",
    [
        ("--config=configs/no_such_config.py", "error: --config=configs/no_such_config.py does"),
        ("--config.data.no_such_key=1", "error: --config.data.no_such_key names no config key"),
        (
            "--config.no_section.optimizer_args.b1=1",
            "error: --config.no_section.optimizer_args.b1 names no config key",
        ),
        (
            "--config.inner.optimiser=adam",
            "error: --config.inner.optimiser names no config key; did you mean "
            "--config.inner.optimizer?",
        ),
        (
            "--config.inerr.steps=3",
            "error: --config.inerr.steps names no config key; did you mean --config.inner.steps?",
        ),
        (  # only the unknown key is blamed, not the valid one beside it
            "--config.model.encoder=x --config.init.backbone=y",
            "error: --config.model.encoder names no config key; see configs/common.py for the "
            "keys.",
        ),
    ],
)
def test_command_line_names_a_missing_file_or_key(monkeypatch, argument, message):
    monkeypatch.chdir(REPO)
    argv = ["main", argument if argument.startswith("--config=") else f"--config={CONFIG_FILE}"]
    if not argument.startswith("--config="):
        argv += argument.split()
    error = parse_command_line(argv, monkeypatch)
    assert error.startswith(message) and "\n" not in error and "\\" not in error


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        ({"init.cwt": "missing_cwt"}, FileNotFoundError, "init.cwt=missing_cwt does not exist"),
        ({"model.width": 2 * WIDTH}, errors.ConversionError, "init.backbone=.* does not fit"),
        ({"cwt.heads": 2 * HEADS}, errors.ConversionError, "init.cwt=.* does not fit"),
        ({"mode": "train"}, errors.ConfigError, "mode='train' is not one of"),
        ({"eval.cache_batch_size": 0}, errors.ConfigError, "cache_batch_size=0 must be"),
        ({"eval.cache_memory": "disk"}, errors.ConfigError, "cache_memory='disk' is not"),
        ({"metatrain.val_source": "test"}, errors.ConfigError, "val_source='test' is not"),
        ({"eval.label_resolution": "full"}, errors.ConfigError, "label_resolution='full' is not"),
        ({"eval.seeds": (1, 2, 1)}, errors.ConfigError, r"seeds=\(1, 2, 1\) repeats a seed"),
        ({"eval.seeds": (1, 2.5)}, errors.ConfigError, r"seeds=\(1, 2.5\) must hold integers"),
    ],
)
def test_inputs_are_checked_before_any_work(
    converted, settings, overrides, error, message, tmp_path
):
    """Misfits of converted orbax checkpoints and bad values, in every mode's checks."""
    config = tiny_config(
        {
            **settings,
            "mode": "all" if "metatrain.val_source" in overrides else "eval",
            "init.backbone": converted["backbone"],
            "init.cwt": converted["cwt"],
            **overrides,
        }
    )
    with pytest.raises(error, match=message):
        experiment.run(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "results.json").exists()
    assert not (tmp_path / "run" / "tb").exists()


# Scripts.


def dry_run_script(script, arguments, directory):
    """Runs scripts/<script> in `directory` with CWT_DRY_RUN=1 (prints its command)."""
    return subprocess.run(
        ["bash", str(REPO / "scripts" / script), *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        env={**os.environ, "CWT_DRY_RUN": "1"},
    )


@pytest.mark.parametrize(
    "script, arguments, expected",
    [
        (
            "train.sh",
            ["pascal", "2", "0,1", "101", "5", "--config.seed=3"],
            "CUDA_VISIBLE_DEVICES=0,1 python -m cwt_jax.main "
            "--config=REPO/configs/pascal_fold2_5shot.py "
            "--workdir=runs/pascal_fold2_5shot_resnet101 "
            "--config.model.layers=101 --config.mode=all --config.seed=3",
        ),
        (
            "train.sh",
            ["synthetic", "1", "0", "1,1,1,1", "5"],
            "CUDA_VISIBLE_DEVICES=0 python -m cwt_jax.main "
            "--config=REPO/configs/synthetic_fold0_1shot.py "
            "--workdir=runs/synthetic_fold1_5shot_resnet1-1-1-1 "
            r"--config.model.layers=\(1\,1\,1\,1\) "
            "--config.mode=all --config.data.fold=1 --config.data.shot=5",
        ),
        (
            "test.sh",
            ["coco", "1", "3", "50", "0", "--config.init.cwt=my weights/cwt.pth"],
            "CUDA_VISIBLE_DEVICES=3 python -m cwt_jax.main "
            "--config=REPO/configs/coco_fold0_1shot.py --workdir=runs/coco_fold0_1shot_resnet50 "
            r"--config.model.layers=50 --config.mode=eval --config.init.cwt=my\ weights/cwt.pth",
        ),
    ],
)
def test_scripts_build_the_main_command(script, arguments, expected, tmp_path):
    """From any directory: the config is the repository's, the work dir is local."""
    process = dry_run_script(script, arguments, tmp_path)
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == expected.replace("REPO", str(REPO))
    assert pathlib.Path(process.stdout.split("--config=")[1].split()[0]).is_file()


@pytest.mark.parametrize(
    "script, arguments",
    [
        ("train.sh", ["pascal", "0", "0", "50"]),
        ("test.sh", []),
        ("train.sh", ["voc", "0", "0", "50", "1"]),
        ("test.sh", ["pascal", "1", "0", "1,2", "0"]),
    ],
)
def test_scripts_refuse_wrong_arguments_with_their_usage(script, arguments, tmp_path):
    process = dry_run_script(script, arguments, tmp_path)
    assert process.returncode == 2
    assert process.stderr.startswith(f"usage: scripts/{script} {{pascal|coco|synthetic}}")
    assert process.stdout == ""
    help_process = dry_run_script(script, ["--help"], tmp_path)
    assert help_process.returncode == 0
    assert help_process.stdout == process.stderr


def test_a_failed_script_run_leaves_nothing_behind(subprocess_env, tmp_path):
    """A run that stops on a user error (here: no stage-1 result to evaluate, found before
    the missing VOC2012 folder is looked at) removes the work dirs it made."""
    process = subprocess.run(
        ["bash", str(REPO / "scripts" / "test.sh"), "pascal", "1", "0", "1,1,1,1", "0"]
        + [f"--config.data.root={tmp_path / 'no_voc'}"],
        cwd=tmp_path,
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 1
    message = process.stderr.strip().splitlines()[-1]
    assert message.startswith("error: No pretrain result in runs/pascal_fold0_1shot_resnet")
    assert message.endswith("set init.backbone to a checkpoint or run mode=pretrain first.")
    assert os.listdir(tmp_path) == []


def test_python_scripts_run_from_any_directory_without_pythonpath(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    process = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "random_weights.py")]
        + [f"--config={REPO / CONFIG_FILE}", f"--output_dir={tmp_path / 'weights'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.splitlines() == [
        f"Wrote random backbone and cwt checkpoints of the config to {tmp_path / 'weights'}"
    ]
    assert sorted(os.listdir(tmp_path / "weights")) == ["backbone", "cwt"]
