"""Reading and writing single pytrees (converted weights) as orbax checkpoints."""

import os

import orbax.checkpoint as ocp


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


def load_tree(path: str):
    """Reads a pytree written by `save_tree`.

    Args:
      path: checkpoint directory.

    Returns:
      The pytree, with arrays on the default device.

    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path} is not an orbax checkpoint directory; check the path.")
    return ocp.StandardCheckpointer().restore(path)
