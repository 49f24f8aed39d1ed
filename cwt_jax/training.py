"""The loop shared by both training stages: steps, validation, checkpoints, resumption.

A stage keeps two orbax managers under `<workdir>/<stage>/`: `latest/` (the whole train
state, saved every `checkpoint_every` steps and at each epoch end) and `best/` (the
variables of the epoch with the best validation mIoU, which later stages and `init.*`
keys read). A rerun of the same command restores `latest/` and continues from its step:
batches are fixed by their index and step keys are `fold_in(seed key, step)`, so the
resumed run computes exactly what an uninterrupted run would.
"""

from collections.abc import Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import tqdm
from jax.sharding import Mesh

from cwt_jax import checkpoints, sharding
from cwt_jax.metric_writer import MetricWriter

STATE = "state"


def restore_latest(manager: ocp.CheckpointManager, state: dict) -> dict:
    """The latest saved state, or `state` itself when nothing was saved yet."""
    step = manager.latest_step()
    if step is None:
        return state
    restored = manager.restore(
        step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(state)})
    )
    return restored[STATE]


def train(
    stage: str,
    state: dict,
    train_step: Callable,
    batches: Callable[[int], Iterable],
    *,
    mesh: Mesh,
    workdir: str,
    seed: int,
    total_steps: int,
    steps_per_epoch: int,
    checkpoint_every: int,
    validate: Callable[[dict], dict],
    best_variables: Callable[[dict], dict],
    writer: MetricWriter,
) -> str:
    """Runs (or resumes) a training stage to `total_steps`.

    Args:
      stage: "pretrain" or "metatrain": names the checkpoints, metrics and progress bar.
      state: initial train state, a dict with at least "step" and "best_miou".
      train_step: (state, batch, rng) -> (state, metrics with "loss").
      batches: start step -> iterable of the batches from that step on (this process's
        share, numpy).
      mesh: devices the batches are sharded over; the state is replicated.
      workdir: the run's work dir.
      seed: root seed of the step keys.
      total_steps: steps of the whole stage.
      steps_per_epoch: steps between validations.
      checkpoint_every: steps between saves of the latest state.
      validate: state -> validation scores with "miou".
      best_variables: state -> the pytree kept as the stage's best checkpoint.
      writer: metric writer.

    Returns:
      The directory of the stage's best checkpoint.
    """
    latest = checkpoints.manager(f"{workdir}/{stage}/latest")
    best = checkpoints.manager(f"{workdir}/{stage}/best", best_metric="miou")
    state = sharding.replicate(restore_latest(latest, state), mesh)
    key = jax.random.key(seed)
    start = int(state["step"])
    if start >= total_steps:
        return best.directory.as_posix()
    progress = tqdm.tqdm(batches(start), desc=stage, initial=start, total=total_steps)
    for step, batch in enumerate(progress, start=start):
        batch = sharding.shard_batch(batch, mesh)
        state, step_metrics = train_step(state, batch, jax.random.fold_in(key, step))
        step_metrics = sharding.gather(step_metrics)
        if not np.isfinite(step_metrics["loss"]):
            raise FloatingPointError(f"The {stage} loss is {step_metrics['loss']} at step {step}.")
        progress.set_postfix(loss=f"{step_metrics['loss']:.3f}")
        writer.write(stage, step + 1, step_metrics)
        epoch_end = (step + 1) % steps_per_epoch == 0
        if epoch_end:
            scores = validate(state)
            writer.write(stage, step + 1, {f"val_{name}": value for name, value in scores.items()})
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
        if epoch_end or (step + 1) % checkpoint_every == 0:
            latest.save(step + 1, args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(state)}))
    latest.wait_until_finished()
    best.wait_until_finished()
    return best.directory.as_posix()
