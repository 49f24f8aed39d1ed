"""What an evaluation reports: the summary over runs, `results.json` and the terminal table."""

import importlib.metadata
import json
import os
import platform

import cv2
import jax
import numpy as np

from cwt_jax import data, files
from cwt_jax.fewshot import episode

# What an evaluation scores (`episode.methods`), as the table labels it: the CWT adapting
# inner.objective's classifier, and each objective's classifier without it.
LABELS = {
    "cwt": "CWT",
    "support_only": "support-only",
    "transductive": "transductive",
    "repri": "RePRI",
}
# eval.label_resolution -> the resolution of results.json's top-level numbers
TOP_LEVEL = {"padded": "padded", "original": "original", "both": "padded"}
LABEL_RESOLUTIONS = tuple(TOP_LEVEL)
_BY_EPISODES = ("eval.num_runs", "eval.num_episodes")  # what an episode file replaces
# The numerical and data stack whose versions `environment` records (distribution names).
_PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "numpy",
    "grain",
    "tensorflow-datasets",
    "orbax-checkpoint",
)


def environment() -> dict:
    """The versions of Python and the numerical and data stack, the CPU and the devices.

    Returns:
      {"environment": {"python", "jax", ..., "opencv", "xla_flags", "cpu", "cpu_cores"},
      "devices": {"kind", "count", "platform"}}; a package that is not installed is
      recorded as None. `xla_flags` are the XLA_FLAGS in force (the deterministic mode's
      among them), `cpu` the CPU's model name and `cpu_cores` the cores the run may use.
    """
    versions = {"python": platform.python_version()}
    for package in _PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["opencv"] = cv2.__version__  # any of OpenCV's four wheels
    versions["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    versions["cpu"] = _cpu_model()
    # The cores the run may use (`taskset`), where the system tells.
    versions["cpu_cores"] = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    )
    devices = jax.devices()
    return {
        "environment": versions,
        "devices": {
            "kind": devices[0].device_kind,
            "count": len(devices),
            "platform": devices[0].platform,
        },
    }


def _cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it, else `platform.processor()`."""
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def methods_of(run: dict) -> list[str]:
    """The methods a run's numbers hold, in the order of `LABELS` (`episode.methods`')."""
    return [method for method in LABELS if method in run]


def at_resolution(run: dict, label_resolution: str) -> dict:
    """One run's numbers as `eval.label_resolution` reports them.

    Args:
      run: `evaluate.run_episodes`'s numbers, at the padded test size, with those at the
        original resolution under "original_resolution" where they were counted.
      label_resolution: "padded", "original" or "both".

    Returns:
      {method: {"miou", "fb_iou", "per_class_iou"}} at the resolution named first, and
      for "both" the original resolution's under "original_resolution".
    """
    if label_resolution == "padded":
        return {method: run[method] for method in methods_of(run)}
    if label_resolution == "original":
        return dict(run["original_resolution"])
    return {
        **{method: run[method] for method in methods_of(run)},
        "original_resolution": run["original_resolution"],
    }


def run_scalars(run: dict) -> dict[str, float]:
    """A run's mIoU and FB-IoU per method for the metric writer (`at_resolution`'s run)."""
    methods = methods_of(run)
    scalars = {f"{m}_{k}": run[m][k] for m in methods for k in ("miou", "fb_iou")}
    if "original_resolution" in run:
        original = run["original_resolution"]
        scalars |= {
            f"original_{m}_{k}": original[m][k] for m in methods for k in ("miou", "fb_iou")
        }
    return scalars


def summarize(
    runs: list[dict],
    config,
    *,
    classes: dict[int, str],
    episodes: list[int],
    timing: dict[str, float],
    data_fingerprint: str,
) -> dict:
    """Mean and standard deviation over runs, per-class IoU, each run's numbers, the setting.

    Args:
      runs: per run, its "seed" and {method: {"miou", "fb_iou", "per_class_iou"}} for
        each method scored (`at_resolution`), e.g. "cwt" and "support_only", with the
        same under "original_resolution" where `eval.label_resolution` is "both".
      config: the run's config, recorded with the numbers.
      classes: class id -> name of the classes to evaluate; a class without episodes is
        left out of the means and listed under `classes_without_episodes`.
      episodes: the number of episodes of each run.
      timing: where the evaluation's time went: its `wall_time_s` and any phases.
      data_fingerprint: `data.fingerprint` of the training and evaluation splits.

    Returns:
      Each method's numbers under its name (`miou`, `miou_std`, `fb_iou`, `fb_iou_std`,
      `per_class_iou`), e.g. the CWT's under `cwt` and the support-only classifier's under
      `support_only`, and the CWT's (where it is scored, else inner.objective's
      classifier's) at the top level, for scripts; with "both" resolutions, the same
      keys at the original resolution under `original_resolution`; then `protocol`
      (label resolution, seeds, episodes per run, test size, shot, the inner objectives'
      optimisers and updates, aggregation), `class_names`,
      `classes_without_episodes`, `episodes`, `overridden` (the settings an episode file
      replaces), `wall_time_s`, `timing`, `version`, `data` (the fingerprint and what
      it hashes), `environment` and `devices` (`environment()`), `runs` and `config`.
    """
    top = _summary(runs, _top_method(runs[0], config))
    if config.eval.episodes:
        overridden = {key: f"by eval.episodes={config.eval.episodes}" for key in _BY_EPISODES}
    elif config.eval.seeds:
        overridden = {"eval.num_runs": f"by eval.seeds={list(config.eval.seeds)}"}
    else:
        overridden = {}
    original = (
        {
            "original_resolution": _summary(
                [run["original_resolution"] for run in runs], _top_method(runs[0], config)
            )
        }
        if "original_resolution" in runs[0]
        else {}
    )
    return {
        **top,
        **original,
        "protocol": {
            "label_resolution": config.eval.label_resolution,
            "top_level": TOP_LEVEL[config.eval.label_resolution],
            "seeds": [run["seed"] for run in runs],
            "episodes_per_run": episodes,
            "test_size": config.data.image_size,
            "shot": config.data.shot,
            "inner_optimizer": config.inner.optimizer,
            "inner_steps": config.inner.steps,
            "inner_objective": config.inner.objective,
            "objectives": objective_settings(config),
            "aggregation": "mean ± std over runs",
        },
        "class_names": {class_id: classes[class_id] for class_id in top["per_class_iou"]},
        "classes_without_episodes": sorted(set(classes) - set(top["per_class_iou"])),
        "episodes": episodes,
        "overridden": overridden,
        "wall_time_s": timing["wall_time_s"],
        "timing": timing,
        "version": importlib.metadata.version("cwt-jax"),
        "data": {
            "fingerprint": data_fingerprint,
            "hashed": f"the first {data.FINGERPRINT_IMAGES} images and masks of the train "
            "and the evaluation split",
        },
        **environment(),
        "runs": runs,
        "config": config.to_dict(),
    }


def objective_settings(config) -> dict[str, dict]:
    """Each scored objective's optimiser and number of updates, inner.objective's first."""
    scored = dict.fromkeys((config.inner.objective, *config.eval.objectives))
    repri = config.inner.repri
    return {
        objective: (
            {"optimizer": repri.optimizer, "updates": repri.adapt_iter - 1}
            if objective == "repri"
            else {"optimizer": config.inner.optimizer, "updates": config.inner.steps}
        )
        for objective in scored
    }


def _top_method(run: dict, config) -> str:
    """The CWT where it is scored, else inner.objective's classifier (RePRI's)."""
    return "cwt" if "cwt" in run else episode.without_cwt(config.inner.objective)


def _summary(runs: list[dict], top: str) -> dict:
    """Each method's summary over runs under its name, `top`'s also at the top."""
    summaries = {method: _method_summary(runs, method) for method in methods_of(runs[0])}
    return {**summaries[top], **summaries}


def _method_summary(runs: list[dict], method: str) -> dict:
    per_class = [run[method]["per_class_iou"] for run in runs]
    summary = {}
    for key in ("miou", "fb_iou"):
        values = [run[method][key] for run in runs]
        summary[key], summary[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
    summary["per_class_iou"] = {
        class_id: float(np.mean([p[class_id] for p in per_class if class_id in p]))
        for class_id in per_class[0]
    }
    return summary


def write(path: str, summary: dict) -> None:
    """Writes JSON through a temporary file (`files.write_atomically`): never half a file."""
    files.write_atomically(path, json.dumps(summary, indent=1, default=str).encode())


def format_timing(timing: dict[str, float]) -> str:
    """One line on where an evaluation's time went (`evaluate.evaluate`'s `timing`)."""
    return (
        f"Evaluation took {timing['wall_time_s']} s: features {timing['features_s']} s, "
        f"episodes {timing['episodes_s']} s; {timing['programs']} XLA programs built in "
        f"{timing['compile_s']} s ({timing['cache_hits']} read from the compilation cache), "
        f"tracing {timing['tracing_s']} s."
    )


def format_table(summary: dict, names: dict[int, str]) -> str:
    """A terminal table: per-class IoU, mIoU and FB-IoU, a column per method scored.

    The CWT's column comes first, then each inner objective's without it (support-only
    for the support objective). With several runs, mIoU and FB-IoU are given as mean ±
    standard deviation over them. Each label resolution reported has a block of its own,
    the top level's first.
    """
    several_runs = len(summary["runs"]) > 1
    protocol = summary["protocol"]
    objectives = ", ".join(
        f"{name} ({settings['optimizer']} x {settings['updates']} steps)"
        for name, settings in protocol["objectives"].items()
    )
    plural = "s" if len(protocol["objectives"]) > 1 else ""
    lines = [
        f"{protocol['shot']}-shot, inner objective{plural} {objectives}, labels "
        f"{protocol['label_resolution']}, {len(summary['runs'])} run(s) of "
        f"{protocol['episodes_per_run'][0]} episodes; "
        f"data fingerprint {summary['data']['fingerprint'][:16]}"
        + ("; deterministic" if summary["config"]["deterministic"] else ""),
    ]
    blocks = [(protocol["top_level"], summary)]
    if "original_resolution" in summary:
        blocks.append(("original", summary["original_resolution"]))
    for resolution, numbers in blocks:
        lines.append(
            f"Labels at the padded test size ({protocol['test_size']} px):"
            if resolution == "padded"
            else "Labels at the original image size (PFENet's ori_resize):"
        )
        lines += _block(numbers, names, several_runs)
    if summary["classes_without_episodes"]:
        left_out = ", ".join(f"{c} ({names[c]})" for c in summary["classes_without_episodes"])
        lines.append(f"No episode of {left_out}: left out of the means.")
    return "\n".join(lines)


def _block(numbers: dict, names: dict[int, str], several_runs: bool) -> list[str]:
    """The table's lines of one label resolution: a column per method."""
    methods = methods_of(numbers)
    widths = [14] + [16] * (len(methods) - 1)
    header = "".join(f"{LABELS[m]:>{w}}" for m, w in zip(methods, widths, strict=True))
    lines = [f"{'class':<16}{header}"]
    for class_id in numbers[methods[0]]["per_class_iou"]:
        values = "".join(
            f"{numbers[m]['per_class_iou'][class_id]:>{w}.4f}"
            for m, w in zip(methods, widths, strict=True)
        )
        lines.append(f"{class_id:>3} {names[class_id]:<12}{values}")
    for key, label in (("miou", "mIoU"), ("fb_iou", "FB-IoU")):
        values = "".join(
            f"{_mean_std(numbers[m], key, several_runs):>{w}}"
            for m, w in zip(methods, widths, strict=True)
        )
        lines.append(f"{label:<16}{values}")
    return lines


def _mean_std(numbers: dict, key: str, several_runs: bool) -> str:
    return f"{numbers[key]:.4f}" + (f"±{numbers[key + '_std']:.4f}" if several_runs else "")
