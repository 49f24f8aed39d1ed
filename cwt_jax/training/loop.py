"""The loop shared by both training stages: steps, validation, checkpoints, resumption.

A stage keeps two orbax managers under `<workdir>/<stage>/`: `latest/` (the whole train
state, saved every `checkpoint_every` steps and at each epoch end) and `best/` (the
variables of the epoch with the best validation mIoU, which later stages and `init.*`
keys read). A rerun of the same command restores `latest/` and continues from its step:
batches are fixed by their index and step keys are `fold_in(stage key, step)`, so the
resumed run computes exactly what an uninterrupted run would.
"""

import functools
import json
import operator
import os
from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import tqdm
from flax import traverse_util
from jax.sharding import Mesh

from cwt_jax import sharding
from cwt_jax.evaluation.metric_writer import MetricWriter
from cwt_jax.weights import checkpoints


def new_train_state(params, optimizer: optax.GradientTransformation, **extra) -> dict:
    """A train state at step 0, as a plain pytree.

    Args:
      params: the trained parameters.
      optimizer: their optimiser.
      **extra: further entries, e.g. batch-norm statistics.

    Returns:
      `{"step", "params", "opt_state", "best_miou", **extra}`; `best_miou` is the best
      validation mIoU so far, -1 before any.
    """
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": optimizer.init(params),
        "best_miou": jnp.full((), -1.0, jnp.float32),
        **extra,
    }


def apply_gradients(
    state: dict, grads, optimizer: optax.GradientTransformation, **replaced
) -> tuple[dict, dict]:
    """One optimiser step on `grads`.

    Args:
      state: from `new_train_state`.
      grads: gradients of `state["params"]`.
      optimizer: the optimiser `state` was made with.
      **replaced: entries of the new state given directly, e.g. batch-norm statistics.

    Returns:
      The new state, and the gradient and parameter norms (for the step's metrics).
    """
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    new_state = {
        **state,
        "step": state["step"] + 1,
        "params": optax.apply_updates(state["params"], updates),
        "opt_state": opt_state,
        **replaced,
    }
    norms = {"grad_norm": optax.tree.norm(grads), "param_norm": optax.tree.norm(state["params"])}
    return new_state, norms


def train(
    stage: str,
    state: dict,
    train_step: Callable,
    batches: Callable[[int], Iterable],
    *,
    mesh: Mesh,
    workdir: str,
    key: jax.Array,
    total_steps: int,
    steps_per_epoch: int,
    checkpoint_every: int,
    log_every: int,
    validate: Callable[[dict], dict],
    best_variables: Callable[[dict], dict],
    writer: MetricWriter,
    settings: dict,
    report: Callable[[str], None],
) -> dict:
    """Runs (or resumes) a training stage to `total_steps`.

    Steps are dispatched without waiting for the device: their metrics stay there until
    every `log_every` steps (and before each validation and save), when they are fetched
    at once, checked for a non-finite loss and written, one line per step.

    Args:
      stage: "pretrain" or "metatrain": names the checkpoints, metrics and progress bar.
      state: initial train state, a dict with at least "step" and "best_miou".
      train_step: (state, batch, rng) -> (state, metrics with "loss").
      batches: start step -> iterable of the batches from that step on (this process's
        share, numpy).
      mesh: devices the batches are sharded over; the state is replicated.
      workdir: the run's work dir.
      key: the stage's key (`seeds.key`); step s uses `fold_in(key, s)`.
      total_steps: steps of the whole stage.
      steps_per_epoch: steps between validations.
      checkpoint_every: steps between saves of the latest state.
      log_every: steps between fetches of the metrics.
      validate: state -> validation scores with "miou".
      best_variables: state -> the pytree kept as the stage's best checkpoint.
      writer: metric writer.
      settings: the config keys the stage depends on (`stage_settings`), kept in
        `<workdir>/<stage>/settings.json`; a rerun with other values names them.
      report: shows a line to the user: how a rerun resumes, where the best checkpoint is.

    Returns:
      The validation scores of the stage's best checkpoint.
    """
    latest = checkpoints.manager(f"{workdir}/{stage}/latest")
    best = checkpoints.manager(f"{workdir}/{stage}/best", best_metric="miou")
    state = sharding.replicate(checkpoints.restore_latest(latest, state), mesh)
    start = int(state["step"])
    _compare_settings(os.path.join(workdir, stage), settings, start, total_steps, report)
    writer.truncate(stage, start)  # a resumed stage logs its steps after `start` again
    # Closed before an exception leaves (Ctrl-C), so the bar is not drawn after the message.
    with tqdm.tqdm(desc=stage, initial=start, total=total_steps) as progress:
        unlogged = []  # (step, metrics still on the device)
        postfix = {}  # the running loss and the last validation scores
        for step, batch in enumerate(batches(start) if start < total_steps else (), start=start):
            batch = sharding.shard_batch(batch, mesh)
            state, step_metrics = train_step(state, batch, jax.random.fold_in(key, step))
            unlogged.append((step + 1, step_metrics))
            progress.update()
            epoch_end = (step + 1) % steps_per_epoch == 0
            save = epoch_end or (step + 1) % checkpoint_every == 0
            if save or (step + 1) % log_every == 0 or step + 1 == total_steps:
                postfix["loss"] = f"{_log_steps(stage, unlogged, writer):.3f}"
                progress.set_postfix(postfix)
                unlogged = []
            if epoch_end:
                scores = validate(state)
                writer.write(
                    stage, step + 1, {f"val_{name}": value for name, value in scores.items()}
                )
                summary = ", ".join(f"{name} {value:.4f}" for name, value in scores.items())
                progress.write(f"{stage} step {step + 1}: validation {summary}")
                postfix.update({f"val_{name}": f"{value:.3f}" for name, value in scores.items()})
                progress.set_postfix(postfix)
                if scores["miou"] > float(state["best_miou"]):
                    best_miou = jnp.asarray(scores["miou"], jnp.float32)
                    # Placed like the rest of the state, so the step is not compiled again.
                    state = {**state, "best_miou": sharding.replicate(best_miou, mesh)}
                    variables = ocp.args.StandardSave(best_variables(state))
                    best.save(
                        step + 1,
                        args=ocp.args.Composite(**{checkpoints.VARIABLES: variables}),
                        metrics=scores,
                    )
            if save:
                saved = ocp.args.Composite(**{checkpoints.STATE: ocp.args.StandardSave(state)})
                latest.save(step + 1, args=saved)
    latest.wait_until_finished()
    best.wait_until_finished()
    scores = best.metrics(best.best_step())
    if jax.process_index() == 0:
        report(
            f"{stage}: the best checkpoint, step {best.best_step()} (validation mIoU "
            f"{scores['miou']:.4f}), is in {best.directory}"
        )
    return scores


def stage_settings(config, sections: tuple[str, ...]) -> dict:
    """The values of some config sections, as flat dotted keys.

    Args:
      config: the whole config.
      sections: dotted keys of sections or values, e.g. "pretrain" or "init.resnet".

    Returns:
      {dotted key: value} of every value under `sections`, as JSON reads them back.
    """
    values = config.to_dict()
    selected = {
        section: functools.reduce(operator.getitem, section.split("."), values)
        for section in sections
    }
    flat = traverse_util.flatten_dict(selected, sep=".")
    return json.loads(json.dumps(flat, default=str))  # as they read back from JSON


def _compare_settings(
    directory: str, settings: dict, start: int, total_steps: int, report: Callable[[str], None]
) -> None:
    """Keeps a new stage's settings; says how a rerun's differ from them."""
    path = os.path.join(directory, "settings.json")
    if start == 0 or not os.path.isfile(path):
        if jax.process_index() == 0:
            os.makedirs(directory, exist_ok=True)
            with open(path, "w") as file:
                json.dump(settings, file, indent=1)
        return
    with open(path) as file:
        saved = json.load(file)
    changed = [
        key for key in sorted(saved.keys() | settings.keys()) if saved.get(key) != settings.get(key)
    ]
    action = "is finished: reusing it" if start >= total_steps else f"resumes at step {start}"
    message = f"{os.path.basename(directory)} in {directory} {action}"
    if changed:
        differences = ", ".join(
            f"{key} ({saved.get(key)!r} there, {settings.get(key)!r} now)" for key in changed
        )
        message += f", although these settings differ from its own: {differences}"
    if jax.process_index() == 0:
        report(message + ".")


def _log_steps(stage: str, unlogged: list, writer: MetricWriter) -> float:
    """Fetches and writes the metrics of the steps since the last log; their mean loss."""
    steps = [step for step, _ in unlogged]
    fetched = sharding.gather([step_metrics for _, step_metrics in unlogged])
    for step, step_metrics in zip(steps, fetched, strict=True):
        if not np.isfinite(step_metrics["loss"]):
            raise FloatingPointError(f"The {stage} loss is {step_metrics['loss']} at step {step}.")
        writer.write(stage, step, step_metrics)
    writer.flush()
    return float(np.mean([step_metrics["loss"] for step_metrics in fetched]))
