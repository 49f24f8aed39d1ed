"""Stage 1: base-class pre-training of the PSPNet (backbone and base classifier)."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cwt_jax import data, errors, models, optimizers, seeds, sharding
from cwt_jax.data import input_pipeline
from cwt_jax.evaluation import metrics
from cwt_jax.evaluation.metric_writer import MetricWriter
from cwt_jax.fewshot import classifier, losses
from cwt_jax.models import interpolate
from cwt_jax.training import loop


def make_train_step(model, optimizer, schedule: optax.Schedule, label_smoothing: float):
    """A jitted SGD step on a batch of base-class images: an iteration of RePRI's `do_epoch`.

    The PSPNet runs in training mode: dropout, and batch norm with the statistics of the
    whole (global) batch, as RePRI's SyncBatchNorm. Its logits are resized to the masks
    with `align_corners=True`, as PSPNet's zoom, before RePRI's label-smoothed
    cross-entropy (`losses.cross_entropy`).

    Args:
      model: the `PSPNet`.
      optimizer: any optax transformation; `pretrain` uses RePRI's, SGD with Nesterov
        momentum and weight decay on every parameter (batch-norm scales and biases too).
      schedule: its learning rate, logged as `lr`.
      label_smoothing: the loss's smoothing.

    Returns:
      (state, batch, rng) -> (new state, metrics).
    """

    def loss_fn(params, batch_stats, batch, rng):
        features, updates = model.apply(
            {"params": params["pspnet"], "batch_stats": batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": rng},
        )
        logits = classifier.predict(params["classifier"], features)
        logits = interpolate.resize_bilinear(logits, batch["mask"].shape[-2:])
        loss = losses.cross_entropy(logits, batch["mask"], label_smoothing=label_smoothing)
        return loss, updates["batch_stats"]

    @jax.jit
    def train_step(state, batch, rng):
        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["batch_stats"], batch, rng
        )
        new_state, norms = loop.apply_gradients(state, grads, optimizer, batch_stats=batch_stats)
        return new_state, {"loss": loss, "lr": schedule(state["step"]), **norms}

    return train_step


def learning_rate_schedule(section, total_steps: int) -> optax.Schedule:
    """RePRI's `CosineAnnealingLR(T_max=total_steps, eta_min=final_lr)`, stepped per iteration.

    Step t (counted from 0) uses final_lr + (lr - final_lr) * (1 + cos(pi t / T)) / 2 with
    T = total_steps: optax's cosine decay with alpha = final_lr / lr is that formula. The
    last step, t = T - 1, still uses slightly more than final_lr, as in RePRI.

    Args:
      section: the `pretrain` config section (`lr`, `final_lr`).
      total_steps: steps of the whole stage.

    Returns:
      The schedule.
    """
    return optax.cosine_decay_schedule(section.lr, total_steps, alpha=section.final_lr / section.lr)


def make_eval_step(model, num_classes: int):
    """A jitted step counting per-class intersections and unions on a validation batch."""

    @jax.jit
    def eval_step(params, batch_stats, batch):
        features = model.apply(
            {"params": params["pspnet"], "batch_stats": batch_stats}, batch["image"]
        )
        logits = classifier.predict(params["classifier"], features)
        logits = interpolate.resize_bilinear(logits, batch["mask"].shape[-2:])
        return metrics.intersection_union(jnp.argmax(logits, -1), batch["mask"], num_classes)

    return eval_step


def initial_state(config, model, optimizer, num_classes: int, resnet: dict | None) -> dict:
    """Random PSPNet and base classifier; the ResNet from `resnet` (`init.resnet`) if given."""
    model_rng, classifier_rng = jax.random.split(seeds.key(config.seed, seeds.Stream.INIT))
    variables = models.init_variables(model, model_rng)
    if resnet is not None:
        variables["params"]["backbone"] = resnet["params"]
        variables["batch_stats"]["backbone"] = resnet["batch_stats"]
    else:
        errors.warn("init.resnet is empty: stage 1 starts from a random backbone.")
    bound = model.bottleneck_dim**-0.5
    params = {
        "pspnet": variables["params"],
        "classifier": jax.random.uniform(
            classifier_rng, (num_classes, model.bottleneck_dim), minval=-bound, maxval=bound
        ),
    }
    return loop.new_train_state(params, optimizer, batch_stats=variables["batch_stats"])


def validate(eval_step, state, dataset, batch_size: int, workers: int) -> dict:
    """Base-class mIoU (background excluded) of pixel counts summed over the val set."""
    intersection = union = 0
    for batch in input_pipeline.loader(dataset, batch_size, workers):
        batch_intersection, batch_union = eval_step(
            state["params"], state["batch_stats"], {k: batch[k] for k in ("image", "mask")}
        )
        intersection += np.asarray(batch_intersection, np.int64)
        union += np.asarray(batch_union, np.int64)
    return {"miou": float(np.nanmean(metrics.iou(intersection, union)[1:]))}


def pretrain(
    config,
    model: models.PSPNet,
    inputs: input_pipeline.Inputs,
    workdir: str,
    writer: MetricWriter,
    resnet: dict | None,
    report: Callable[[str], None],
) -> dict:
    """Runs or resumes stage 1; returns the validation scores of its best checkpoint.

    `model` is the config's PSPNet (`models.from_config`); `resnet` holds the ImageNet
    ResNet variables of `init.resnet` (None: random backbone); `report` shows the
    stage's outcome to the user.

    The best checkpoint holds the PSPNet variables of the epoch with the best base-class
    validation mIoU: the backbone of stage 2 (see `loop.train`).
    """
    section = config.pretrain
    base = inputs.classes.base
    num_classes = len(base) + 1
    train_data = data.base_class_dataset(
        inputs.train,
        base,
        image_size=section.image_size,
        seed=config.seed,
        augmentation=input_pipeline.augmentation(section),
        num_epochs=section.epochs,
    )
    steps_per_epoch = len(train_data) // section.epochs // section.batch_size
    total_steps = len(train_data) // section.batch_size
    schedule = learning_rate_schedule(section, total_steps)
    optimizer = optimizers.from_config(section, "pretrain", schedule)
    val_data = data.base_class_dataset(
        inputs.base_val, base, image_size=section.image_size, seed=config.seed, augmentation=None
    )
    if section.val_images:
        val_data = val_data[: section.val_images]

    state = initial_state(config, model, optimizer, num_classes, resnet)
    train_step = make_train_step(model, optimizer, schedule, section.label_smoothing)
    eval_step = make_eval_step(model, num_classes)
    workers = config.data.num_workers

    def batches(start_step):
        start = start_step * section.batch_size
        for batch in input_pipeline.loader(train_data, section.batch_size, workers, start):
            yield {name: batch[name] for name in ("image", "mask")}

    return loop.train(
        "pretrain",
        state,
        train_step,
        batches,
        mesh=sharding.data_mesh(section.batch_size, "pretrain.batch_size"),
        workdir=workdir,
        key=seeds.key(config.seed, seeds.Stream.PRETRAIN),
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        checkpoint_every=section.checkpoint_every,
        log_every=section.log_every,
        validate=lambda s: validate(eval_step, s, val_data, section.batch_size, workers),
        best_variables=lambda s: {"params": s["params"]["pspnet"], "batch_stats": s["batch_stats"]},
        writer=writer,
        settings=loop.stage_settings(config, ("seed", "data", "model", "init.resnet", "pretrain")),
        report=report,
    )
