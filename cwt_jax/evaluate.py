"""Few-shot evaluation: runs of episodes scored with and without the CWT.

A run's batches come from a feature source (`feature_source`): either the backbone runs
on each batch's images, or a feature cache made once for all runs is read
(`cwt_jax.feature_cache`). Either way `make_scores` scores each batch with
`fewshot.episode_predictions`, and `run_episodes` sums the counts. Evaluation and
meta-training's validation both go this way.
"""

import dataclasses
import functools
import os
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import Mesh

from cwt_jax import (
    data,
    feature_cache,
    fewshot,
    initialization,
    input_pipeline,
    metrics,
    optimizers,
    results,
    seeds,
    sharding,
    visualize,
)
from cwt_jax.metric_writer import MetricWriter

EPISODE_ARRAYS = ("support_images", "support_masks", "query_image", "query_mask")
METHODS = ("cwt", "support_only")


@dataclasses.dataclass(frozen=True)
class FeatureSource:
    """Where evaluation's features come from.

    Attributes:
      batches: `(specs, batch_size)` -> this process's share of each batch of the specs'
        episodes, as global arrays on `mesh`: support_features (B, K, h, w, C),
        support_masks (B, K, S, S), query_features (B, h, w, C), query_mask (B, S, S),
        class_id (B,) and episode (B,), the index in `specs`; `len(specs)` is a multiple
        of `batch_size`.
      mesh: the devices of the evaluation.
      cache: the feature cache read, None where the backbone runs on each batch.
    """

    batches: Callable[[Sequence[dict], int], Iterator[dict]]
    mesh: Mesh
    cache: feature_cache.FeatureCache | None = None


def feature_source(config, model, backbone, split: data.Split, runs: list[list[dict]]):
    """The feature source of the runs' episodes; every episode is checked first.

    With `eval.feature_cache`, the features of every image of the runs are computed here,
    once; without it, each batch runs the backbone on its episodes' images.

    Args:
      config: the whole config (its `data` and `eval` sections are read).
      model: the PSPNet.
      backbone: its variables.
      split: the split holding the episodes' images.
      runs: each run's episode specs.

    Returns:
      A `FeatureSource`.
    """
    section = config.eval
    for specs in runs:  # checks every episode's images and class before any work
        data.episodes_from_list(split, specs, image_size=config.data.image_size)
    mesh = sharding.data_mesh(section.episodes_per_step, "eval.episodes_per_step")
    if not section.feature_cache:
        backbone = sharding.replicate(backbone, mesh)
        return FeatureSource(
            functools.partial(_backbone_batches, model, backbone, split, config.data, mesh),
            mesh,
        )
    image_ids = [i for specs in runs for s in specs for i in (s["query_id"], *s["support_ids"])]
    cache = feature_cache.build(
        model,
        backbone,
        split,
        image_ids,
        image_size=config.data.image_size,
        batch_size=section.cache_batch_size,
        dtype=jnp.dtype(section.cache_dtype),
        mesh=mesh,
        memory=section.cache_memory,
    )
    return FeatureSource(functools.partial(feature_cache.batches, cache), mesh, cache)


def _backbone_batches(model, backbone, split, data_config, mesh, specs, batch_size):
    """`FeatureSource.batches` running the backbone on each batch's images."""
    episodes = data.episodes_from_list(split, specs, image_size=data_config.image_size)
    episodes = episodes.map_with_index(lambda index, record: {**record, "episode": index})
    for batch in input_pipeline.loader(episodes, batch_size, data_config.num_workers):
        names = (*EPISODE_ARRAYS, "class_id", "episode")
        batch = sharding.shard_batch({name: np.asarray(batch[name]) for name in names}, mesh)
        support_features, query_features = fewshot.episode_features(
            model, backbone, batch["support_images"], batch["query_image"]
        )
        yield {
            "support_features": support_features,
            "support_masks": batch["support_masks"],
            "query_features": query_features,
            "query_mask": batch["query_mask"],
            "class_id": batch["class_id"],
            "episode": batch["episode"],
        }


def make_scores(model, inner_config) -> Callable:
    """A jitted function scoring a batch of episodes from their features.

    Each episode is `fewshot.episode_predictions`, its classifier initialisation keyed by
    `fewshot.episode_keys(run_key, episode)`, so results do not depend on how episodes are
    batched or sharded, nor on where their features come from.

    Returns:
      `scores(cwt_params, batch, run_key)` -> ({method: (intersections (B, 2), unions
      (B, 2))}, CWT predictions (B, S, S)); `batch` as `FeatureSource.batches` yields.
    """
    optimizer = optimizers.inner_optimizer(inner_config)

    @jax.jit
    def scores(cwt_params, batch, run_key):
        size = batch["query_mask"].shape[-2:]

        def predictions_of(support_features, support_masks, query_features, episode):
            init_key, _ = fewshot.episode_keys(run_key, episode)
            init = fewshot.init_classifier(init_key, model.bottleneck_dim, inner_config.init)
            return fewshot.episode_predictions(
                cwt_params,
                support_features.astype(jnp.float32),
                support_masks,
                query_features.astype(jnp.float32),
                init,
                size,
                optimizer=optimizer,
                steps=inner_config.steps,
            )

        predictions = jax.vmap(predictions_of)(
            *(batch[name] for name in ("support_features", "support_masks", "query_features")),
            batch["episode"],
        )
        counts = {
            method: jax.vmap(lambda p, m: metrics.intersection_union(p, m, 2))(
                predictions[method], batch["query_mask"]
            )
            for method in METHODS
        }
        return counts, predictions["cwt"]

    return scores


def run_episodes(
    scores: Callable,
    source: FeatureSource,
    cwt_params,
    specs: Sequence[dict],
    *,
    batch_size: int,
    run_key: jax.Array,
    keep_predictions: int = 0,
    description: str = "eval",
) -> tuple[dict, np.ndarray]:
    """Evaluates one run of episodes, sharded over the source's devices.

    Any number of episodes works with any batch: the last batch is padded with copies of
    the last episode, whose counts are then dropped. Steps are dispatched without waiting
    for their results, which are fetched at the end.

    Args:
      scores: from `make_scores`.
      source: from `feature_source`.
      cwt_params: transformer parameters.
      specs: the run's episode specs.
      batch_size: episodes per compiled step B.
      run_key: key of the run's classifier initialisations.
      keep_predictions: number of CWT predictions to return, from the first episodes.
      description: progress bar label.

    Returns:
      {method: {"miou", "fb_iou", "per_class_iou"}} for "cwt" and "support_only", and the
      kept predictions (keep_predictions, S, S).
    """
    padded = list(specs) + [specs[-1]] * (-len(specs) % batch_size)
    cwt_params = sharding.replicate(cwt_params, source.mesh)
    class_ids, episodes, counts, kept = [], [], [], []
    for batch in tqdm.tqdm(
        source.batches(padded, batch_size),
        desc=description,
        total=len(padded) // batch_size,
        leave=False,
    ):
        batch_counts, predictions = scores(cwt_params, batch, run_key)
        class_ids.append(batch["class_id"])
        episodes.append(batch["episode"])
        counts.append(batch_counts)
        if len(kept) * batch_size < keep_predictions:
            kept.append(predictions)
    class_ids, episodes, counts, kept = sharding.gather((class_ids, episodes, counts, kept))
    real = np.concatenate(episodes) < len(specs)  # the padding's copies are left out

    def column(method, index):  # intersections (0) or unions (1) of the real episodes
        return np.concatenate([batch_counts[method][index] for batch_counts in counts])[real]

    run = {
        method: metrics.summarize_episodes(
            np.concatenate(class_ids)[real], column(method, 0), column(method, 1)
        )
        for method in METHODS
    }
    kept = np.concatenate(kept)[:keep_predictions] if kept else np.zeros((0,))
    return run, kept


def evaluation_runs(
    config, inputs: input_pipeline.Inputs, episode_list: list[dict] | None
) -> list[list[dict]]:
    """Each evaluation run's episode specs, on the test classes of the val split.

    Run r samples its episodes with seed `seed + r`; given `episode_list` (read from
    `eval.episodes`), the listed episodes are evaluated, in order, in one run.
    """
    if episode_list is not None:
        return [episode_list]
    return [
        data.sample_episode_list(
            inputs.val,
            inputs.test_classes,
            shot=config.data.shot,
            num_episodes=config.eval.num_episodes,
            seed=config.seed + run,
        )
        for run in range(config.eval.num_runs)
    ]


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

    In a run of several processes, process 0 writes the files.

    Returns:
      The results (`results.summarize`).
    """
    section = config.eval
    model = initialization.pspnet(config.model)
    runs = evaluation_runs(config, inputs, episode_list)
    source = feature_source(config, model, backbone, inputs.val, runs)
    scores = make_scores(model, config.inner)
    per_run = []
    for run, specs in enumerate(tqdm.tqdm(runs, desc="eval runs")):
        run_scores, predictions = run_episodes(
            scores,
            source,
            cwt_params,
            specs,
            batch_size=section.episodes_per_step,
            run_key=jax.random.fold_in(seeds.key(config.seed, seeds.Stream.EVALUATION), run),
            keep_predictions=section.visualize if run == 0 else 0,
            description=f"eval run {run}",
        )
        per_run.append(run_scores)
        writer.write(
            "eval",
            run,
            {f"{m}_{k}": run_scores[m][k] for m in METHODS for k in ("miou", "fb_iou")},
        )
        if len(predictions) and jax.process_index() == 0:
            episodes = data.episodes_from_list(inputs.val, specs, image_size=config.data.image_size)
            visualize.write_panels(os.path.join(workdir, "visualize"), episodes, predictions)
    summary = results.summarize(per_run, config)
    if jax.process_index() == 0:
        results.write(os.path.join(workdir, "results.json"), summary)
        print(results.format_table(summary, inputs.classes.names))
    return summary
