"""Stage 2: episodic meta-training of the CWT on a frozen backbone."""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from cwt_jax import data, errors, models, optimizers, seeds, sharding
from cwt_jax.data import input_pipeline
from cwt_jax.evaluation import evaluate, feature_source, results
from cwt_jax.evaluation.metric_writer import MetricWriter
from cwt_jax.fewshot import episode, inner
from cwt_jax.models import cwt
from cwt_jax.training import loop

VAL_SOURCES = ("novel_val", "base_holdout", "fss1000_val")


def make_train_step(model, inner_loop: inner.InnerLoop, config):
    """A meta-training step on a batch of B episodes: two jitted programs.

    The frozen backbone's pass is evaluation's (`episode.episode_features`); no gradient
    reaches it. The inner loop sees the query's features (the transductive objective
    reads them), never its mask, which only the loss reads. The loss is the mean of
    `episode.episode_loss` over the B episodes, each with its classifier initialisation
    and dropout keyed by `episode.episode_keys(step key, position)`; the meta-parameters
    (`{"cwt", "inner"}`, see `fewshot.inner`) are updated, the inner loop's learned
    parts through `metatrain.inner_gradient`.

    Returns:
      `train_step(state, backbone, batch, rng)` -> (state, metrics); `batch` holds
      `feature_source.EPISODE_ARRAYS`.
    """
    dropout = cwt.dropout_from_config(config.cwt)
    outer_optimizer = optimizers.meta_optimizer(config.metatrain)

    def batch_loss(params, support_features, support_masks, query_features, query_masks, rng):
        def loss_of(episode_support_features, episode_support_masks, query, query_mask, index):
            init_key, dropout_key = episode.episode_keys(rng, index)
            init = inner.init_classifier(
                init_key, params["inner"], model.feature_channels, inner_loop.init
            )
            return episode.episode_loss(
                params,
                episode_support_features,
                episode_support_masks,
                query,
                query_mask,
                init,
                inner_loop,
                dropout=dropout,
                dropout_rng=dropout_key,
            )

        episodes = jnp.arange(query_features.shape[0])
        return jnp.mean(
            jax.vmap(loss_of)(
                support_features, support_masks, query_features, query_masks, episodes
            )
        )

    @jax.jit
    def update(state, support_features, query_features, batch, rng):
        loss, grads = jax.value_and_grad(batch_loss)(
            state["params"],
            support_features,
            batch["support_masks"],
            query_features,
            batch["query_mask"],
            rng,
        )
        new_state, norms = loop.apply_gradients(state, grads, outer_optimizer)
        return new_state, {"loss": loss, **norms}

    def train_step(state, backbone, batch, rng):
        support_features, query_features = episode.episode_features(
            model, backbone, batch["support_images"], batch["query_image"]
        )
        return update(state, support_features, query_features, batch, rng)

    return train_step


def validation_episodes(
    config, inputs: input_pipeline.Inputs
) -> tuple[data.Split, data.Split, list[dict]]:
    """Meta-training's episodes and those of its validation, as `metatrain.val_source` says.

    - "novel_val" (the original's choice): the test classes on the val split, in episodes
      of a seed stream of their own, none equal to an evaluation episode.
    - "base_holdout": the base classes on a held-out part of the train split
      (`metatrain.holdout_fraction`), which meta-training does not use: model selection
      that never sees a novel class.
    - "fss1000_val" (PATNet's and HSNet's choice for cross-domain and FSS-1000 runs):
      every class of FSS-1000's val split (`data.val_root`, or the run's own fss1000 or
      folder dataset's val split), queries shuffled.

    Returns:
      The split meta-training draws its episodes from, the split of the validation
      episodes, and their specs.
    """
    section = config.metatrain
    seed = seeds.data_seed(config.seed, seeds.Stream.VALIDATION)
    sample = functools.partial(
        data.sample_episode_list, shot=config.data.shot, seed=seed, shuffle_queries=True
    )
    if section.val_source == "fss1000_val":
        if inputs.selection is None:
            raise errors.DataError(
                f"metatrain.val_source=fss1000_val: {config.data.root} holds no val classes; "
                "set data.val_root to the FSS-1000 folder or give the val classes."
            )
        specs = sample(
            inputs.selection, inputs.selection.class_ids, num_episodes=section.val_episodes
        )
        return inputs.train, inputs.selection, specs
    if section.val_source == "base_holdout":
        train_split, held_out = data.hold_out(inputs.train, section.holdout_fraction)
        specs = sample(held_out, inputs.classes.base, num_episodes=section.val_episodes)
        return train_split, held_out, specs
    episode_list = data.read_episode_list(config.eval.episodes) if config.eval.episodes else None
    evaluated = {
        _identity(spec)
        for run in evaluate.evaluation_runs(config, inputs, episode_list)
        for spec in run
    }
    candidates = sample(inputs.val, inputs.test_classes, num_episodes=2 * section.val_episodes)
    specs = [spec for spec in candidates if _identity(spec) not in evaluated]
    if len(specs) < section.val_episodes:
        raise errors.DataError(
            f"Only {len(specs)} of {len(candidates)} validation episodes differ from every "
            f"evaluation episode, fewer than metatrain.val_episodes={section.val_episodes}; "
            "lower it or use metatrain.val_source=base_holdout."
        )
    return inputs.train, inputs.val, specs[: section.val_episodes]


def _identity(spec: dict) -> tuple:
    return spec["class_id"], spec["query_id"], tuple(spec["support_ids"])


def metatrain(
    config,
    model: models.PSPNet | models.DinoV2,
    inner_loop: inner.InnerLoop,
    inputs: input_pipeline.Inputs,
    backbone,
    workdir: str,
    writer: MetricWriter,
    report: Callable[[str], None],
) -> dict:
    """Runs or resumes stage 2; returns the validation scores of its best checkpoint.

    `model` is the frozen backbone of `backbone`, `inner_loop` the config's
    (`inner.from_config`); `report` shows the stage's outcome to the user.

    The best checkpoint holds what was learned by the epoch with the best episodic
    validation mIoU (`validation_episodes`; see `loop.train`): the CWT under
    "params", the inner loop's learned parts (`inner.init_inner_params`) under "inner".
    """
    section = config.metatrain
    episodes_per_step = section.episodes_per_step
    steps_per_epoch = section.episodes_per_epoch // episodes_per_step
    total_steps = section.epochs * steps_per_epoch
    train_split, val_split, val_specs = validation_episodes(config, inputs)
    train_data = data.train_episodes(
        train_split,
        inputs.classes.base,
        shot=config.data.shot,
        image_size=config.data.image_size,
        num_episodes=total_steps * episodes_per_step,
        seed=config.seed,
        augmentation=data.Augmentation(),
        resize=config.data.resize,
    )
    params = {
        "cwt": cwt.init(
            seeds.key(config.seed, seeds.Stream.INIT), model.feature_channels, config.cwt.heads
        ),
        "inner": inner.init_inner_params(model.feature_channels, config.inner),
    }
    state = loop.new_train_state(params, optimizers.meta_optimizer(section))
    train_step = make_train_step(model, inner_loop, config)
    # The same episodes every epoch: their feature cache (if any) is made once, when needed.
    validation_source = functools.cache(
        lambda: feature_source.make(config, model, backbone, val_split, [val_specs])
    )
    scores = evaluate.make_scores(model, inner_loop)
    alone = episode.without_cwt(inner_loop.objective)  # the classifier the CWT adapts
    workers = config.data.num_workers

    def batches(start_step):
        start = start_step * episodes_per_step
        for batch in input_pipeline.loader(train_data, episodes_per_step, workers, start):
            yield {name: batch[name] for name in feature_source.EPISODE_ARRAYS}

    def validate(state):
        run, _ = evaluate.run_episodes(
            scores,
            validation_source(),
            state["params"],
            val_specs,
            batch_size=config.eval.episodes_per_step,
            run_key=seeds.key(config.seed, seeds.Stream.VALIDATION),
            description="validation",
        )
        return {"miou": run["cwt"]["miou"], f"{alone}_miou": run[alone]["miou"]}

    mesh = sharding.data_mesh(episodes_per_step, "metatrain.episodes_per_step")
    replicated_backbone = sharding.replicate(backbone, mesh)
    scores = loop.train(
        "metatrain",
        state,
        lambda s, batch, rng: train_step(s, replicated_backbone, batch, rng),
        batches,
        mesh=mesh,
        workdir=workdir,
        key=seeds.key(config.seed, seeds.Stream.METATRAIN),
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        checkpoint_every=section.checkpoint_every,
        log_every=section.log_every,
        validate=validate,
        best_variables=lambda s: {"params": s["params"]["cwt"], "inner": s["params"]["inner"]},
        writer=writer,
        settings=loop.stage_settings(
            config, ("seed", "data", "model", "init.backbone", "inner", "cwt", "metatrain")
        ),
        report=report,
    )
    without = scores[f"{alone}_miou"]
    verdict = "beats" if scores["miou"] > without else "does not beat"
    if jax.process_index() == 0:
        report(
            f"metatrain: on validation the CWT {verdict} the {results.LABELS[alone]} "
            f"classifier it adapts (mIoU {scores['miou']:.4f} against {without:.4f})."
        )
    return scores
