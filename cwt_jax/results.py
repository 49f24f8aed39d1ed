"""What an evaluation reports: the summary over runs, `results.json` and the terminal table."""

import json
import os

import numpy as np


def summarize(runs: list[dict], config) -> dict:
    """Mean and standard deviation over runs, per-class IoU, each run's numbers, the config.

    Args:
      runs: per run, {method: {"miou", "fb_iou", "per_class_iou"}} for "cwt" and
        "support_only" (`evaluate.run_episodes`).
      config: the run's config, recorded with the numbers.

    Returns:
      The CWT's numbers at the top level (`miou`, `miou_std`, `fb_iou`, `fb_iou_std`,
      `per_class_iou`), the support-only classifier's under `support_only`, then `runs`
      and `config`.
    """
    return {
        **_method_summary(runs, "cwt"),
        "support_only": _method_summary(runs, "support_only"),
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
    """A terminal table: per-class IoU, mIoU and FB-IoU, CWT beside support-only."""
    support_only = summary["support_only"]
    lines = [f"{'class':<16}{'CWT':>10}{'support-only':>14}"]
    for class_id, value in summary["per_class_iou"].items():
        other = support_only["per_class_iou"][class_id]
        lines.append(f"{class_id:>3} {names[class_id]:<12}{value:>10.4f}{other:>14.4f}")
    for key, label in (("miou", "mIoU"), ("fb_iou", "FB-IoU")):
        cwt_value = f"{summary[key]:.4f}±{summary[key + '_std']:.4f}"
        other_value = f"{support_only[key]:.4f}±{support_only[key + '_std']:.4f}"
        lines.append(f"{label:<16}{cwt_value:>14}{other_value:>16}")
    return "\n".join(lines)
