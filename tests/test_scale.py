"""Batched, sharded and cached evaluation give the numbers of one episode at a time."""

import collections
import json
import logging
import os
import pathlib
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import common
from cwt_jax import data, models
from cwt_jax.data import input_pipeline
from cwt_jax.evaluation import evaluate, feature_source, results
from cwt_jax.evaluation.metric_writer import MetricWriter
from cwt_jax.fewshot import inner
from cwt_jax.models import cwt
from cwt_jax.weights import checkpoints

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZE, SHOT, EPISODES = 64, 2, 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = common.synthetic(fold=0, shot=SHOT)
    config.model.layers, config.model.width, config.model.bottleneck_dim = (1, 1, 1, 1), 8, 16
    config.cwt.heads, config.inner.steps = 2, 10
    model = models.from_config(config.model)
    cache_dir = str(tmp_path_factory.mktemp("tfds"))
    dataset_dir = data.prepare_synthetic(
        cache_dir, seed=0, num_train=20, num_val=80, image_size=128
    )
    val = data.open_split(dataset_dir, "val")
    classes = data.class_split("synthetic", 0).novel
    specs = data.sample_episode_list(val, classes, shot=SHOT, num_episodes=EPISODES, seed=0)
    return {
        "config": config,
        "cache_dir": cache_dir,
        "model": model,
        "backbone": models.init_variables(model, jax.random.key(0)),
        "params": {"cwt": cwt.init(jax.random.key(1), 16, 2), "inner": {}},
        "val": val,
        "specs": specs,
    }


def run(setup, batch_size, cache=None, model=None, cache_batch_size=4, original=False):
    """Evaluates the setup's episodes; `cache` is None or an `eval.cache_memory`;
    `original` counts at the original resolution too."""
    config = setup["config"].copy_and_resolve_references()
    config.data.image_size, config.data.num_workers = SIZE, 0
    config.eval.episodes_per_step, config.eval.cache_batch_size = batch_size, cache_batch_size
    config.eval.feature_cache, config.eval.cache_memory = cache is not None, cache or "device"
    source = feature_source.make(
        config,
        model or setup["model"],
        setup["backbone"],
        setup["val"],
        [setup["specs"]],
        original_masks=original,
    )
    if cache:
        arrays = source.cache.arrays
        if cache == "host":  # NumPy in host memory; features come with the batches
            assert isinstance(arrays["features"], np.ndarray)
        else:  # on the step's devices: split (each holds its share of every pass) or whole
            passes, pass_size, *feature_shape = arrays["features"].shape
            devices = jax.devices()[: np.gcd(batch_size, jax.device_count())]
            assert pass_size == -(-cache_batch_size // len(devices)) * len(devices)  # rounded up
            share = pass_size // len(devices) if cache == "device" else pass_size
            assert arrays["features"].sharding.device_set == set(devices)
            for shard in arrays["features"].addressable_shards:
                assert shard.data.shape == (passes, share, *feature_shape)
    results, _ = evaluate.run_episodes(
        evaluate.make_scores(model or setup["model"], inner.from_config(config)),
        source,
        setup["params"],
        setup["specs"],
        batch_size=batch_size,
        run_key=jax.random.key(3),
    )
    return results


def assert_same_results(actual, expected):
    """Equal to a query pixel.

    XLA's CPU convolutions round differently for different numbers of images per device
    (features ~1e-5 apart here), which can flip a pixel on the decision boundary; a pixel
    moves a class IoU by under 1e-3 here, an episode counted twice, dropped or out of
    place by far more.
    """
    assert actual.keys() == expected.keys()
    if "original_resolution" in expected:
        assert_same_results(actual["original_resolution"], expected["original_resolution"])
    for method in results.methods_of(expected):
        np.testing.assert_allclose(actual[method]["miou"], expected[method]["miou"], atol=1e-3)
        np.testing.assert_allclose(actual[method]["fb_iou"], expected[method]["fb_iou"], atol=1e-3)
        assert actual[method]["per_class_iou"].keys() == expected[method]["per_class_iou"].keys()
        for class_id, value in expected[method]["per_class_iou"].items():
            np.testing.assert_allclose(actual[method]["per_class_iou"][class_id], value, atol=1e-3)


def test_results_do_not_depend_on_batch_size_or_devices(setup):
    """B = 1 runs on one device; B = 8 and 16 shard the episodes over the 4 CPU devices;
    B = 3 and 6 leave a partial last batch (on one and two devices), padded and masked."""
    assert jax.device_count() == 4  # tests/conftest.py
    reference = run(setup, 1)
    assert 0 < reference["cwt"]["miou"] < 1
    for batch_size in (8, 16, 3, 6):
        assert_same_results(run(setup, batch_size), reference)
    assert_same_results(run(setup, 6, cache="device"), reference)


@pytest.mark.parametrize(
    "cache, batch_size, cache_batch_size",
    [("device", 1, 4), ("device", 4, 4), ("device", 4, 6), ("replicated", 4, 4), ("host", 4, 4)],
)
def test_feature_cache_gives_the_same_numbers(setup, cache, batch_size, cache_batch_size):
    """B = 1 holds the cache on one device; B = 4 splits it over the 4 CPU devices, in
    passes of 4 images, or of 8 where 6 are asked for, or copies it to each."""
    cached = run(setup, batch_size, cache=cache, cache_batch_size=cache_batch_size)
    assert_same_results(cached, run(setup, batch_size))


def test_original_resolution_does_not_depend_on_batch_size_devices_or_source(setup):
    """The queries' original masks (128 px, evaluated at 64) come from the backbone's
    batches or from the cache, split over 2 or 4 devices, with a padded last batch; the
    padded test size's numbers stay those of a run without them."""
    reference = run(setup, 1, original=True)
    original = reference.pop("original_resolution")
    assert_same_results(reference, run(setup, 1))
    assert 0 < original["cwt"]["miou"] < 1 and original != reference
    reference["original_resolution"] = original
    assert_same_results(run(setup, 6, cache="device", original=True), reference)
    assert_same_results(run(setup, 8, cache="host", original=True), reference)
    assert_same_results(run(setup, 8, original=True), reference)


def test_bfloat16_backbone_stays_close(setup):
    config = setup["config"].copy_and_resolve_references()
    config.model.dtype = "bfloat16"
    float32 = run(setup, 8, cache="device")
    bfloat16 = run(setup, 8, cache="device", model=models.from_config(config.model))
    assert abs(bfloat16["cwt"]["miou"] - float32["cwt"]["miou"]) < 0.05


BENCHMARK_MEASUREMENTS = {
    "eval": (
        "backbone_flop_per_s",
        "backbone_images_per_s",
        "eval_episodes_per_s",
        "eval_cached_episodes_per_s",
        "eval_compile_s",
        "eval_flops_per_episode",
        "eval_flop_per_s",
    ),
    "metatrain": ("metatrain_episodes_per_s", "metatrain_compile_s"),
    "pretrain": ("pretrain_images_per_s", "pretrain_compile_s"),
}


@pytest.mark.parametrize("stages", [(), ("metatrain",)])
def test_benchmark_prints_the_measurements_of_its_stages(stages):
    overrides = {
        "model.layers": "(1,1,1,1)",
        "model.width": 4,
        "model.bottleneck_dim": 8,
        "cwt.heads": 1,
        "data.image_size": 33,
        "pretrain.image_size": 33,
        "pretrain.batch_size": 2,
        "eval.episodes_per_step": 2,
        "metatrain.episodes_per_step": 2,
        "inner.steps": 3,
    }
    command = [
        sys.executable,
        "-m",
        "cwt_jax.benchmark",
        "--config=configs/synthetic_fold0_1shot.py",
        "--repeats=1",
        *(f"--stages={stage}" for stage in stages),
        *(f"--config.{key}={value}" for key, value in overrides.items()),
    ]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    results = json.loads(completed.stdout)
    assert results["peak_memory_bytes"] > 0
    for stage, keys in BENCHMARK_MEASUREMENTS.items():
        for key in keys:
            if stage in (stages or BENCHMARK_MEASUREMENTS):
                assert results[key] > 0, key
            else:
                assert key not in results, key


def test_gpu_report_writes_a_line_per_step_and_skips_what_the_budget_leaves_no_time_for(
    tmp_path,
):
    script = [sys.executable, "scripts/gpu_report.py", str(tmp_path / "out")]
    workdir = f"--workdir={tmp_path / 'work'}"
    subprocess.run([*script, "--steps=env", workdir], cwd=REPO, check=True, capture_output=True)
    subprocess.run(
        [*script, "--steps=eval_cold,bench_1shot", "--seconds=5", workdir],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    lines = (tmp_path / "out" / "report.jsonl").read_text().splitlines()
    env, eval_cold, bench = map(json.loads, lines)
    assert env["results"][0]["returncode"] == 0
    assert env["results"][0]["versions"]["jax"] == jax.__version__
    for skipped in (eval_cold, bench):
        assert "skipped" in skipped["results"][0]
    assert not (tmp_path / "work").exists()  # nothing ran
    failed = subprocess.run([*script, "--steps=eval_hot"], cwd=REPO, capture_output=True, text=True)
    assert failed.returncode == 2 and "unknown steps ['eval_hot']" in failed.stderr


def eval_command(setup, workdir, weights, **overrides):
    """`cwt_jax.main` evaluating the setup's model and episodes' dataset (16 episodes)."""
    config = setup["config"]
    settings = {
        "mode": "eval",
        "seed": 0,
        "data.shot": SHOT,
        "data.image_size": SIZE,
        "data.synthetic_train": 20,
        "data.synthetic_val": 80,
        "data.synthetic_size": 128,
        "data.cache_dir": setup["cache_dir"],
        "data.num_workers": 0,
        "model.layers": str(config.model.layers).replace(" ", ""),
        "model.width": config.model.width,
        "model.bottleneck_dim": config.model.bottleneck_dim,
        "cwt.heads": config.cwt.heads,
        "inner.steps": config.inner.steps,
        "eval.num_runs": 1,
        "eval.num_episodes": EPISODES,
        "eval.episodes_per_step": 8,
        "init.backbone": weights / "backbone",
        "init.cwt": weights / "cwt",
        "compilation_cache_dir": "",
        **overrides,
    }
    return [
        sys.executable,
        "-m",
        "cwt_jax.main",
        "--config=configs/synthetic_fold0_1shot.py",
        f"--workdir={workdir}",
        *(f"--config.{key}={value}" for key, value in settings.items()),
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def weights(setup, tmp_path_factory):
    """The setup's random backbone and CWT as orbax checkpoints."""
    directory = tmp_path_factory.mktemp("weights")
    checkpoints.save_tree(str(directory / "backbone"), setup["backbone"])
    checkpoints.save_tree(str(directory / "cwt"), {"params": setup["params"]["cwt"]})
    return directory


@pytest.fixture(scope="module")
def one_process_results(setup, weights, tmp_path_factory):
    """results.json of the evaluation in one process of 4 CPU devices."""
    workdir = tmp_path_factory.mktemp("one_process")
    completed = subprocess.run(
        eval_command(setup, workdir, weights),
        cwd=REPO,
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads((workdir / "results.json").read_text())


@pytest.mark.parametrize("cache", ["device", "host", None])
def test_two_processes_give_the_numbers_of_one(
    setup, weights, one_process_results, tmp_path, cache
):
    """Two local processes of 2 CPU devices each (jax.distributed, gloo collectives).

    Both prepare the dataset, in one cache folder that starts empty.
    """
    settings = {
        "data.cache_dir": tmp_path / "tfds",
        "eval.feature_cache": cache is not None,
        "eval.cache_memory": cache or "device",
        "distributed.enabled": True,
        "distributed.coordinator_address": f"localhost:{free_port()}",
        "distributed.num_processes": 2,
    }
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    processes = []
    for i, log in enumerate(logs):
        with open(log, "w") as output:  # files, not pipes: an unread pipe can block a process
            processes.append(
                subprocess.Popen(
                    eval_command(
                        setup, tmp_path, weights, **settings, **{"distributed.process_id": i}
                    ),
                    cwd=REPO,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                )
            )
    for process, log in zip(processes, logs, strict=True):
        process.wait(timeout=300)
        assert process.returncode == 0, log.read_text()[-3000:]
    one, two = one_process_results, json.loads((tmp_path / "results.json").read_text())
    assert 0 < one["miou"] < 1
    # Equal to a query pixel: XLA's CPU convolutions round differently with 4 devices in
    # one process than with 2 in each of two (features 2e-7 apart; 2 x 2 gives the bits
    # of one device), which can flip a pixel on the decision boundary. A pixel moves a
    # class IoU by under 1e-3 here; images or episodes out of place move it by far more.
    for method in ("cwt", "support_only"):
        expected, actual = (one, two) if method == "cwt" else (one[method], two[method])
        assert actual["per_class_iou"].keys() == expected["per_class_iou"].keys()
        np.testing.assert_allclose(actual["miou"], expected["miou"], atol=1e-3)
        for class_id, value in expected["per_class_iou"].items():
            np.testing.assert_allclose(actual["per_class_iou"][class_id], value, atol=1e-3)


def test_a_full_evaluation_compiles_each_program_once(setup, tmp_path, caplog):
    """Each program of an evaluation of two runs (the backbone, the feature cache's
    allocation, write and gather, the scores) compiles once; a second evaluation in the
    same process, as meta-training's validations and the evaluation after them, compiles
    none of them again."""
    config = setup["config"].copy_and_resolve_references()
    config.data.image_size, config.data.num_workers = 56, 0  # a size no other test uses
    config.eval.num_runs, config.eval.num_episodes, config.eval.episodes_per_step = 2, 6, 4
    config.eval.cache_batch_size, config.eval.visualize = 4, 0
    classes = data.class_split("synthetic", 0)
    inputs = input_pipeline.Inputs(
        setup["val"], setup["val"], classes, classes.novel, base_val=setup["val"]
    )
    writer = MetricWriter(str(tmp_path))
    ours = ("_apply_eval", "_zeros_on_devices", "_write_on_devices", "gather", "scores")

    def compiled(logs):
        names = collections.Counter(re.findall(r"Compiling jit\(([^)]+)\)", logs))
        return {name: names[name] for name in ours}

    arguments = (
        config,
        setup["model"],
        inner.from_config(config),
        inputs,
        setup["backbone"],
        setup["params"],
        str(tmp_path),
        writer,
        None,
        print,
    )
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax._src.interpreters.pxla"):
            first_summary = evaluate.evaluate(*arguments)
            first, caplog_text = compiled(caplog.text), caplog.text
            caplog.clear()
            second_summary = evaluate.evaluate(*arguments)
            second = compiled(caplog.text)
    finally:
        jax.config.update("jax_log_compiles", False)
        writer.close()
    assert first == dict.fromkeys(ours, 1), "\n".join(
        re.findall(r"Compiling jit\(\S+", caplog_text)
    )
    assert second == dict.fromkeys(ours, 0)
    # results.json's timing counts what was built: ours and JAX's small programs, then none.
    assert first_summary["timing"]["programs"] >= len(ours)
    assert second_summary["timing"]["programs"] == 0


def test_an_empty_cache_dir_disables_the_cache_that_jax_compilation_cache_dir_names(tmp_path):
    program = (
        "import sys, jax; from cwt_jax import compilation; "
        "compilation.use_cache(sys.argv[1]); jax.jit(lambda x: x * 3 + 1)(2.0).block_until_ready()"
    )
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "from_env"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    for argument in ("", str(tmp_path / "named")):
        subprocess.run([sys.executable, "-c", program, argument], env=env, check=True)
    assert not (tmp_path / "from_env").exists() or not os.listdir(tmp_path / "from_env")
    assert os.listdir(tmp_path / "named")  # the named cache is written


def test_a_second_run_reads_every_program_from_the_compilation_cache(setup, weights, tmp_path):
    """`compilation_cache_dir`: the first run fills it, the same run again adds nothing."""
    cache = tmp_path / "xla"
    env = {key: value for key, value in os.environ.items() if key != "JAX_COMPILATION_CACHE_DIR"}
    entries, timings = [], []
    for run in ("cold", "warm"):
        command = eval_command(setup, tmp_path / run, weights, compilation_cache_dir=cache)
        completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert completed.returncode == 0, completed.stderr[-3000:]
        entries.append(sorted(os.listdir(cache)))
        timings.append(json.loads((tmp_path / run / "results.json").read_text())["timing"])
        assert f"{timings[-1]['programs']} XLA programs built" in completed.stdout
    assert entries[0] and entries[1] == entries[0]
    cold, warm = timings
    assert cold["programs"] > 0 and cold["cache_hits"] == 0
    assert warm["cache_hits"] == warm["programs"] == cold["programs"]
