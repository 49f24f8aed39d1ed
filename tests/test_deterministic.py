"""`config.deterministic`: the same bits on one core and on all, and under an ISA cap.

Each setting is a process of its own (XLA reads its flags when JAX starts): the shrunken
main job of tests/test_main.py in the deterministic mode, then the default mode's
evaluation of its checkpoints, on all cores, on one (`taskset -c 0`) and with
`XLA_FLAGS=--xla_cpu_max_isa=AVX2`. The runs share one compilation cache; a program
compiled under other XLA flags has another cache key.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_main import TINY, tiny_config

from cwt_jax import compilation, errors, experiment
from cwt_jax.data import input_pipeline

REPO = pathlib.Path(__file__).resolve().parents[1]
# The machine as it is, one of its cores, and a CPU without AVX-512 (as far as XLA's own
# code is concerned).
SETTINGS = {
    "all_cores": ([], ""),
    "one_core": (["taskset", "-c", "0"], ""),
    "avx2": ([], "--xla_cpu_max_isa=AVX2"),
}


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The tiny synthetic dataset and a compilation cache, for every run of the module."""
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    config = tiny_config({"data.cache_dir": data_dir, "compilation_cache_dir": ""})
    input_pipeline.prepare(config.data, config.seed, data_dir)
    return {
        **TINY,
        "data.cache_dir": data_dir,
        "compilation_cache_dir": str(tmp_path_factory.mktemp("xla_cache")),
    }


def run_main(workdir, overrides, setting):
    """`python -m cwt_jax.main` on the synthetic config in `setting` (a SETTINGS key)."""
    prefix, xla_flags = SETTINGS[setting]
    process = subprocess.run(
        [
            *prefix,
            sys.executable,
            "-m",
            "cwt_jax.main",
            "--config=configs/synthetic_fold0_1shot.py",
            f"--workdir={workdir}",
            *(f"--config.{key}={value}" for key, value in overrides.items()),
        ],
        cwd=REPO,
        env={**os.environ, "XLA_FLAGS": xla_flags},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr
    with open(os.path.join(workdir, "results.json")) as file:
        results = json.load(file)
    with open(os.path.join(workdir, "metrics.jsonl")) as file:
        metrics = [json.loads(line) for line in file]
    return results, metrics


def per_class(results):
    """Every run's per-class IoU of both classifiers, as floats."""
    return [
        {method: run[method]["per_class_iou"] for method in ("cwt", "support_only")}
        for run in results["runs"]
    ]


@pytest.fixture(scope="module")
def trained(shared, tmp_path_factory):
    """The deterministic mode's main job (stage 1, stage 2, evaluation) in each setting."""
    overrides = {**shared, "mode": "all", "deterministic": True}
    runs = {}
    for setting in SETTINGS:
        workdir = tmp_path_factory.mktemp(setting)
        runs[setting] = (workdir, *run_main(workdir, overrides, setting))
    return runs


def test_deterministic_training_is_bit_identical_on_one_core_and_under_an_isa_cap(trained):
    _, expected_results, expected_metrics = trained["all_cores"]
    assert expected_results["config"]["deterministic"] is True
    for setting, (_, results, metrics) in trained.items():
        flags = results["environment"]["xla_flags"].split()
        assert flags[-len(compilation.DETERMINISTIC_XLA_FLAGS) :] == list(
            compilation.DETERMINISTIC_XLA_FLAGS
        ), setting
        # Every stage-1 and stage-2 loss and validation, and every class's IoU, to the bit.
        assert metrics == expected_metrics, setting
        assert per_class(results) == per_class(expected_results), setting
        assert results["miou"] == expected_results["miou"], setting
    assert trained["one_core"][1]["environment"]["cpu_cores"] == 1


def test_evaluating_given_checkpoints_agrees_to_1e4_on_one_core_and_under_an_isa_cap(
    trained, shared, tmp_path
):
    """The default mode's evaluation of fixed checkpoints (the CPU's own kernels)."""
    workdir = trained["all_cores"][0]
    overrides = {
        **shared,
        "mode": "eval",
        "init.backbone": os.path.join(workdir, "pretrain", "best"),
        "init.cwt": os.path.join(workdir, "metatrain", "best"),
    }
    evaluations = {
        setting: per_class(run_main(tmp_path / setting, overrides, setting)[0])
        for setting in SETTINGS
    }
    expected = evaluations["all_cores"]
    for setting, runs in evaluations.items():
        for run, reference in zip(runs, expected, strict=True):
            for method in ("cwt", "support_only"):
                assert run[method].keys() == reference[method].keys()
                np.testing.assert_allclose(
                    list(run[method].values()),
                    list(reference[method].values()),
                    atol=1e-4,
                    err_msg=f"{setting}, {method}",
                )


def test_deterministic_once_jax_has_started_is_one_sentence_and_no_work(shared, tmp_path):
    jax.devices()  # this process's backend has started, as any JAX computation starts it
    config = tiny_config({**shared, "mode": "all", "deterministic": True})
    with pytest.raises(errors.ConfigError) as error:
        experiment.run(config, str(tmp_path / "run"))
    assert str(error.value) == (
        "deterministic=True must start JAX's backend, which has started already: call "
        "cwt_jax.compilation.use_deterministic_mode() before any JAX computation."
    )
    assert not os.path.exists(tmp_path / "run")
