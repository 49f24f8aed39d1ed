"""Every GPU measurement of docs/speed.md's table, in one command for a machine lent for minutes.

  python scripts/gpu_report.py OUTPUT_DIR [--steps=eval_cold,eval_warm,...] [--seconds=540] \
      [--config.key=value ...]

Runs the steps below in this order (the first ones matter most), each a fresh process
with a time limit, within a budget for the whole (`--seconds`): a step starts only while
`MIN_STEP_SECONDS` are left and is stopped when the budget ends. After each step one JSON
line goes to OUTPUT_DIR/report.jsonl (its name, return code, wall time and what it
measured) and its output to OUTPUT_DIR/log.txt, so a run cut short still reports what it
did. Extra `--config.key=value` arguments go to every step (a tiny model for a run on CPU).

- `env`: the devices, the backend and the package versions.
- `eval_cold`, `eval_warm`: `scripts/time_eval.sh` (ResNet-50, 473 px, 5 x 1000 1-shot
  episodes), first with an empty compilation cache, then with the cache it filled; with
  each run's mIoU and where its time went (`results.json`'s `timing`).
- `bench_1shot`, `bench_5shot`: `python -m cwt_jax.benchmark` on the PASCAL configs:
  evaluation at 32 episodes per step, meta-training at 8, pre-training (1-shot only); the
  backbone's FLOP/s among the numbers.
- `eval_bf16_cold`, `eval_bf16_warm`: the evaluation with `model.dtype=bfloat16`, its
  speed and its mIoU beside float32's.
- `metatrain_b1`: meta-training at 1 episode per step, 1-shot and 5-shot.
- `eval_autotune0_cold`, `eval_autotune0_warm`: the evaluation with XLA's autotuning of
  GPU kernels off (`--xla_gpu_autotune_level=0`): what autotuning costs a cold run and
  gains a warm one.
- `metatrain_b32`: meta-training at 32 episodes per step, 1-shot.

The weights, the dataset and the compilation caches go to `--workdir`, outside
OUTPUT_DIR. On a machine without the packages, install the wheels of
`scripts/gpu_wheels.sh` first.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIN_STEP_SECONDS = 30
ENV_PROGRAM = """
import importlib.metadata, json, jax
versions = {name: importlib.metadata.version(name) for name in (
    "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets",
    "numpy", "cwt-jax")}
print(json.dumps({"devices": [device.device_kind for device in jax.devices()],
                  "backend": jax.default_backend(), "versions": versions}))
"""


def steps(workdir: str, settings: list[str]) -> dict[str, tuple[int, list[dict]]]:
    """Each step's time limit in seconds and its commands: {"argv", "env"?, "fresh"?}.

    A command's "fresh" names a folder removed before it runs (an empty compilation
    cache); an evaluation's results.json, which time_eval.sh prints the path of, joins the
    step's report (`eval_numbers`).
    """

    def time_eval(cache: str, *extra: str, env: dict | None = None, fresh: bool) -> dict:
        return {
            "argv": [
                "bash",
                "scripts/time_eval.sh",
                os.path.join(workdir, "time_eval"),
                f"--config.compilation_cache_dir={os.path.join(workdir, cache)}",
                *extra,
                *settings,
            ],
            "env": env or {},
            "fresh": os.path.join(workdir, cache) if fresh else None,
        }

    def bench(shot: int, eval_batch: int, metatrain_batch: int, *stages: str) -> dict:
        return {
            "argv": [
                sys.executable,
                "-m",
                "cwt_jax.benchmark",
                f"--config=configs/pascal_fold0_{shot}shot.py",
                "--repeats=3",
                *(f"--stages={stage}" for stage in stages),
                f"--config.eval.episodes_per_step={eval_batch}",
                f"--config.metatrain.episodes_per_step={metatrain_batch}",
                *settings,
            ],
            # The cases share what programs they can.
            "env": {"JAX_COMPILATION_CACHE_DIR": os.path.join(workdir, "xla_benchmark")},
        }

    bfloat16 = "--config.model.dtype=bfloat16"
    no_autotuning = {"XLA_FLAGS": "--xla_gpu_autotune_level=0"}
    return {
        "env": (60, [{"argv": [sys.executable, "-c", ENV_PROGRAM]}]),
        "eval_cold": (240, [time_eval("xla_float32", fresh=True)]),
        "eval_warm": (120, [time_eval("xla_float32", fresh=False)]),
        "bench_1shot": (240, [bench(1, 32, 8, "eval", "metatrain", "pretrain")]),
        "bench_5shot": (180, [bench(5, 32, 8, "eval", "metatrain")]),
        "eval_bf16_cold": (240, [time_eval("xla_bfloat16", bfloat16, fresh=True)]),
        "eval_bf16_warm": (120, [time_eval("xla_bfloat16", bfloat16, fresh=False)]),
        "metatrain_b1": (180, [bench(1, 1, 1, "metatrain"), bench(5, 1, 1, "metatrain")]),
        "eval_autotune0_cold": (
            240,
            [time_eval("xla_autotune0", env=no_autotuning, fresh=True)],
        ),
        "eval_autotune0_warm": (
            120,
            [time_eval("xla_autotune0", env=no_autotuning, fresh=False)],
        ),
        "metatrain_b32": (120, [bench(1, 32, 32, "metatrain")]),
    }


def last_json(text: str) -> dict | None:
    """The JSON object a command printed last: all of stdout, or its last `{...}` line."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def eval_numbers(path: str) -> dict:
    """An evaluation's mIoU with and without the CWT and its timing, from its results.json."""
    with open(path) as file:
        summary = json.load(file)
    return {
        "cwt_miou": summary["miou"],
        "support_only_miou": summary["support_only"]["miou"],
        "timing": summary["timing"],
    }


def run_command(command: dict, seconds: float, log) -> tuple[int, str]:
    """Runs one command for at most `seconds`; its output goes to `log`.

    Returns:
      Its return code (-9 when stopped at the limit) and its stdout.
    """
    if command.get("fresh"):
        shutil.rmtree(command["fresh"], ignore_errors=True)
    process = subprocess.Popen(
        command["argv"],
        cwd=REPO,
        # PYTHON: the interpreter of this script runs scripts/time_eval.sh's Python too.
        env={
            **os.environ,
            "PYTHON": sys.executable,
            "PYTHONUNBUFFERED": "1",
            **command.get("env", {}),
        },
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,  # its children are stopped with it
    )
    try:
        stdout, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, _ = process.communicate()
    log.write(stdout)
    log.flush()
    return process.returncode, stdout


def main() -> None:
    """Runs the steps asked for within the budget; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir")
    parser.add_argument("--steps", default="", help="Comma-separated steps; default: all.")
    parser.add_argument("--seconds", type=float, default=540, help="Budget of the whole run.")
    parser.add_argument("--workdir", default="/tmp/cwt_jax_gpu_report")
    arguments, settings = parser.parse_known_args()
    unknown = [setting for setting in settings if not setting.startswith("--config.")]
    if unknown:
        parser.error(f"unknown arguments {unknown}; settings are --config.key=value")
    deadline = time.monotonic() + arguments.seconds
    plan = steps(arguments.workdir, settings)
    names = arguments.steps.split(",") if arguments.steps else list(plan)
    if set(names) - set(plan):
        parser.error(f"unknown steps {sorted(set(names) - set(plan))}; choose from {list(plan)}")
    os.makedirs(arguments.output_dir, exist_ok=True)
    report_path = os.path.join(arguments.output_dir, "report.jsonl")
    with open(os.path.join(arguments.output_dir, "log.txt"), "a") as log:
        for name in names:
            limit, commands = plan[name]
            entry = {"step": name, "host": platform.node(), "results": []}
            start = time.monotonic()
            for command in commands:
                seconds = min(limit - (time.monotonic() - start), deadline - time.monotonic())
                if seconds < MIN_STEP_SECONDS:
                    entry["results"].append({"skipped": f"{seconds:.0f} s left"})
                    continue
                log.write(f"\n=== {name}: {' '.join(command['argv'])}\n")
                log.flush()
                returncode, stdout = run_command(command, seconds, log)
                result = {"returncode": returncode, **(last_json(stdout) or {})}
                if returncode == 0 and "results" in result:
                    result |= eval_numbers(result["results"])
                entry["results"].append(result)
            entry["wall_s"] = round(time.monotonic() - start, 1)
            with open(report_path, "a") as report:
                report.write(json.dumps(entry) + "\n")
            print(json.dumps(entry), flush=True)


if __name__ == "__main__":
    main()
