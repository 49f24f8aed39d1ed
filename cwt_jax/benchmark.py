"""Throughput of every stage on whatever devices JAX sees, on random inputs of the config's shapes.

  python -m cwt_jax.benchmark --config=configs/pascal_fold0_1shot.py [--stages=eval ...] \
      [--config.key=value ...]

Prints one JSON object: episodes/s of evaluation with and without the feature cache and
of meta-training, images/s of pre-training and of the frozen backbone, compile times, peak
memory, FLOPs per episode from XLA's cost analysis (the inner loop's body counted
`inner.steps` times: XLA counts a loop body once) and the FLOP/s achieved, in all and by
the backbone alone, and the memory XLA allocates per image in the backbone's program
(arguments, weights included, outputs and temporaries, for one episode's images).
`--stages` (eval, metatrain, pretrain; all by default) picks what is measured: each stage
compiles programs of its own; a DINOv2 backbone has no pretrain stage.
"""

import functools
import json
import resource
import sys
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import flags

from cwt_jax import cli, compilation, errors, models, optimizers, sharding
from cwt_jax.data.labels import IGNORE_LABEL
from cwt_jax.evaluation import evaluate, feature_cache
from cwt_jax.fewshot import classifier, episode, inner
from cwt_jax.models import cwt
from cwt_jax.training import loop, metatrain, pretrain

# What `--stages` can name, in the order they are measured.
STAGES = ("eval", "metatrain", "pretrain")


def timed(step, *args, repeats: int) -> tuple[float, float]:
    """Times a step made of one or more jitted programs.

    Returns:
      Compile seconds (the first call, which compiles, less a later call) and mean
      seconds per call over `repeats` calls after it.
    """
    start = time.perf_counter()
    jax.block_until_ready(step(*args))
    first_call = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(step(*args))
    step_seconds = (time.perf_counter() - start) / repeats
    return max(first_call - step_seconds, 0.0), step_seconds


def program_flops(jitted, *args) -> float:
    """FLOPs of one call of a jitted function according to XLA's cost analysis.

    The analysis is of the lowered program: the compiled one hides GPU convolutions in
    library calls that the analysis does not count.
    """
    analysis = jitted.lower(*args).cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return float(analysis.get("flops", 0.0))


def program_memory_bytes(function, *args) -> int:
    """Bytes XLA allocates for a program's arguments, outputs and temporaries."""
    memory = jax.jit(function).lower(*args).compile().memory_analysis()
    return memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes


def episode_batch(rng: np.random.Generator, batch: int, shot: int, size: int) -> dict:
    """Random normalised images and masks with a foreground square, ignore padding."""
    masks = np.zeros((batch, shot + 1, size, size), np.uint8)
    masks[:, :, size // 4 : size // 2, size // 3 : 2 * size // 3] = 1
    masks[:, :, -size // 16 :] = IGNORE_LABEL
    images = rng.standard_normal((batch, shot + 1, size, size, 3), np.float32)
    return {
        "support_images": images[:, 1:],
        "support_masks": masks[:, 1:],
        "query_image": images[:, 0],
        "query_mask": masks[:, 0],
    }


def peak_memory_bytes() -> int:
    """Peak device memory where the backend reports it, else the process's peak RSS."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def benchmark(config, repeats: int, stages: tuple[str, ...] = STAGES) -> dict:
    """Measures the `stages` asked for; see the module docstring."""
    if config.deterministic:
        compilation.use_deterministic_mode()
    rng = np.random.default_rng(config.seed)
    model = models.from_config(config.model)
    inner_loop = inner.from_config(config)
    backbone = models.init_variables(model, jax.random.key(0))
    meta_params = {
        "cwt": cwt.init(jax.random.key(1), model.feature_channels, config.cwt.heads),
        "inner": inner.init_inner_params(model.feature_channels, config.inner),
    }
    results = {
        "device": jax.devices()[0].device_kind,
        "devices": jax.device_count(),
        "backbone": config.model.backbone,
        "layers": config.model.layers,
        "image_size": config.data.image_size,
        "shot": config.data.shot,
        "inner_steps": config.inner.steps,
        "dtype": config.model.dtype,
    }
    if "eval" in stages:
        results |= benchmark_eval(config, model, inner_loop, backbone, meta_params, rng, repeats)
    if "metatrain" in stages:
        results |= benchmark_metatrain(
            config, model, inner_loop, backbone, meta_params, rng, repeats
        )
    if "pretrain" in stages and not models.is_frozen_encoder(model):  # no stage 1 for a ViT
        results |= benchmark_pretrain(config, model, rng, repeats)
    results["peak_memory_bytes"] = peak_memory_bytes()
    return results


def benchmark_eval(config, model, inner_loop, backbone, meta_params, rng, repeats: int) -> dict:
    """Evaluation with and without the feature cache, the backbone alone and their FLOPs."""
    size, shot = config.data.image_size, config.data.shot
    key = jax.random.key(2)
    batch_size = config.eval.episodes_per_step
    mesh = sharding.data_mesh(batch_size, "eval.episodes_per_step")
    episodes = {**episode_batch(rng, batch_size, shot, size), "episode": np.arange(batch_size)}
    batch = sharding.shard_batch(episodes, mesh)
    variables, params = sharding.replicate((backbone, meta_params), mesh)
    # Evaluation's two programs (the backbone's, then `evaluate.make_scores`), one by one.
    images = (batch["support_images"], batch["query_image"])
    features_step = functools.partial(episode.episode_features, model)
    backbone_compile_s, backbone_s = timed(features_step, variables, *images, repeats=repeats)
    support_features, query_features = features_step(variables, *images)
    scores = evaluate.make_scores(model, inner_loop)
    features = {
        "support_features": support_features,
        "support_masks": batch["support_masks"],
        "query_features": query_features,
        "query_mask": batch["query_mask"],
        "episode": batch["episode"],
    }
    scores_compile_s, scores_s = timed(scores, params, features, key, repeats=repeats)
    results = {
        "eval_episodes_per_step": batch_size,
        "eval_compile_s": backbone_compile_s + scores_compile_s,
        "eval_episodes_per_s": batch_size / (backbone_s + scores_s),
        "backbone_images_per_s": batch_size * (shot + 1) / backbone_s,
    }

    # The cached step: one batch of `feature_cache.batches` from a cache of this batch's
    # images placed as `eval.cache_memory` says, then the scores program timed above.
    arrays = {  # one pass of rows: episode b's supports at b * K + k, then the B queries
        "features": jnp.concatenate(
            [support_features.reshape(-1, *support_features.shape[2:]), query_features]
        )[None],
        "masks": np.concatenate(
            [episodes["support_masks"].reshape(-1, size, size), episodes["query_mask"]]
        )[None],
    }
    placed = feature_cache.placement(mesh, config.eval.cache_memory)
    cache = feature_cache.FeatureCache(
        jax.device_get(arrays) if placed is None else jax.device_put(arrays, placed),
        {str(row): row for row in range(batch_size * (shot + 1))},
        placed,
        mesh,
    )
    specs = [
        {
            "class_id": 1,
            "query_id": str(batch_size * shot + b),
            "support_ids": [str(b * shot + k) for k in range(shot)],
        }
        for b in range(batch_size)
    ]
    gather_compile_s, gather_s = timed(
        lambda: next(feature_cache.batches(cache, specs, batch_size)), repeats=repeats
    )
    results["eval_cached_compile_s"] = gather_compile_s + scores_compile_s
    results["eval_cached_episodes_per_s"] = batch_size / (gather_s + scores_s)

    all_images = jnp.concatenate([images[0], images[1][:, None]], axis=1)
    backbone_flops = program_flops(
        jax.jit(functools.partial(model.apply, train=False)),
        variables,
        all_images.reshape(-1, *all_images.shape[2:]),
    )
    results["backbone_flops_per_image"] = backbone_flops / (batch_size * (shot + 1))
    results["backbone_memory_bytes_per_image"] = program_memory_bytes(
        functools.partial(model.apply, train=False), variables, all_images[0]
    ) / (shot + 1)
    results["backbone_flop_per_s"] = backbone_flops / backbone_s
    step_flops = backbone_flops + program_flops(scores, params, features, key)
    inner_optimizer = inner_loop.optimizer

    @jax.jit
    def inner_update(weights, features, masks):
        grads = jax.grad(classifier.support_loss)(weights, features, masks, jnp.ones(2))
        return inner_optimizer.update(grads, inner_optimizer.init(weights), weights)

    update_flops = program_flops(
        inner_update,
        jnp.zeros((2, model.feature_channels)),
        arrays["features"][0, :shot],
        episodes["support_masks"][0],
    )
    episode_flops = step_flops / batch_size + (config.inner.steps - 1) * update_flops
    results["eval_flops_per_episode"] = episode_flops
    results["eval_flop_per_s"] = episode_flops * results["eval_episodes_per_s"]
    return results


def benchmark_metatrain(
    config, model, inner_loop, backbone, meta_params, rng, repeats: int
) -> dict:
    """Meta-training steps: episodes/s and compile time."""
    size, shot = config.data.image_size, config.data.shot
    key = jax.random.key(3)
    meta_batch = config.metatrain.episodes_per_step
    mesh = sharding.data_mesh(meta_batch, "metatrain.episodes_per_step")
    train_step = metatrain.make_train_step(model, inner_loop, config)
    optimizer = optimizers.meta_optimizer(config.metatrain)
    state = loop.new_train_state(meta_params, optimizer)
    meta_inputs = sharding.shard_batch(episode_batch(rng, meta_batch, shot, size), mesh)
    args = (*sharding.replicate((state, backbone), mesh), meta_inputs, key)
    compile_s, meta_s = timed(train_step, *args, repeats=repeats)
    return {
        "metatrain_episodes_per_step": meta_batch,
        "metatrain_compile_s": compile_s,
        "metatrain_episodes_per_s": meta_batch / meta_s,
    }


def benchmark_pretrain(config, model, rng, repeats: int) -> dict:
    """Pre-training steps: images/s and compile time."""
    key = jax.random.key(4)
    section = config.pretrain
    mesh = sharding.data_mesh(section.batch_size, "pretrain.batch_size")
    schedule = optax.constant_schedule(section.lr)
    optimizer = optimizers.from_config(section, "pretrain", schedule)
    state = pretrain.initial_state(config, model, optimizer, num_classes=16, resnet=None)
    pretrain_step = pretrain.make_train_step(model, optimizer, schedule, section.label_smoothing)
    size = section.image_size
    pretrain_batch = {
        "image": rng.standard_normal((section.batch_size, size, size, 3), np.float32),
        "mask": rng.integers(0, 16, (section.batch_size, size, size)).astype(np.int32),
    }
    args = (sharding.replicate(state, mesh), sharding.shard_batch(pretrain_batch, mesh), key)
    compile_s, pretrain_s = timed(pretrain_step, *args, repeats=repeats)
    return {
        "pretrain_compile_s": compile_s,
        "pretrain_images_per_s": section.batch_size / pretrain_s,
    }


def define_flags(flag_values: flags.FlagValues) -> None:
    """The command's flags: defined only when this module runs as a program."""
    cli.define_config_flag(flag_values)
    flags.DEFINE_integer(
        "repeats", 5, "Timed calls per measurement, after one warm-up.", flag_values=flag_values
    )
    flags.DEFINE_multi_enum(
        "stages",
        list(STAGES),
        list(STAGES),
        "Stages to measure; repeat the flag for several.",
        flag_values=flag_values,
    )


def main(argv: Sequence[str], flag_values: flags.FlagValues) -> None:
    """Prints the benchmark of the config as JSON."""
    del argv
    try:
        measured = benchmark(flag_values.config, flag_values.repeats, tuple(flag_values.stages))
        print(json.dumps(measured, indent=1))
    except errors.ConfigError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    cli.run(main, define_flags)
