"""Few-shot metrics against values worked out by hand on tiny label maps."""

import ml_collections
import numpy as np
import pytest

from cwt_jax import metrics, results


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


def test_runs_are_averaged_and_a_class_missing_from_a_run_is_left_out_of_its_mean():
    def run(per_class, fb_iou):
        miou = float(np.mean(list(per_class.values())))
        return {"miou": miou, "fb_iou": fb_iou, "per_class_iou": per_class}

    runs = [
        {"cwt": run({1: 0.5, 2: 0.7}, 0.6), "support_only": run({1: 0.4, 2: 0.2}, 0.5)},
        {"cwt": run({1: 0.3}, 0.8), "support_only": run({1: 0.2}, 0.3)},
    ]
    config = ml_collections.ConfigDict({"seed": 0, "eval": {"episodes": ""}})
    names = {1: "circle", 2: "square", 3: "triangle"}
    summary = results.summarize(runs, config, classes=names, episodes=[4, 2], seconds=1.25)
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
    one_run = results.summarize(runs[:1], config, classes=names, episodes=[4], seconds=1.0)
    assert "±" not in results.format_table(one_run, names)  # no spread of a single run
