"""Few-shot metrics against values worked out by hand on tiny label maps."""

import importlib.metadata
import os

import jax
import ml_collections
import numpy as np
import pytest

from cwt_jax.evaluation import metrics, results


def test_intersection_and_union_count_pixels_and_skip_ignored_ones():
    predictions = np.array([[0, 1, 1], [1, 1, 0]])
    labels = np.array([[0, 1, 255], [255, 0, 0]])
    intersection, union = metrics.intersection_union(predictions, labels, 2)
    # Counted pixels: (0,0) 0/0, (0,1) 1/1, (1,1) 1/0, (1,2) 0/0 (prediction/label).
    assert intersection.tolist() == [2, 1]
    assert union.tolist() == [3, 2]


def test_few_shot_iou_sums_each_class_over_its_own_episodes():
    """Three episodes, class 1 twice and class 2 once; counts (episode, [bg, fg])."""
    class_ids = np.array([1, 2, 1])
    intersections = np.array([[5, 2], [1, 3], [6, 0]])
    unions = np.array([[7, 4], [2, 3], [8, 2]])
    run = metrics.summarize_episodes(class_ids, intersections, unions)
    assert run["per_class_iou"] == pytest.approx({1: (2 + 0) / (4 + 2), 2: 3 / 3})
    assert run["miou"] == pytest.approx((2 / 6 + 1) / 2)
    background, foreground = (5 + 1 + 6) / (7 + 2 + 8), (2 + 3 + 0) / (4 + 3 + 2)
    assert run["fb_iou"] == pytest.approx((background + foreground) / 2)


def summary_config(
    label_resolution, seeds=(), objective="support", objectives=(), deterministic=False
):
    """The settings `results.summarize` records."""
    return ml_collections.ConfigDict(
        {
            "seed": 0,
            "deterministic": deterministic,
            "data": {"image_size": 64, "shot": 1},
            "inner": {
                "optimizer": "adam",
                "steps": 7,
                "objective": objective,
                "repri": {"optimizer": "sgd", "adapt_iter": 50},
            },
            "eval": {
                "episodes": "",
                "seeds": seeds,
                "label_resolution": label_resolution,
                "objectives": objectives,
            },
        }
    )


def test_runs_are_averaged_and_a_class_missing_from_a_run_is_left_out_of_its_mean():
    def run(per_class, fb_iou):
        miou = float(np.mean(list(per_class.values())))
        return {"miou": miou, "fb_iou": fb_iou, "per_class_iou": per_class}

    runs = [
        {
            "seed": 0,
            "cwt": run({1: 0.5, 2: 0.7}, 0.6),
            "support_only": run({1: 0.4, 2: 0.2}, 0.5),
        },
        {"seed": 1, "cwt": run({1: 0.3}, 0.8), "support_only": run({1: 0.2}, 0.3)},
    ]
    config = summary_config("padded")
    names = {1: "circle", 2: "square", 3: "triangle"}
    summary = results.summarize(
        runs,
        config,
        classes=names,
        episodes=[4, 2],
        timing={"wall_time_s": 1.2},
        data_fingerprint="ab" * 32,
    )
    assert summary["miou"] == pytest.approx((0.6 + 0.3) / 2)
    assert summary["miou_std"] == pytest.approx(0.15)
    assert summary["fb_iou"] == pytest.approx(0.7)
    assert summary["per_class_iou"] == pytest.approx({1: 0.4, 2: 0.7})
    assert summary["support_only"]["per_class_iou"] == pytest.approx({1: 0.3, 2: 0.2})
    assert summary["support_only"]["fb_iou_std"] == pytest.approx(0.1)
    assert summary["cwt"]["per_class_iou"] == summary["per_class_iou"]
    assert summary["class_names"] == {1: "circle", 2: "square"}
    assert summary["classes_without_episodes"] == [3]  # left out of every mean, not NaN
    assert (summary["episodes"], summary["wall_time_s"]) == ([4, 2], 1.2)
    assert summary["runs"] == runs and summary["config"]["seed"] == 0
    table = results.format_table(summary, names)
    assert "0.4500±0.1500" in table and "No episode of 3 (triangle)" in table
    one_run = results.summarize(
        runs[:1],
        config,
        classes=names,
        episodes=[4],
        timing={"wall_time_s": 1.0},
        data_fingerprint="ab" * 32,
    )
    assert "±" not in results.format_table(one_run, names)  # no spread of a single run


def test_both_resolutions_are_reported_padded_first_and_the_protocol_is_recorded():
    def run(miou, fb_iou):
        return {"miou": miou, "fb_iou": fb_iou, "per_class_iou": {1: miou}}

    counted = [  # evaluate.run_episodes's numbers of two runs
        {
            "cwt": run(0.5, 0.6),
            "support_only": run(0.4, 0.5),
            "original_resolution": {"cwt": run(0.52, 0.62), "support_only": run(0.42, 0.52)},
        },
        {
            "cwt": run(0.7, 0.8),
            "support_only": run(0.2, 0.3),
            "original_resolution": {"cwt": run(0.72, 0.82), "support_only": run(0.22, 0.32)},
        },
    ]
    names = {1: "circle"}
    for resolution, top, cwt_miou in (("original", "original", 0.62), ("padded", "padded", 0.6)):
        runs = [
            {"seed": s, **results.at_resolution(c, resolution)}
            for s, c in zip((4, 2), counted, strict=True)
        ]
        summary = results.summarize(
            runs,
            summary_config(resolution, (4, 2)),
            classes=names,
            episodes=[3, 3],
            timing={"wall_time_s": 1},
            data_fingerprint="cd" * 32,
        )
        assert summary["miou"] == pytest.approx(cwt_miou) and "original_resolution" not in summary
        assert summary["protocol"]["top_level"] == top
    runs = [
        {"seed": s, **results.at_resolution(c, "both")}
        for s, c in zip((4, 2), counted, strict=True)
    ]
    summary = results.summarize(
        runs,
        summary_config("both", (4, 2)),
        classes=names,
        episodes=[3, 3],
        timing={"wall_time_s": 1},
        data_fingerprint="cd" * 32,
    )
    assert summary["miou"] == pytest.approx(0.6) and summary["miou_std"] == pytest.approx(0.1)
    original = summary["original_resolution"]
    assert {"miou", "fb_iou", "per_class_iou", "support_only", "cwt"} <= set(original)
    assert original["miou"] == pytest.approx(0.62) and original["fb_iou"] == pytest.approx(0.72)
    assert original["support_only"]["miou"] == pytest.approx(0.32)
    assert summary["protocol"] == {
        "label_resolution": "both",
        "top_level": "padded",
        "seeds": [4, 2],
        "episodes_per_run": [3, 3],
        "test_size": 64,
        "shot": 1,
        "inner_optimizer": "adam",
        "inner_steps": 7,
        "inner_objective": "support",
        "objectives": {"support": {"optimizer": "adam", "updates": 7}},
        "aggregation": "mean ± std over runs",
    }
    assert [run["seed"] for run in summary["runs"]] == [4, 2]
    assert summary["overridden"] == {"eval.num_runs": "by eval.seeds=[4, 2]"}
    assert summary["data"]["fingerprint"] == "cd" * 32
    assert summary["devices"]["count"] == len(jax.devices())
    assert {"python", "jax", "jaxlib", "flax", "optax", "numpy", "opencv", "grain"} <= set(
        summary["environment"]
    )
    assert summary["environment"]["tensorflow-datasets"] == importlib.metadata.version(
        "tensorflow-datasets"
    )
    # What the numbers depend on beyond the versions: the XLA flags, the CPU, its cores.
    assert summary["environment"]["xla_flags"] == os.environ.get("XLA_FLAGS", "")
    assert summary["environment"]["cpu_cores"] == len(os.sched_getaffinity(0))
    assert summary["environment"]["cpu"]
    table = results.format_table(summary, names).splitlines()
    # The setting and the data fingerprint head the table.
    assert table[0] == (
        "1-shot, inner objective support (adam x 7 steps), labels both, 2 run(s) of 3 episodes; "
        "data fingerprint cdcdcdcdcdcdcdcd"
    )
    assert table[1] == "Labels at the padded test size (64 px):"
    deterministic = results.summarize(
        runs,
        summary_config("both", (4, 2), deterministic=True),
        classes=names,
        episodes=[3, 3],
        timing={"wall_time_s": 1},
        data_fingerprint="cd" * 32,
    )
    assert results.format_table(deterministic, names).splitlines()[0] == table[0] + (
        "; deterministic"
    )
    assert "Labels at the original image size (PFENet's ori_resize):" in table
    assert table[4].split() == ["mIoU", "0.6000±0.1000", "0.3000±0.1000"]
    assert table[-2].split() == ["mIoU", "0.6200±0.1000", "0.3200±0.1000"]
    assert results.run_scalars(runs[0])["original_cwt_miou"] == pytest.approx(0.52)


def test_the_table_names_each_objective_and_gives_it_a_column():
    """RePRI's column beside the CWT's and the transductive classifier's it adapts."""

    def run(value):
        return {"miou": value, "fb_iou": value, "per_class_iou": {1: value}}

    runs = [
        {"seed": 0, "cwt": run(0.6), "transductive": run(0.5), "repri": run(0.4)},
        {"seed": 1, "cwt": run(0.8), "transductive": run(0.7), "repri": run(0.2)},
    ]
    config = summary_config("padded", objective="transductive", objectives=("repri",))
    summary = results.summarize(
        runs,
        config,
        classes={1: "circle"},
        episodes=[2, 2],
        timing={"wall_time_s": 1.0},
        data_fingerprint="ab" * 32,
    )
    assert summary["miou"] == pytest.approx(0.7)  # the CWT's at the top
    assert summary["repri"]["miou"] == pytest.approx(0.3)
    assert "support_only" not in summary
    table = results.format_table(summary, {1: "circle"}).splitlines()
    assert table[0].startswith(
        "1-shot, inner objectives transductive (adam x 7 steps), repri (sgd x 49 steps), "
    )
    assert table[2].split() == ["class", "CWT", "transductive", "RePRI"]
    assert table[4].split() == ["mIoU", "0.7000±0.1000", "0.6000±0.1000", "0.3000±0.1000"]
    assert set(results.run_scalars(runs[0])) == {
        f"{method}_{key}" for method in runs[0] if method != "seed" for key in ("miou", "fb_iou")
    }

    alone = [{"seed": 0, "repri": run(0.4)}]
    summary = results.summarize(
        alone,
        summary_config("padded", objective="repri"),
        classes={1: "circle"},
        episodes=[2],
        timing={"wall_time_s": 1.0},
        data_fingerprint="ab" * 32,
    )
    assert summary["miou"] == pytest.approx(0.4) and "cwt" not in summary
    assert results.format_table(summary, {1: "circle"}).splitlines()[2].split() == [
        "class",
        "RePRI",
    ]
