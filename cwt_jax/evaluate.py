"""Few-shot evaluation: runs of episodes, mIoU and FB-IoU with and without the CWT."""

import functools
import json
import os

import grain
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
    models,
    optimizers,
    sharding,
    visualize,
)
from cwt_jax.metric_writer import MetricWriter

EPISODE_ARRAYS = ("support_images", "support_masks", "query_image", "query_mask")
GATHERED_ARRAYS = ("support_features", "support_masks", "query_features", "query_mask")
CACHE_MEMORIES = ("device", "replicated", "host")
METHODS = ("cwt", "support_only")


def make_episode_scores(model, inner_config):
    """A jitted function scoring a batch of episodes from their features.

    Each episode is `fewshot.episode_predictions`, its classifier initialisation keyed by
    `fewshot.episode_keys(run_key, episode_index)`, so results do not depend on how
    episodes are batched or sharded. It is compiled without
    `models.inference_compiler_options()`, which slow the inner loop's small matrix
    products, and it is the same program in cached and uncached evaluation, so that both
    fit the same classifiers to the bit.

    Returns:
      `scores(cwt_params, support_features, support_masks, query_features, query_masks,
      episode_index, run_key)` -> ({method: (intersections (B, 2), unions (B, 2))},
      CWT predictions (B, H, W)); masks are uint8.
    """
    optimizer = optimizers.inner_optimizer(inner_config)

    @jax.jit
    def scores(
        cwt_params, support_features, support_masks, query_features, query_masks, index, key
    ):
        def predictions_of(episode_support_features, episode_support_masks, episode_query, episode):
            init_key, _ = fewshot.episode_keys(key, episode)
            init = fewshot.init_classifier(init_key, model.bottleneck_dim, inner_config.init)
            return fewshot.episode_predictions(
                cwt_params,
                episode_support_features.astype(jnp.float32),
                episode_support_masks,
                episode_query.astype(jnp.float32),
                init,
                query_masks.shape[-2:],
                optimizer=optimizer,
                steps=inner_config.steps,
            )

        predictions = jax.vmap(predictions_of)(
            support_features, support_masks, query_features, index
        )
        counts = {
            method: jax.vmap(lambda p, m: metrics.intersection_union(p, m, 2))(
                predictions[method], query_masks
            )
            for method in METHODS
        }
        return counts, predictions["cwt"]

    return scores


def make_features_step(model):
    """The jitted backbone pass of a batch of episodes: `fewshot.episode_features`.

    Compiled with `models.inference_compiler_options()`.

    Returns:
      `features(backbone, support_images (B, K, S, S, 3), query_images (B, S, S, 3))` ->
      support features (B, K, h, w, C) and query features (B, h, w, C).
    """
    return jax.jit(
        functools.partial(fewshot.episode_features, model),
        compiler_options=models.inference_compiler_options(),
    )


def make_eval_step(model, inner_config):
    """An evaluation step over a batch of B episodes given as images.

    The backbone runs once on all B * (K + 1) images (`make_features_step`), then
    `make_episode_scores` vmaps the inner loop over episodes and the CWT over queries.

    Returns:
      `eval_step(backbone, cwt_params, batch, run_key)` -> as `make_episode_scores`;
      `batch` holds `EPISODE_ARRAYS` and `episode` (B,) indices.
    """
    scores = make_episode_scores(model, inner_config)
    features = make_features_step(model)

    def eval_step(backbone, cwt_params, batch, run_key):
        support_features, query_features = features(
            backbone, batch["support_images"], batch["query_image"]
        )
        return scores(
            cwt_params, support_features, batch["support_masks"], query_features,
            batch["query_mask"], batch["episode"], run_key,
        )  # fmt: skip

    return eval_step


def make_gathered_eval_step(model, inner_config):
    """An evaluation step over a batch of B episodes whose features come in the batch.

    For a feature cache kept in host memory: `gathered_batches` gathers each batch's
    features and masks on the host, and the step runs `make_episode_scores` on them.

    Returns:
      `eval_step(None, cwt_params, batch, run_key)` -> as `make_episode_scores`; `batch`
      holds `GATHERED_ARRAYS`, `class_id` (B,) and `episode` (B,) indices.
    """
    scores = make_episode_scores(model, inner_config)

    def eval_step(_, cwt_params, batch, run_key):
        arrays = (batch[name] for name in GATHERED_ARRAYS)
        return scores(cwt_params, *arrays, batch["episode"], run_key)

    return eval_step


def make_cached_eval_step(model, inner_config, cache_placement):
    """An evaluation step over a batch of B episodes whose images are in a feature cache.

    The batch's features and {0, 1, 255} masks are gathered on the devices
    (`make_cache_gather`), so a batch is only indices: nothing is decoded or copied per
    episode. Then as `make_gathered_eval_step`.

    Args:
      model: the PSPNet.
      inner_config: the `inner` config section.
      cache_placement: the cache's sharding (`cache_sharding`).

    Returns:
      `eval_step(cache, cwt_params, batch, run_key)` -> as `make_episode_scores`; `cache`
      is from `feature_cache`, `batch` holds `support_index` (B, K) and `query_index` (B,)
      rows of the cache, `class_id` (B,) and `episode` (B,) indices.
    """
    gathered_step = make_gathered_eval_step(model, inner_config)
    gather = make_cache_gather(cache_placement)

    def eval_step(cache, cwt_params, batch, run_key):
        gathered = {**gather(cache, batch), "episode": batch["episode"]}
        return gathered_step(None, cwt_params, gathered, run_key)

    return eval_step


def feature_cache(
    model, backbone, split, image_ids, *, image_size: int, batch_size: int, dtype, mesh,
    memory: str = "device",
):  # fmt: skip
    """Features and class-id masks of each distinct image, computed once for an evaluation.

    Evaluation applies no augmentation and the backbone is frozen, so an image's
    features are the same in every episode that uses it. Each backbone pass of
    `batch_size` images is split over the devices of the mesh, in all processes: each
    process decodes its share of the images (grain, in threads, while the devices run).
    A device cache stays where the passes computed it: each device keeps its share of
    every pass, a 1 / `mesh.size` part of the cache, which `make_cache_gather` reads. A
    replicated cache is gathered onto every device, a host cache to every process's
    memory.

    Args:
      model: the PSPNet.
      backbone: its variables.
      split: the split holding the images.
      image_ids: ids of the images needed.
      image_size: side S of the evaluation transform.
      batch_size: images per backbone pass, rounded up to a multiple of the mesh's devices.
      dtype: storage dtype of the features (float32, or bfloat16 to halve their memory).
      mesh: the devices of the evaluation (`sharding.data_mesh`).
      memory: "device" (split over the devices), "replicated" (whole on each device) or
        "host" (NumPy, in host memory).

    Returns:
      The cache, `{"features": (P, N, h, w, C), "masks": (P, N, S, S) uint8 class ids}`
      over P passes of N images, and image id -> row, where row r is image r % N of pass
      r // N.
    """
    batch_size = -(-batch_size // mesh.size) * mesh.size  # whole shares for the devices
    image_ids = sorted(set(image_ids))
    backbone = sharding.replicate(backbone, mesh)
    extract = jax.jit(
        lambda variables, images, masks: {
            "features": model.apply(variables, images).astype(dtype),
            "masks": masks,
        },
        out_shardings=sharding.split(mesh),
        compiler_options=models.inference_compiler_options(),
    )
    num_passes = -(-len(image_ids) // batch_size)
    if memory == "host":

        def allocate(outputs):
            return {
                name: np.empty((num_passes, *rows.shape), rows.dtype)
                for name, rows in outputs.items()
            }

        def write(cache, outputs, index):
            for name, rows in sharding.gather(outputs).items():
                cache[name][index] = rows
            return cache

    else:
        placed = cache_sharding(mesh, memory)
        allocate = jax.jit(
            lambda outputs: jax.tree.map(
                lambda rows: jnp.zeros((num_passes, *rows.shape), rows.dtype), outputs
            ),
            out_shardings=placed,
        )
        write = jax.jit(  # in place; a split cache's devices each write their share of the pass
            lambda cache, outputs, index: jax.tree.map(
                lambda rows, new: rows.at[index].set(new), cache, outputs
            ),
            donate_argnums=0,
            out_shardings=placed,
        )

    def load(image_id):
        image, mask = data.transforms.eval_transform(
            *split.load(split.index_of[image_id]), image_size
        )
        return image, mask.astype(np.uint8)

    # Whole passes (one compiled shape): the last is padded with copies of the last image.
    padded = image_ids + image_ids[-1:] * (num_passes * batch_size - len(image_ids))
    share = batch_size // jax.process_count()
    own_ids = [
        i for row, i in enumerate(padded) if row % batch_size // share == jax.process_index()
    ]
    loaded = grain.MapDataset.source(own_ids).map(load).batch(share).to_iter_dataset()
    cache = None
    for index, own_batch in enumerate(
        tqdm.tqdm(loaded, total=num_passes, desc="feature cache", leave=False)
    ):
        outputs = extract(backbone, *sharding.shard_batch(own_batch, mesh))
        cache = write(allocate(outputs) if cache is None else cache, outputs, index)
    return cache, {image_id: row for row, image_id in enumerate(image_ids)}


def prepare_runs(config, model, backbone, split, runs: list[list[dict]]):
    """The step, its variables and the batches that evaluate each run of episodes.

    With `eval.feature_cache`, the features of every image of the runs are computed here,
    once (`feature_cache`, kept in `eval.cache_memory`), and the step gathers them;
    without it, each step runs the backbone on its episodes' images.

    Args:
      config: the whole config (its `data`, `inner` and `eval` sections are read).
      model: the PSPNet.
      backbone: its variables.
      split: the split holding the episodes' images.
      runs: each run's episode specs.

    Returns:
      `(eval_step, variables, batches)` for `run_episodes`: the variables are placed on
      the devices of the evaluation, and `batches(run)` yields the batches of run `run`.
    """
    section, batch_size = config.eval, config.eval.episodes_per_step
    datasets = [  # checks every episode's images and class before any work
        data.episodes_from_list(split, specs, image_size=config.data.image_size) for specs in runs
    ]
    mesh = sharding.data_mesh(batch_size, "eval.episodes_per_step")
    if not section.feature_cache:
        return (
            make_eval_step(model, config.inner),
            sharding.replicate(backbone, mesh),
            lambda run: episode_batches(datasets[run], batch_size, config.data.num_workers),
        )
    image_ids = [i for specs in runs for s in specs for i in (s["query_id"], *s["support_ids"])]
    cache, rows = feature_cache(
        model, backbone, split, image_ids, image_size=config.data.image_size,
        batch_size=section.cache_batch_size, dtype=jnp.dtype(section.cache_dtype), mesh=mesh,
        memory=section.cache_memory,
    )  # fmt: skip
    if section.cache_memory == "host":
        return (
            make_gathered_eval_step(model, config.inner),
            None,
            lambda run: gathered_batches(cached_batches(runs[run], rows, batch_size), cache),
        )
    return (
        make_cached_eval_step(model, config.inner, cache["features"].sharding),
        cache,
        lambda run: cached_batches(runs[run], rows, batch_size),
    )


def episode_batches(episodes, batch_size: int, workers: int):
    """This process's share of each batch of episode records, for `make_eval_step`.

    Args:
      episodes: indexable dataset of episode records.
      batch_size: episodes per compiled step B.
      workers: grain worker processes.

    Yields:
      `EPISODE_ARRAYS`, `class_id` and `episode` (the index in `episodes`).
    """
    indexed = episodes.map_with_index(lambda index, record: {**record, "episode": np.int32(index)})
    for batch in input_pipeline.loader(indexed, batch_size, workers):
        yield {name: batch[name] for name in (*EPISODE_ARRAYS, "class_id", "episode")}


def cached_batches(specs: list[dict], cache_rows: dict[str, int], batch_size: int):
    """This process's share of each batch of episode specs, for `make_cached_eval_step`.

    Args:
      specs: episode specs `{"class_id", "query_id", "support_ids"}`.
      cache_rows: image id -> cache row.
      batch_size: episodes per compiled step B.

    Yields:
      `support_index` (b, K), `query_index` (b,), `class_id` (b,) and `episode` (b,),
      b = B / number of processes.
    """
    columns = {
        "support_index": [[cache_rows[i] for i in s["support_ids"]] for s in specs],
        "query_index": [cache_rows[s["query_id"]] for s in specs],
        "class_id": [s["class_id"] for s in specs],
        "episode": range(len(specs)),
    }
    columns = {name: np.asarray(column, np.int32) for name, column in columns.items()}
    share = batch_size // jax.process_count()
    for start in range(jax.process_index() * share, len(specs), batch_size):
        yield {name: column[start : start + share] for name, column in columns.items()}


def gather_episodes(cache: dict, batch: dict) -> dict:
    """The features and {0, 1, 255} masks of a batch of `cached_batches`, from a whole cache.

    Works on a host (NumPy) cache, and inside `jax.jit` on a device cache held whole by
    each device (a replicated cache, or any cache on one device).

    Args:
      cache: from `feature_cache`.
      batch: `support_index` (B, K), `query_index` (B,) and `class_id` (B,).

    Returns:
      `GATHERED_ARRAYS`: features (B, K, h, w, C) and (B, h, w, C), uint8 masks
      (B, K, S, S) and (B, S, S).
    """
    rows = _episode_rows(
        lambda array, index: _rows(array)[index],
        cache, batch["support_index"], batch["query_index"],
    )  # fmt: skip
    return _with_binary_masks(rows, batch["class_id"])


def cache_sharding(mesh, memory: str):
    """Where a device cache kept in `eval.cache_memory=memory` lies on the mesh.

    "replicated": whole on every device; "device": split over the devices on its second
    (pass) axis, each device holding its share of every pass.
    """
    return sharding.replicated(mesh) if memory == "replicated" else sharding.split(mesh, axis=1)


def make_cache_gather(cache_placement):
    """`gather_episodes` for a device cache, jitted.

    Each device gathers the rows of the whole batch that it holds and zeros for the others;
    a reduce-scatter adds the devices' results and leaves each device its own episodes.
    Adding zeros is exact: the features are those of the cache, bit for bit. A device
    that holds the whole cache gathers its episodes' rows with `gather_episodes`.

    Args:
      cache_placement: the cache's sharding (`cache_sharding`).

    Returns:
      `gather(cache, batch)` -> as `gather_episodes`, sharded like the batch.
    """
    if cache_placement.is_fully_replicated:  # replicated, or split over one device
        return jax.jit(gather_episodes)
    mesh = cache_placement.mesh

    def gather_here(cache, support_index, query_index):  # on each device: its share of the cache
        share = cache["features"].shape[1]  # of each pass
        first = jax.lax.axis_index(sharding.DATA_AXIS) * share

        def take(array, index):  # index (B, ...) -> (B, ..., *array.shape[2:]), 0 where not here
            position = index % (share * mesh.size) - first
            here = (position >= 0) & (position < share)
            rows = _rows(array)[
                index // (share * mesh.size) * share + jnp.clip(position, 0, share - 1)
            ]
            return jnp.where(here.reshape(here.shape + (1,) * (rows.ndim - here.ndim)), rows, 0)

        whole_batch = (
            jax.lax.all_gather(index, sharding.DATA_AXIS, tiled=True)
            for index in (support_index, query_index)
        )
        rows = _episode_rows(take, cache, *whole_batch)
        return jax.lax.psum_scatter(rows, sharding.DATA_AXIS, scatter_dimension=0, tiled=True)

    gather_rows = jax.shard_map(
        gather_here,
        mesh=mesh,
        in_specs=(sharding.split(mesh, axis=1).spec, *(sharding.split(mesh).spec,) * 2),
        out_specs=sharding.split(mesh).spec,
    )

    @jax.jit
    def gather(cache, batch):
        rows = gather_rows(cache, batch["support_index"], batch["query_index"])
        return _with_binary_masks(rows, batch["class_id"])

    return gather


def _rows(array):
    """A cache array (P, pass size, ...) as rows (P * pass size, ...), without a copy."""
    return array.reshape(-1, *array.shape[2:])


def _episode_rows(take, cache: dict, support_index, query_index) -> dict:
    """`GATHERED_ARRAYS` with class-id masks, each taken by `take(cache array, index)`."""
    return {
        "support_features": take(cache["features"], support_index),
        "support_masks": take(cache["masks"], support_index),
        "query_features": take(cache["features"], query_index),
        "query_mask": take(cache["masks"], query_index),
    }


def _with_binary_masks(rows: dict, class_id) -> dict:
    """`_episode_rows` with the class-id masks turned into the episode class's masks."""

    def binary(masks):  # (B, ..., S, S) class ids
        return data.binary_mask(masks, class_id.reshape((-1,) + (1,) * (masks.ndim - 1)))

    return {
        **rows,
        "support_masks": binary(rows["support_masks"]),
        "query_mask": binary(rows["query_mask"]),
    }


def gathered_batches(batches, cache: dict):
    """`cached_batches` with their features and masks gathered from a host cache.

    Args:
      batches: from `cached_batches`.
      cache: a host-memory cache from `feature_cache(..., memory="host")`.

    Yields:
      `GATHERED_ARRAYS`, `class_id` and `episode`, for `make_gathered_eval_step`.
    """
    for batch in batches:
        yield {
            **gather_episodes(cache, batch),
            "class_id": batch["class_id"],
            "episode": batch["episode"],
        }


def run_episodes(
    eval_step,
    variables,
    cwt_params,
    batches,
    *,
    num_episodes: int,
    batch_size: int,
    run_key: jax.Array,
    keep_predictions: int = 0,
    description: str = "eval",
) -> tuple[dict, np.ndarray]:
    """Evaluates one run of episodes, sharded over the devices.

    Steps are dispatched without waiting for their results, which are fetched at the end.

    Args:
      eval_step: from `make_eval_step`, `make_cached_eval_step` or `make_gathered_eval_step`.
      variables: PSPNet variables, the feature cache for a cached step, or None for a
        gathered one, placed on the devices as `prepare_runs` returns them.
      cwt_params: transformer parameters.
      batches: from `episode_batches`, `cached_batches` or `gathered_batches`, to match
        `eval_step`.
      num_episodes: episodes in the run; a multiple of `batch_size`.
      batch_size: episodes per compiled step B.
      run_key: key of the run's classifier initialisations.
      keep_predictions: number of CWT predictions to return, from the first episodes.
      description: progress bar label.

    Returns:
      {method: {"miou", "fb_iou", "per_class_iou"}} for "cwt" and "support_only", and
      the kept predictions (keep_predictions, S, S).
    """
    if num_episodes % batch_size:
        raise optimizers.ConfigError(
            f"{num_episodes} episodes do not split into batches of episodes_per_step="
            f"{batch_size}; make the number of episodes a multiple of it."
        )
    mesh = sharding.data_mesh(batch_size, "eval.episodes_per_step")
    cwt_params = sharding.replicate(cwt_params, mesh)
    class_ids, counts, kept = [], [], []
    for batch in tqdm.tqdm(
        batches, desc=description, total=num_episodes // batch_size, leave=False
    ):
        batch = sharding.shard_batch(batch, mesh)
        scores, predictions = eval_step(variables, cwt_params, batch, run_key)
        class_ids.append(batch["class_id"])
        counts.append(scores)
        if len(kept) * batch_size < keep_predictions:
            kept.append(predictions)
    class_ids, counts, kept = sharding.gather((class_ids, counts, kept))
    class_ids = np.concatenate(class_ids)
    kept = np.concatenate(kept)[:keep_predictions] if kept else np.zeros((0,))
    results = {
        method: metrics.summarize_episodes(
            class_ids,
            np.concatenate([c[method][0] for c in counts]),
            np.concatenate([c[method][1] for c in counts]),
        )
        for method in METHODS
    }
    return results, kept


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
            data.sample_episode_list(
                inputs.val,
                inputs.test_classes,
                shot=config.data.shot,
                num_episodes=section.num_episodes,
                seed=config.seed + run,
            )
            for run in range(section.num_runs)
        ]
    eval_step, variables, batches = prepare_runs(config, model, backbone, inputs.val, specs)
    runs = []
    for run, run_specs in enumerate(tqdm.tqdm(specs, desc="eval runs")):
        scores, predictions = run_episodes(
            eval_step, variables, cwt_params, batches(run), num_episodes=len(run_specs),
            batch_size=section.episodes_per_step,
            run_key=jax.random.fold_in(jax.random.key(config.seed), run),
            keep_predictions=section.visualize if run == 0 else 0, description=f"eval run {run}",
        )  # fmt: skip
        runs.append(scores)
        writer.write(
            "eval", run, {f"{m}_{k}": scores[m][k] for m in METHODS for k in ("miou", "fb_iou")}
        )
        if len(predictions) and jax.process_index() == 0:
            episodes = data.episodes_from_list(
                inputs.val, run_specs, image_size=config.data.image_size
            )
            write_panels(os.path.join(workdir, "visualize"), episodes, predictions)
    results = {**_summary(runs, "cwt"), "support_only": _summary(runs, "support_only")}
    results["runs"] = runs
    results["config"] = config.to_dict()
    if jax.process_index() == 0:
        _write_json(os.path.join(workdir, "results.json"), results)
        print(format_table(results, inputs.classes.names))
    return results


def write_panels(directory: str, episodes, predictions: np.ndarray) -> None:
    """Writes a PNG panel for each of the first `len(predictions)` episodes."""
    os.makedirs(directory, exist_ok=True)
    for index, prediction in enumerate(predictions):
        episode = episodes[index]
        visualize.write_panel(
            os.path.join(directory, f"episode{index:04d}_class{episode['class_id']}.png"),
            episode["support_images"][0],
            episode["support_masks"][0],
            episode["query_image"],
            episode["query_mask"],
            prediction,
        )


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
