"""Few-shot evaluation: runs of episodes, mIoU and FB-IoU with and without the CWT."""

import json
import os

import jax
import numpy as np
import tqdm

from cwt_jax import data, fewshot, initialization, input_pipeline, metrics, optimizers, visualize
from cwt_jax.metric_writer import MetricWriter

EPISODE_ARRAYS = ("support_images", "support_masks", "query_image", "query_mask")
METHODS = ("cwt", "support_only")


def make_eval_step(model, inner_config):
    """A jitted step over a batch of B episodes.

    The backbone runs once on all B * (K + 1) images, the inner loop is vmapped over
    episodes and the CWT over queries. Each episode's classifier initialisation comes from
    `fold_in(run_key, episode_index)`, so results do not depend on B.

    Returns:
      `eval_step(backbone, cwt_params, batch, episode_index, run_key)` ->
      ({method: (intersections (B, 2), unions (B, 2))}, CWT predictions (B, H, W)).
    """
    optimizer = optimizers.inner_optimizer(inner_config)

    @jax.jit
    def eval_step(backbone, cwt_params, batch, episode_index, run_key):
        support_features, query_features = fewshot.episode_features(
            model, backbone, batch["support_images"], batch["query_image"]
        )
        init = jax.vmap(
            lambda index: fewshot.init_classifier(
                jax.random.fold_in(run_key, index), model.bottleneck_dim, inner_config.init
            )
        )(episode_index)
        weights = fewshot.fit_episodes(
            support_features,
            batch["support_masks"],
            init,
            optimizer=optimizer,
            steps=inner_config.steps,
        )
        support_logits, cwt_logits = jax.vmap(fewshot.query_logits, in_axes=(None, 0, 0))(
            cwt_params, weights, query_features
        )
        size = batch["query_mask"].shape[-2:]
        scores, predictions = {}, {}
        for method, logits in zip(METHODS, (cwt_logits, support_logits), strict=True):
            predictions[method] = jax.vmap(lambda lg: fewshot.segment(lg, size))(logits)
            scores[method] = jax.vmap(lambda p, m: metrics.intersection_union(p, m, 2))(
                predictions[method], batch["query_mask"]
            )
        return scores, predictions["cwt"]

    return eval_step


def run_episodes(
    eval_step,
    backbone,
    cwt_params,
    episodes,
    *,
    batch_size: int,
    workers: int,
    run_key: jax.Array,
    panels: int = 0,
    panel_prefix: str = "",
    description: str = "eval",
) -> dict:
    """Evaluates one run of episodes.

    Args:
      eval_step: from `make_eval_step`.
      backbone: PSPNet variables.
      cwt_params: transformer parameters.
      episodes: indexable dataset of episode records.
      batch_size: episodes per compiled step B; must divide the number of episodes.
      workers: grain worker processes.
      run_key: key of the run's classifier initialisations.
      panels: number of PNG panels to write, from the first episodes.
      panel_prefix: path prefix of the panels.
      description: progress bar label.

    Returns:
      {method: {"miou", "fb_iou", "per_class_iou"}} for "cwt" and "support_only".
    """
    if len(episodes) % batch_size:
        raise optimizers.ConfigError(
            f"{len(episodes)} episodes do not split into batches of episodes_per_step="
            f"{batch_size}; make the number of episodes a multiple of it."
        )
    class_ids, counts = [], {method: ([], []) for method in METHODS}
    batches = input_pipeline.loader(episodes, batch_size, workers)
    for batch in tqdm.tqdm(
        batches, desc=description, total=len(episodes) // batch_size, leave=False
    ):
        first = len(class_ids) * batch_size
        scores, predictions = eval_step(
            backbone,
            cwt_params,
            {name: batch[name] for name in EPISODE_ARRAYS},
            np.arange(first, first + batch_size),
            run_key,
        )
        class_ids.append(batch["class_id"])
        for method, (intersection, union) in jax.device_get(scores).items():
            counts[method][0].append(intersection)
            counts[method][1].append(union)
        for index in range(max(0, min(batch_size, panels - first))):
            visualize.write_panel(
                f"{panel_prefix}{first + index:04d}_class{batch['class_id'][index]}.png",
                batch["support_images"][index, 0],
                batch["support_masks"][index, 0],
                batch["query_image"][index],
                batch["query_mask"][index],
                np.asarray(predictions[index]),
            )
    class_ids = np.concatenate(class_ids)
    return {
        method: metrics.summarize_episodes(
            class_ids, np.concatenate(intersections), np.concatenate(unions)
        )
        for method, (intersections, unions) in counts.items()
    }


def evaluate(
    config, inputs: input_pipeline.Inputs, backbone, cwt_params, workdir: str, writer: MetricWriter
) -> dict:
    """Runs `eval.num_runs` runs on the test classes and writes `<workdir>/results.json`.

    Run r samples its episodes with seed `seed + r`; with `eval.episodes` set, the listed
    episodes are evaluated, in order, in one run.

    Returns:
      The results: mean and standard deviation over runs of mIoU and FB-IoU for the CWT
      and the support-only classifier, per-class IoU, each run's numbers and the config.
    """
    section = config.eval
    model = initialization.pspnet(config.model)
    eval_step = make_eval_step(model, config.inner)
    if section.episodes:
        listed = data.read_episode_list(section.episodes)
        datasets = [data.episodes_from_list(inputs.val, listed, image_size=config.data.image_size)]
    else:
        datasets = [
            data.eval_episodes(
                inputs.val,
                inputs.test_classes,
                shot=config.data.shot,
                image_size=config.data.image_size,
                num_episodes=section.num_episodes,
                seed=config.seed + run,
            )  # fmt: skip
            for run in range(section.num_runs)
        ]
    if section.visualize:
        os.makedirs(os.path.join(workdir, "visualize"), exist_ok=True)
    runs = []
    for run, episodes in enumerate(tqdm.tqdm(datasets, desc="eval runs")):
        runs.append(
            run_episodes(
                eval_step,
                backbone,
                cwt_params,
                episodes,
                batch_size=section.episodes_per_step,
                workers=config.data.num_workers,
                run_key=jax.random.fold_in(jax.random.key(config.seed), run),
                panels=section.visualize if run == 0 else 0,
                panel_prefix=os.path.join(workdir, "visualize", "episode"),
                description=f"eval run {run}",
            )  # fmt: skip
        )
        writer.write(
            "eval", run, {f"{m}_{k}": runs[-1][m][k] for m in METHODS for k in ("miou", "fb_iou")}
        )
    results = {**_summary(runs, "cwt"), "support_only": _summary(runs, "support_only")}
    results["runs"] = runs
    results["config"] = config.to_dict()
    _write_json(os.path.join(workdir, "results.json"), results)
    print(format_table(results, inputs.classes.names))
    return results


def _summary(runs: list[dict], method: str) -> dict:
    per_class = [run[method]["per_class_iou"] for run in runs]
    return {
        "miou": float(np.mean([run[method]["miou"] for run in runs])),
        "miou_std": float(np.std([run[method]["miou"] for run in runs])),
        "fb_iou": float(np.mean([run[method]["fb_iou"] for run in runs])),
        "fb_iou_std": float(np.std([run[method]["fb_iou"] for run in runs])),
        "per_class_iou": {
            c: float(np.mean([p[c] for p in per_class if c in p])) for c in per_class[0]
        },
    }


def format_table(results: dict, names: dict[int, str]) -> str:
    """A terminal table: per-class IoU, mIoU and FB-IoU, CWT beside support-only."""
    lines = [f"{'class':<16}{'CWT':>10}{'support-only':>14}"]
    for class_id, value in results["per_class_iou"].items():
        support_only = results["support_only"]["per_class_iou"][class_id]
        lines.append(f"{class_id:>3} {names[class_id]:<12}{value:>10.4f}{support_only:>14.4f}")
    for key, label in (("miou", "mIoU"), ("fb_iou", "FB-IoU")):
        cwt_value = f"{results[key]:.4f}±{results[key + '_std']:.4f}"
        support_value = (
            f"{results['support_only'][key]:.4f}±{results['support_only'][key + '_std']:.4f}"
        )
        lines.append(f"{label:<16}{cwt_value:>14}{support_value:>16}")
    return "\n".join(lines)


def _write_json(path: str, payload: dict) -> None:
    """Writes JSON through a temporary file, so a reader never sees half a file."""
    with open(path + ".tmp", "w") as file:
        json.dump(payload, file, indent=1, default=str)
    os.replace(path + ".tmp", path)
