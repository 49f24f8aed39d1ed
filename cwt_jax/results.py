"""What an evaluation reports: the summary over runs, `results.json` and the terminal table."""

import importlib.metadata
import json
import os

import numpy as np


def summarize(
    runs: list[dict],
    config,
    *,
    classes: dict[int, str],
    episodes: list[int],
    seconds: float,
) -> dict:
    """Mean and standard deviation over runs, per-class IoU, each run's numbers, the setting.

    Args:
      runs: per run, {method: {"miou", "fb_iou", "per_class_iou"}} for "cwt" and
        "support_only" (`evaluate.run_episodes`).
      config: the run's config, recorded with the numbers.
      classes: class id -> name of the classes to evaluate; a class without episodes is
        left out of the means and listed under `classes_without_episodes`.
      episodes: the number of episodes of each run.
      seconds: the evaluation's wall time.

    Returns:
      The CWT's numbers under `cwt` (`miou`, `miou_std`, `fb_iou`, `fb_iou_std`,
      `per_class_iou`) and, for scripts, at the top level; the support-only classifier's
      under `support_only`; then `class_names`, `classes_without_episodes`, `episodes`,
      `overridden` (the settings an episode file replaces), `wall_time_s`, `version`,
      `runs` and `config`.
    """
    cwt = _method_summary(runs, "cwt")
    overridden = ("eval.num_runs", "eval.num_episodes") if config.eval.episodes else ()
    return {
        **cwt,
        "cwt": cwt,
        "support_only": _method_summary(runs, "support_only"),
        "class_names": {class_id: classes[class_id] for class_id in cwt["per_class_iou"]},
        "classes_without_episodes": sorted(set(classes) - set(cwt["per_class_iou"])),
        "episodes": episodes,
        "overridden": {key: f"by eval.episodes={config.eval.episodes}" for key in overridden},
        "wall_time_s": round(seconds, 1),
        "version": importlib.metadata.version("cwt-jax"),
        "runs": runs,
        "config": config.to_dict(),
    }


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
    """Writes JSON through a temporary file, so a reader never sees half a file."""
    with open(path + ".tmp", "w") as file:
        json.dump(summary, file, indent=1, default=str)
    os.replace(path + ".tmp", path)


def format_table(summary: dict, names: dict[int, str]) -> str:
    """A terminal table: per-class IoU, mIoU and FB-IoU, CWT beside support-only.

    With several runs, mIoU and FB-IoU are given as mean ± standard deviation over them.
    """
    support_only = summary["support_only"]
    several_runs = len(summary["runs"]) > 1
    lines = [f"{'class':<16}{'CWT':>14}{'support-only':>16}"]
    for class_id, value in summary["per_class_iou"].items():
        other = support_only["per_class_iou"][class_id]
        lines.append(f"{class_id:>3} {names[class_id]:<12}{value:>14.4f}{other:>16.4f}")
    for key, label in (("miou", "mIoU"), ("fb_iou", "FB-IoU")):
        values = [
            f"{method[key]:.4f}" + (f"±{method[key + '_std']:.4f}" if several_runs else "")
            for method in (summary, support_only)
        ]
        lines.append(f"{label:<16}{values[0]:>14}{values[1]:>16}")
    if summary["classes_without_episodes"]:
        left_out = ", ".join(f"{c} ({names[c]})" for c in summary["classes_without_episodes"])
        lines.append(f"No episode of {left_out}: left out of the means.")
    return "\n".join(lines)
