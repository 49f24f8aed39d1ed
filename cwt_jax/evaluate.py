"""Few-shot evaluation: runs of episodes, mIoU and FB-IoU with and without the CWT."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from cwt_jax import (
    data,
    fewshot,
    initialization,
    input_pipeline,
    metrics,
    optimizers,
    sharding,
    visualize,
)
from cwt_jax.metric_writer import MetricWriter

EPISODE_ARRAYS = ("support_images", "support_masks", "query_image", "query_mask")
METHODS = ("cwt", "support_only")


def make_episode_scores(model, inner_config):
    """Scores of a batch of episodes from their features (traced inside the eval steps).

    Each episode's classifier initialisation comes from `fold_in(run_key, episode_index)`,
    so results do not depend on how episodes are batched or sharded.

    Returns:
      `scores(cwt_params, support_features, support_masks, query_features, query_masks,
      episode_index, run_key)` -> ({method: (intersections (B, 2), unions (B, 2))},
      CWT predictions (B, H, W)).
    """
    optimizer = optimizers.inner_optimizer(inner_config)

    def scores(
        cwt_params, support_features, support_masks, query_features, query_masks, index, key
    ):
        init = jax.vmap(
            lambda i: fewshot.init_classifier(
                jax.random.fold_in(key, i), model.bottleneck_dim, inner_config.init
            )
        )(index)
        weights = fewshot.fit_episodes(
            support_features.astype(jnp.float32), support_masks, init,
            optimizer=optimizer, steps=inner_config.steps,
        )  # fmt: skip
        adapted, normalized = jax.vmap(fewshot.query_weights, in_axes=(None, 0, 0))(
            cwt_params, weights, query_features.astype(jnp.float32)
        )
        size = query_masks.shape[-2:]
        counts, predictions = {}, {}
        for method, classifier_weights in zip(METHODS, (adapted, weights), strict=True):
            predictions[method] = jax.vmap(lambda w, f: fewshot.segment(w, f, size))(
                classifier_weights, normalized
            )
            counts[method] = jax.vmap(lambda p, m: metrics.intersection_union(p, m, 2))(
                predictions[method], query_masks
            )
        return counts, predictions["cwt"]

    return scores


def make_eval_step(model, inner_config):
    """A jitted step over a batch of B episodes given as images.

    The backbone runs once on all B * (K + 1) images, the inner loop is vmapped over
    episodes and the CWT over queries.

    Returns:
      `eval_step(backbone, cwt_params, batch, episode_index, run_key)` -> as
      `make_episode_scores`; `batch` holds `EPISODE_ARRAYS`.
    """
    scores = make_episode_scores(model, inner_config)

    @jax.jit
    def eval_step(backbone, cwt_params, batch, episode_index, run_key):
        support_features, query_features = fewshot.episode_features(
            model, backbone, batch["support_images"], batch["query_image"]
        )
        return scores(
            cwt_params, support_features, batch["support_masks"], query_features,
            batch["query_mask"], episode_index, run_key,
        )  # fmt: skip

    return eval_step


def make_cached_eval_step(model, inner_config):
    """A jitted step over a batch of B episodes whose features are in a cache.

    Returns:
      `eval_step(cache, cwt_params, batch, episode_index, run_key)`: `cache` is an
      (N, h, w, C) feature array, `batch` holds `support_index` (B, K) and `query_index`
      (B,) into it beside the masks.
    """
    scores = make_episode_scores(model, inner_config)

    @jax.jit
    def eval_step(cache, cwt_params, batch, episode_index, run_key):
        return scores(
            cwt_params, cache[batch["support_index"]], batch["support_masks"],
            cache[batch["query_index"]], batch["query_mask"], episode_index, run_key,
        )  # fmt: skip

    return eval_step


def feature_cache(model, backbone, split, image_ids, *, image_size: int, batch_size: int, dtype):
    """Features of each distinct image, computed once for a whole evaluation.

    Evaluation applies no augmentation and the backbone is frozen, so an image's
    features are the same in every episode that uses it.

    Args:
      model: the PSPNet.
      backbone: its variables.
      split: the split holding the images.
      image_ids: ids of the images needed.
      image_size: side of the evaluation transform.
      batch_size: images per backbone pass.
      dtype: storage dtype of the cache (float32, or bfloat16 to halve its memory).

    Returns:
      (N, h, w, C) features on the default device, and id -> row.
    """
    image_ids = sorted(set(image_ids))
    extract = jax.jit(lambda variables, images: model.apply(variables, images).astype(dtype))
    rows = []
    for first in tqdm.trange(0, len(image_ids), batch_size, desc="feature cache", leave=False):
        chunk = image_ids[first : first + batch_size]
        images = [
            data.transforms.eval_transform(*split.load(split.index_of[i]), image_size)[0]
            for i in chunk
        ]
        images += images[-1:] * (batch_size - len(images))  # one compiled shape
        rows.append(extract(backbone, np.stack(images))[: len(chunk)])
    return jnp.concatenate(rows), {image_id: row for row, image_id in enumerate(image_ids)}


def run_episodes(
    eval_step,
    variables,
    cwt_params,
    episodes,
    *,
    batch_size: int,
    workers: int,
    run_key: jax.Array,
    cache_rows: dict[str, int] | None = None,
    panels: int = 0,
    panel_prefix: str = "",
    description: str = "eval",
) -> dict:
    """Evaluates one run of episodes, sharded over the devices.

    Args:
      eval_step: from `make_eval_step`, or `make_cached_eval_step` with `cache_rows`.
      variables: PSPNet variables, or the feature cache for a cached step.
      cwt_params: transformer parameters.
      episodes: indexable dataset of episode records.
      batch_size: episodes per compiled step B; must divide the number of episodes.
      workers: grain worker processes.
      run_key: key of the run's classifier initialisations.
      cache_rows: image id -> cache row, for a cached step.
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
    mesh = sharding.data_mesh(batch_size, "eval.episodes_per_step")
    variables, cwt_params = sharding.replicate((variables, cwt_params), mesh)
    class_ids, counts = [], {method: ([], []) for method in METHODS}
    indexed = episodes.map_with_index(lambda index, record: {**record, "episode": np.int32(index)})
    batches = input_pipeline.loader(indexed, batch_size, workers)
    for batch in tqdm.tqdm(
        batches, desc=description, total=len(episodes) // batch_size, leave=False
    ):
        first = len(class_ids) * batch_size
        if cache_rows is None:
            arrays = {name: batch[name] for name in EPISODE_ARRAYS}
        else:
            arrays = {
                "support_index": np.vectorize(cache_rows.get)(batch["support_ids"]),
                "query_index": np.vectorize(cache_rows.get)(batch["query_id"]),
                "support_masks": batch["support_masks"],
                "query_mask": batch["query_mask"],
            }
        scores, predictions = eval_step(
            variables, cwt_params, sharding.shard_batch(arrays, mesh),
            sharding.shard_batch(batch["episode"], mesh), run_key,
        )  # fmt: skip
        class_ids.append(sharding.gather(batch["class_id"]))
        for method, (intersection, union) in sharding.gather(scores).items():
            counts[method][0].append(intersection)
            counts[method][1].append(union)
        for offset in range(max(0, min(batch_size, panels - first))):
            visualize.write_panel(
                f"{panel_prefix}{first + offset:04d}_class{batch['class_id'][offset]}.png",
                batch["support_images"][offset, 0],
                batch["support_masks"][offset, 0],
                batch["query_image"][offset],
                batch["query_mask"][offset],
                np.asarray(sharding.gather(predictions)[offset]),
            )
    class_ids = np.concatenate(class_ids)
    return {
        method: metrics.summarize_episodes(
            class_ids, np.concatenate(intersections), np.concatenate(unions)
        )
        for method, (intersections, unions) in counts.items()
    }


def evaluate(
    config,
    inputs: input_pipeline.Inputs,
    backbone,
    cwt_params,
    workdir: str,
    writer: MetricWriter,
    episode_list: list[dict] | None,
) -> dict:
    """Runs `eval.num_runs` runs on the test classes and writes `<workdir>/results.json`.

    Run r samples its episodes with seed `seed + r`; given `episode_list` (read from
    `eval.episodes`), the listed episodes are evaluated, in order, in one run.

    Returns:
      The results: mean and standard deviation over runs of mIoU and FB-IoU for the CWT
      and the support-only classifier, per-class IoU, each run's numbers and the config.
    """
    section = config.eval
    model = initialization.pspnet(config.model)
    if episode_list is not None:
        specs = [episode_list]
    else:
        specs = [
            data.sample_episodes(
                inputs.val,
                inputs.test_classes,
                shot=config.data.shot,
                num_episodes=section.num_episodes,
                seed=config.seed + run,
                shuffle_queries=False,
            )  # fmt: skip
            for run in range(section.num_runs)
        ]
    datasets = [
        data.episodes_from_list(inputs.val, list(run_specs), image_size=config.data.image_size)
        for run_specs in specs
    ]
    if section.feature_cache:
        image_ids = [i for run in specs for s in run for i in (s["query_id"], *s["support_ids"])]
        variables, cache_rows = feature_cache(
            model, backbone, inputs.val, image_ids, image_size=config.data.image_size,
            batch_size=section.episodes_per_step, dtype=jnp.dtype(section.cache_dtype),
        )  # fmt: skip
        eval_step = make_cached_eval_step(model, config.inner)
    else:
        variables, cache_rows = backbone, None
        eval_step = make_eval_step(model, config.inner)
    if section.visualize:
        os.makedirs(os.path.join(workdir, "visualize"), exist_ok=True)
    runs = []
    for run, episodes in enumerate(tqdm.tqdm(datasets, desc="eval runs")):
        runs.append(
            run_episodes(
                eval_step,
                variables,
                cwt_params,
                episodes,
                batch_size=section.episodes_per_step,
                workers=config.data.num_workers,
                run_key=jax.random.fold_in(jax.random.key(config.seed), run),
                cache_rows=cache_rows,
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
