"""Stage 2: episodic meta-training of the CWT on a frozen backbone."""

import functools

import jax
import jax.numpy as jnp
import optax

from cwt_jax import (
    cwt,
    data,
    evaluate,
    fewshot,
    initialization,
    input_pipeline,
    optimizers,
    sharding,
    training,
)
from cwt_jax.metric_writer import MetricWriter


def make_train_step(model, config):
    """A meta-training step on a batch of B episodes: two jitted programs.

    The frozen backbone's pass is evaluation's (`evaluate.make_features_step`, compiled
    with `models.inference_compiler_options()`); no gradient reaches it. The loss is the
    mean of `fewshot.episode_loss` over the B episodes, each with its classifier
    initialisation and dropout keyed by `fewshot.episode_keys(step key, position)`; only
    the CWT parameters are updated.

    Returns:
      `train_step(state, backbone, batch, rng)` -> (state, metrics); `batch` holds
      `evaluate.EPISODE_ARRAYS`.
    """
    inner_optimizer = optimizers.inner_optimizer(config.inner)
    outer_optimizer = outer_optimizer_from(config.metatrain)

    def batch_loss(cwt_params, support_features, support_masks, query_features, query_masks, rng):
        def loss_of(episode_support_features, episode_support_masks, query, query_mask, episode):
            init_key, dropout_key = fewshot.episode_keys(rng, episode)
            init = fewshot.init_classifier(init_key, model.bottleneck_dim, config.inner.init)
            return fewshot.episode_loss(
                cwt_params,
                episode_support_features,
                episode_support_masks,
                query,
                query_mask,
                init,
                optimizer=inner_optimizer,
                steps=config.inner.steps,
                dropout_rng=dropout_key,
                dropout_rate=config.cwt.dropout,
                attention_dropout_rate=config.cwt.attention_dropout,
            )

        episodes = jnp.arange(query_features.shape[0])
        return jnp.mean(
            jax.vmap(loss_of)(
                support_features, support_masks, query_features, query_masks, episodes
            )
        )

    features_step = evaluate.make_features_step(model)

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
        updates, opt_state = outer_optimizer.update(grads, state["opt_state"], state["params"])
        new_state = {
            **state,
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "opt_state": opt_state,
        }
        norms = {
            "grad_norm": optax.tree.norm(grads),
            "param_norm": optax.tree.norm(state["params"]),
        }
        return new_state, {"loss": loss, **norms}

    def train_step(state, backbone, batch, rng):
        support_features, query_features = features_step(
            backbone, batch["support_images"], batch["query_image"]
        )
        return update(state, support_features, query_features, batch, rng)

    return train_step


def outer_optimizer_from(section) -> optax.GradientTransformation:
    """SGD with Nesterov momentum and weight decay over the CWT parameters."""
    return optimizers.sgd_with_decay(section, section.lr, "metatrain")


def metatrain(
    config, inputs: input_pipeline.Inputs, backbone, workdir: str, writer: MetricWriter
) -> str:
    """Runs or resumes stage 2; returns the directory of its best checkpoint.

    The best checkpoint holds the CWT parameters of the epoch with the best episodic
    validation mIoU on the test classes of the val split (see `training.train`).
    """
    section = config.metatrain
    model = initialization.pspnet(config.model)
    episodes_per_step = section.episodes_per_step
    steps_per_epoch = section.episodes_per_epoch // episodes_per_step
    total_steps = section.epochs * steps_per_epoch
    train_data = data.train_episodes(
        inputs.train, inputs.classes.base, shot=config.data.shot,
        image_size=config.data.image_size, num_episodes=total_steps * episodes_per_step,
        seed=config.seed, augmentation=data.Augmentation(),
    )  # fmt: skip
    val_specs = data.sample_episode_list(
        inputs.val, inputs.test_classes, shot=config.data.shot,
        num_episodes=section.val_episodes, seed=config.seed,
    )  # fmt: skip
    params = cwt.init(jax.random.key(config.seed), model.bottleneck_dim, config.cwt.heads)
    state = {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": outer_optimizer_from(section).init(params),
        "best_miou": jnp.full((), -1.0, jnp.float32),
    }
    train_step = make_train_step(model, config)
    # The same episodes every epoch: their feature cache (if any) is made once, when needed.
    validation = functools.cache(
        lambda: evaluate.prepare_runs(config, model, backbone, inputs.val, [val_specs])
    )
    workers = config.data.num_workers

    def batches(start_step):
        start = start_step * episodes_per_step
        for batch in input_pipeline.loader(train_data, episodes_per_step, workers, start):
            yield {name: batch[name] for name in evaluate.EPISODE_ARRAYS}

    def validate(state):
        eval_step, variables, val_batches = validation()
        scores, _ = evaluate.run_episodes(
            eval_step, variables, state["params"], val_batches(0),
            num_episodes=len(val_specs), batch_size=config.eval.episodes_per_step,
            run_key=jax.random.fold_in(jax.random.key(config.seed), 0), description="validation",
        )  # fmt: skip
        return {"miou": scores["cwt"]["miou"], "support_only_miou": scores["support_only"]["miou"]}

    mesh = sharding.data_mesh(episodes_per_step, "metatrain.episodes_per_step")
    replicated_backbone = sharding.replicate(backbone, mesh)
    return training.train(
        "metatrain", state,
        lambda s, batch, rng: train_step(s, replicated_backbone, batch, rng), batches,
        mesh=mesh, workdir=workdir, seed=config.seed, total_steps=total_steps,
        steps_per_epoch=steps_per_epoch, checkpoint_every=section.checkpoint_every,
        validate=validate, best_variables=lambda s: {"params": s["params"]}, writer=writer,
    )  # fmt: skip
