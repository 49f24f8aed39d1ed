"""Few-shot evaluation: runs of episodes scored with and without the CWT.

A run's batches come from a feature source (`feature_source.make`): either the backbone
runs on each batch's images, or a feature cache made once for all runs is read. Either
way `make_scores` scores each batch from `episode.episode_logit_differences`, at the
padded test size and, where the batch holds the queries' original masks, at the original
resolution; `run_episodes` sums the counts. Evaluation and meta-training's validation
both go this way. Each evaluation run has a seed (`evaluation_seeds`), the one source of
its episodes and classifier initialisations.
"""

import functools
import os
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from cwt_jax import compilation, data, models, seeds, sharding
from cwt_jax.data import input_pipeline
from cwt_jax.evaluation import feature_source, metrics, results, visualize
from cwt_jax.evaluation.metric_writer import MetricWriter
from cwt_jax.fewshot import classifier, episode, inner, repri


@functools.cache
def make_scores(model, inner_loop: inner.InnerLoop, objectives: tuple[str, ...] = ()) -> Callable:
    """A jitted function scoring a batch of episodes from their features.

    Each episode is `episode.episode_logit_differences`, its classifier initialisation
    keyed by `episode.episode_keys(run_key, episode)`, so results do not depend on how
    episodes are batched or sharded, nor on where their features come from. The
    differences are compared with the padded test-size masks (`classifier.foreground`)
    and, where the batch holds query_original_mask, with the original masks
    (`classifier.foreground_at_side`, PFENet's `ori_resize`). One function per model,
    inner-loop settings and further objectives: meta-training's validation and
    evaluation share its programs. RePRI's query terms count the query pixels
    `inner.repri.query_pixels` names, read from the padded query mask's 255 pixels.

    Args:
      model: the backbone.
      inner_loop: the inner loop's settings; the CWT adapts its objective's classifier.
      objectives: further objectives scored without the CWT (`eval.objectives`).

    Returns:
      `scores(params, batch, run_key)` -> ({resolution: {method: (intersections (B, 2),
      unions (B, 2))}}, {method: predictions (B, S, S)}), resolution "padded" and, with
      original masks, "original", methods `episode.methods(inner_loop.objective,
      objectives)`; `params` are the meta-learned `{"cwt", "inner"}` (see
      `fewshot.inner`), `batch` as `feature_source` yields it.
    """
    scored = episode.methods(inner_loop.objective, objectives)

    @jax.jit
    def scores(params, batch, run_key):
        size = batch["query_mask"].shape[-2:]

        def differences_of(support_features, support_masks, query_features, query_mask, index):
            init_key, _ = episode.episode_keys(run_key, index)
            init = inner.init_classifier(
                init_key, params["inner"], model.feature_channels, inner_loop.init
            )
            valid = None
            if "repri" in scored:
                valid = repri.query_valid(
                    query_mask,
                    query_features.shape[:2],
                    inner_loop.repri_settings.query_pixels,
                )
            return episode.episode_logit_differences(
                params,
                support_features.astype(jnp.float32),
                support_masks,
                query_features.astype(jnp.float32),
                init,
                inner_loop,
                objectives=objectives,
                query_valid=valid,
            )

        names = ("support_features", "support_masks", "query_features", "query_mask", "episode")
        differences = jax.vmap(differences_of)(*(batch[name] for name in names))
        predictions = {m: classifier.foreground(d, size) for m, d in differences.items()}
        compared = {"padded": (predictions, batch["query_mask"])}
        if "query_original_mask" in batch:
            grid = batch["query_original_mask"].shape[-1]
            at_side = jax.vmap(lambda d, side: classifier.foreground_at_side(d, size, side, grid))
            original = {m: at_side(d, batch["query_side"]) for m, d in differences.items()}
            compared["original"] = (original, batch["query_original_mask"])
        counts = {
            resolution: {
                method: jax.vmap(lambda p, m: metrics.intersection_union(p, m, 2))(
                    maps[method], labels
                )
                for method in scored
            }
            for resolution, (maps, labels) in compared.items()
        }
        return counts, predictions

    return scores


def run_episodes(
    scores: Callable,
    source: feature_source.FeatureSource,
    params,
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
      source: from `feature_source.make`.
      params: the meta-learned `{"cwt", "inner"}` (see `fewshot.inner`).
      specs: the run's episode specs.
      batch_size: episodes per compiled step B.
      run_key: key of the run's classifier initialisations.
      keep_predictions: number of episodes to return predictions of, from the first.
      description: progress bar label.

    Returns:
      {method: {"miou", "fb_iou", "per_class_iou"}} for each method the scores have
      (`make_scores`), e.g. "cwt" and "support_only", at the padded test size, with the
      same at the original resolution under "original_resolution" where the source
      yields original masks; and {method:
      {"predictions" (N, S, S), "iou" (N,)}} of the first N = keep_predictions episodes.
    """
    padded = list(specs) + [specs[-1]] * (-len(specs) % batch_size)
    params = sharding.replicate(params, source.mesh)
    # Each process loads a share of every batch: the first episodes lie in the first
    # `keep_predictions` episodes' worth of batches of each process.
    kept_batches = -(-keep_predictions * jax.process_count() // batch_size)
    class_ids, episodes, counts, kept = [], [], [], []
    for batch in tqdm.tqdm(
        source.batches(padded, batch_size),
        desc=description,
        total=len(padded) // batch_size,
        leave=False,
    ):
        batch_counts, predictions = scores(params, batch, run_key)
        class_ids.append(batch["class_id"])
        episodes.append(batch["episode"])
        counts.append(batch_counts)
        if len(kept) < kept_batches:
            kept.append(predictions)
    class_ids, episodes, counts, kept = sharding.gather((class_ids, episodes, counts, kept))
    episodes = np.concatenate(episodes)
    scored = results.methods_of(counts[0]["padded"])
    counts = {  # resolution -> method -> (E, 2) intersections and unions
        resolution: {
            method: [np.concatenate([c[resolution][method][i] for c in counts]) for i in (0, 1)]
            for method in scored
        }
        for resolution in counts[0]
    }
    real = episodes < len(specs)  # the padding's copies are left out
    class_ids = np.concatenate(class_ids)[real]
    summaries = {
        resolution: {
            method: metrics.summarize_episodes(class_ids, c[method][0][real], c[method][1][real])
            for method in scored
        }
        for resolution, c in counts.items()
    }
    run = summaries["padded"]
    if "original" in summaries:
        run["original_resolution"] = summaries["original"]
    first = np.argsort(episodes)[:keep_predictions]  # rows of the first episodes, in order
    first = first[episodes[first] < min(keep_predictions, len(specs))]
    shown = {  # their predictions and foreground IoUs
        method: {
            "predictions": np.concatenate([k[method] for k in kept])[first] if kept else None,
            "iou": metrics.iou(
                counts["padded"][method][0][first, 1], counts["padded"][method][1][first, 1]
            ),
        }
        for method in scored
    }
    return run, shown


def evaluated_objectives(config) -> tuple[str, ...]:
    """The inner objectives an evaluation scores: `inner.objective`, then `eval.objectives`."""
    return tuple(dict.fromkeys((config.inner.objective, *config.eval.objectives)))


def evaluation_seeds(config, episode_list: list[dict] | None) -> list[int]:
    """The seed of each evaluation run.

    `eval.seeds`, or where it is empty `eval.num_runs` seeds from `seed` on (seed,
    seed + 1, ...); given `episode_list`, its one run has the first of them.
    """
    run_seeds = [int(seed) for seed in config.eval.seeds] or [
        config.seed + run for run in range(config.eval.num_runs)
    ]
    return run_seeds[:1] if episode_list is not None else run_seeds


def evaluation_runs(
    config, inputs: input_pipeline.Inputs, episode_list: list[dict] | None
) -> list[list[dict]]:
    """Each evaluation run's episode specs, on the test classes of the val split.

    A run samples its episodes with its seed (`evaluation_seeds`), so a seed gives the
    same episodes wherever it stands among the seeds; given `episode_list` (read from
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
            seed=seed,
        )
        for seed in evaluation_seeds(config, None)
    ]


def evaluate(
    config,
    model: models.PSPNet | models.DinoV2,
    inner_loop: inner.InnerLoop,
    inputs: input_pipeline.Inputs,
    backbone,
    params,
    workdir: str,
    writer: MetricWriter,
    episode_list: list[dict] | None,
    report: Callable[[str], None],
) -> dict:
    """Runs one run per seed on the test classes and writes `<workdir>/results.json`.

    `model` is the backbone of `backbone`, `inner_loop` the config's (`inner.from_config`),
    `params` the meta-learned `{"cwt", "inner"}` (see `fewshot.inner`). A run's episodes
    and its classifier initialisations (the key of `seeds.Stream.EVALUATION` under the
    run's seed) depend on its seed only. Its labels are compared at the resolutions
    `eval.label_resolution` names. In a run of several processes, process 0 writes the
    files and `report`s the results table, the timing line and what it wrote.

    Returns:
      The results (`results.summarize`), with where the time went under `timing`: the
      features (the feature cache, when there is one), the episodes, and the XLA
      programs built in both (`compilation.Compilations.summary`).
    """
    section = config.eval
    start = time.perf_counter()
    names = dict(enumerate(inputs.val.class_names, start=1))
    runs = evaluation_runs(config, inputs, episode_list)
    run_seeds = evaluation_seeds(config, episode_list)
    with compilation.recorded() as compiled:
        source = feature_source.make(
            config,
            model,
            backbone,
            inputs.val,
            runs,
            original_masks=section.label_resolution != "padded",
        )
        if source.cache is not None:  # its last passes may still be running on the devices
            jax.block_until_ready(source.cache.arrays)
        features_s = time.perf_counter() - start
        objectives = evaluated_objectives(config)[1:]
        scores, per_run = make_scores(model, inner_loop, objectives), []
        for run, (seed, specs) in enumerate(
            tqdm.tqdm(zip(run_seeds, runs, strict=True), desc="eval runs", total=len(runs))
        ):
            run_scores, shown = run_episodes(
                scores,
                source,
                params,
                specs,
                batch_size=section.episodes_per_step,
                run_key=seeds.key(seed, seeds.Stream.EVALUATION),
                keep_predictions=section.visualize if run == 0 else 0,
                description=f"eval run {run} (seed {seed})",
            )
            reported = {"seed": seed, **results.at_resolution(run_scores, section.label_resolution)}
            per_run.append(reported)
            writer.write("eval", run, results.run_scalars(reported))
            if run == 0 and section.visualize and jax.process_index() == 0:
                episodes = data.episodes_from_list(
                    inputs.val, specs, image_size=config.data.image_size, resize=config.data.resize
                )
                visualize.write_panels(
                    os.path.join(workdir, "visualize"),
                    episodes,
                    {method: shown[method]["predictions"] for method in shown},
                    {method: shown[method]["iou"] for method in shown},
                    names,
                )
    wall_time_s = time.perf_counter() - start
    timing = {
        "wall_time_s": round(wall_time_s, 1),
        "features_s": round(features_s, 1),
        "episodes_s": round(wall_time_s - features_s, 1),
        **compiled.summary(),
    }
    summary = results.summarize(
        per_run,
        config,
        classes={class_id: names[class_id] for class_id in inputs.test_classes},
        episodes=[len(specs) for specs in runs],
        timing=timing,
        data_fingerprint=data.fingerprint([inputs.train, inputs.val]),
    )
    if jax.process_index() == 0:
        path = os.path.join(workdir, "results.json")
        results.write(path, summary)
        report(results.format_table(summary, names))
        report(results.format_timing(timing))
        report(
            f"Wrote {path}" + (f" and panels to {workdir}/visualize" if section.visualize else "")
        )
    return summary
