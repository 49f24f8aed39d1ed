"""Orbax checkpoints: single pytrees (converted weights) and the training managers.

Two layouts are read wherever a checkpoint path is accepted: a single pytree written by
`save_tree` (what `python -m cwt_jax.convert` writes), and a `CheckpointManager`
directory whose steps hold a `variables` item (what the training stages write as their
best checkpoint); of the latter, the best step is read.
"""

import os

import jax
import orbax.checkpoint as ocp

from cwt_jax import errors

VARIABLES = "variables"
STATE = "state"  # the item of a training stage's `latest/` steps: its whole train state


def save_tree(path: str, tree) -> None:
    """Writes a pytree of arrays to a new orbax checkpoint directory.

    Orbax writes to a temporary directory and renames it when complete, so an
    interrupted save leaves no half-written checkpoint at `path`.

    Args:
      path: directory to create; it must not exist yet.
      tree: pytree of arrays.
    """
    path = os.path.abspath(path)
    if os.path.exists(path):
        raise FileExistsError(f"{path} already exists; choose a new output directory or remove it.")
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path, tree)
    checkpointer.wait_until_finished()


def load_tree(path: str, key: str | None = None):
    """Reads a pytree written by `save_tree`, or the best `variables` of a manager directory.

    Args:
      path: checkpoint directory.
      key: the flag or config key that named `path`, for error messages.

    Returns:
      The pytree of arrays.

    Raises:
      FileNotFoundError: `path` does not exist.
      ConversionError: `path` holds no checkpoint of either layout: a file, an empty
        folder, a folder of images, a run's work dir rather than its `pretrain/best`.
    """
    named = f"{key}={path}" if key else path
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{named} does not exist; check the path.")
    step = None
    if os.path.isdir(path):
        steps = ocp.CheckpointManager(
            path,
            options=ocp.CheckpointManagerOptions(create=False),  # read_only=True would log warnings
            item_handlers={VARIABLES: ocp.StandardCheckpointHandler()},
        )
        step = steps.best_step()
    # The tree's metadata, looked for first: without it orbax logs warnings, then fails
    # with an AttributeError. Steps are named by their number (`manager`).
    tree = path if step is None else os.path.join(path, str(step), VARIABLES)
    if not os.path.isfile(os.path.join(tree, ocp.path.format_utils.PYTREE_METADATA_FILE)):
        raise errors.ConversionError(
            f"{named} is not an orbax checkpoint; give a converted checkpoint (python -m "
            "cwt_jax.convert), a run's pretrain/best or metatrain/best, or a .pth file."
        )
    if step is None:
        checkpointer = ocp.StandardCheckpointer()
        return checkpointer.restore(path, _local_target(checkpointer.metadata(path).item_metadata))
    target = _local_target(steps.item_metadata(step)[VARIABLES])
    restored = steps.restore(
        step, args=ocp.args.Composite(**{VARIABLES: ocp.args.StandardRestore(target)})
    )
    return restored[VARIABLES]


def _local_target(metadata):
    """Restore target on this process's first device.

    Checkpoints record the devices they were written from, which need not exist, or
    belong to this process, where they are read (e.g. one process of several).
    """
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device), metadata.tree
    )


def manager(directory: str, *, best_metric: str | None = None) -> ocp.CheckpointManager:
    """A manager keeping one checkpoint: the latest, or the best by `best_metric`.

    Args:
      directory: where the steps are written.
      best_metric: metric to maximise, or None to keep the latest step.

    Returns:
      The checkpoint manager; call `wait_until_finished()` before the process ends.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1,
        best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
        best_mode="max",
        create=True,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def restore_latest(manager: ocp.CheckpointManager, state: dict) -> dict:
    """The latest saved state, or `state` itself when nothing was saved yet."""
    step = manager.latest_step()
    if step is None:
        return state
    restored = manager.restore(
        step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(state)})
    )
    return restored[STATE]
