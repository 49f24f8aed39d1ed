"""Pictures of a finished run, from its work dir: the training curves and the per-class IoU.

  python scripts/plot_training.py /tmp/cwt_synthetic --out_dir=docs/images

writes two PNGs to `--out_dir`:

- `training_curves.png`, from `<workdir>/metrics.jsonl`: stage 1's validation mIoU (base
  classes) per step, and meta-training's validation mIoU per step, of the CWT and of the
  support-only classifier it adapts;
- `per_class_iou.png`, from `<workdir>/results.json`: the IoU of each test class, CWT
  against support-only, as the mean over the evaluation runs with their spread (the
  standard deviation) as error bars.

Needs matplotlib (`pip install -c constraints.txt -e ".[test]"` brings it).
"""

import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# (stage, metrics.jsonl key) of each curve, by its label in the picture.
CURVES = {
    "stage 1: validation mIoU (base classes)": ("pretrain", "val_miou"),
    "meta-training: CWT": ("metatrain", "val_miou"),
    "meta-training: support-only": ("metatrain", "val_support_only_miou"),
}
METHODS = {"cwt": "CWT", "support_only": "support-only"}


def read_metrics(path: str) -> list[dict]:
    """The records of a `metrics.jsonl`, one dict per line.

    Args:
      path: the file.

    Returns:
      Its records, in order.
    """
    with open(path) as lines:
        return [json.loads(line) for line in lines if line.strip()]


def validation_curves(records: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """The validation curves of a run: for each of `CURVES`, its steps and values.

    Training records (loss, norms) lack the validation keys and are skipped; a step
    recorded twice (a resumed stage writes its lines again) keeps its last value.

    Args:
      records: `read_metrics`'s.

    Returns:
      label -> (steps, values), by step; a curve the run did not record is left out.
    """
    curves = {}
    for label, (stage, key) in CURVES.items():
        points = {
            record["step"]: record[key]
            for record in records
            if record["stage"] == stage and key in record
        }
        if points:
            steps = sorted(points)
            curves[label] = (steps, [points[step] for step in steps])
    return curves


def per_class_iou(results: dict) -> dict:
    """Each test class's IoU of both methods, mean and spread over the runs.

    Args:
      results: a run's `results.json`.

    Returns:
      {"names": class names, "cwt": (means, stds), "support_only": (means, stds),
      "miou": {method: mIoU}}, classes in id order.
    """
    class_ids = sorted(results["class_names"], key=int)
    bars = {"names": [results["class_names"][c] for c in class_ids], "miou": {}}
    for method in METHODS:
        runs = np.array(
            [[run[method]["per_class_iou"][c] for c in class_ids] for run in results["runs"]]
        )  # (runs, classes)
        bars[method] = (runs.mean(axis=0).tolist(), runs.std(axis=0).tolist())
        bars["miou"][method] = results[method]["miou"]
    return bars


def plot_curves(curves: dict, path: str) -> None:
    """Writes the stage-1 curve and the two meta-training curves side by side as a PNG."""
    figure, (stage1, stage2) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=100)
    for label, (steps, values) in curves.items():
        axes = stage1 if label.startswith("stage 1") else stage2
        axes.plot(steps, values, marker="o", markersize=3, label=label.split(": ", 1)[1])
    stage1.set_title("stage 1: pre-training (base classes)")
    stage2.set_title("stage 2: meta-training")
    for axes in (stage1, stage2):
        axes.set_xlabel("step")
        axes.set_ylabel("validation mIoU")
        axes.grid(alpha=0.3)
    stage2.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_per_class(bars: dict, path: str) -> None:
    """Writes the per-class IoU bars of both methods, with their spread, as a PNG."""
    figure, axes = plt.subplots(figsize=(6, 3.2), dpi=100)
    positions = np.arange(len(bars["names"]))
    width = 0.38
    for offset, (method, label) in zip((-width / 2, width / 2), METHODS.items(), strict=True):
        means, stds = bars[method]
        axes.bar(
            positions + offset,
            means,
            width,
            yerr=stds,
            capsize=3,
            label=f"{label} (mIoU {bars['miou'][method]:.3f})",
        )
    axes.set_xticks(positions, bars["names"])
    axes.set_ylabel("IoU")
    axes.set_ylim(0, 1)
    axes.set_title("test classes: mean ± std over the evaluation runs")
    axes.legend(loc="upper right")
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv=None) -> None:
    """Parses the command line and writes both pictures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdir", help="a finished run's work dir")
    parser.add_argument("--out_dir", required=True, help="folder for the PNGs (created)")
    args = parser.parse_args(argv)
    metrics = os.path.join(args.workdir, "metrics.jsonl")
    results = os.path.join(args.workdir, "results.json")
    for path in (metrics, results):
        if not os.path.isfile(path):
            parser.exit(1, f"error: {path} does not exist; give a finished run's work dir.\n")
    os.makedirs(args.out_dir, exist_ok=True)
    plot_curves(
        validation_curves(read_metrics(metrics)), os.path.join(args.out_dir, "training_curves.png")
    )
    with open(results) as file:
        plot_per_class(
            per_class_iou(json.load(file)), os.path.join(args.out_dir, "per_class_iou.png")
        )
    print(f"Wrote training_curves.png and per_class_iou.png to {args.out_dir}")


if __name__ == "__main__":
    main()
