"""Data parallelism: a 1-D device mesh over episodes (or images), parameters replicated.

Batches are global `jax.Array`s sharded on their leading axis over the `data` axis;
`jax.jit` partitions the computation from those shardings (no pmap). On several hosts
each process loads its share of a batch (grain shards by process) and
`jax.make_array_from_process_local_data` assembles the global array.
"""

import math

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cwt_jax import errors

DATA_AXIS = "data"


def data_mesh(batch_size: int, key: str) -> Mesh:
    """A mesh over the most devices that split `batch_size` evenly.

    In a run of several processes `batch_size` is a multiple of the devices
    (`config_checks.validate`); in one process, fewer devices are used with a warning.

    Args:
      batch_size: global batch size of the steps run on the mesh.
      key: config key of the batch size, for messages.

    Returns:
      A 1-D mesh with axis `data`.
    """
    devices = jax.devices()
    count = math.gcd(batch_size, len(devices))
    if count < len(devices):
        errors.warn(
            f"{key}={batch_size} uses {count} of the {len(devices)} devices; make it a "
            f"multiple of {len(devices)} to use all."
        )
    return Mesh(np.asarray(devices[:count]), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    """The sharding of an array held whole on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def split(mesh: Mesh, axis: int = 0) -> NamedSharding:
    """The sharding of an array split over the devices of the mesh along `axis`."""
    return NamedSharding(mesh, PartitionSpec(*(None,) * axis, DATA_AXIS))


def replicate(tree, mesh: Mesh):
    """Places a pytree, the same on every process, on every device of the mesh.

    Leaves already replicated on the mesh are kept as they are, without a copy.
    """
    sharding = replicated(mesh)
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def place(leaf):
        if isinstance(leaf, jax.Array) and leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            return leaf
        # Each process supplies its own copy: device_put cannot reach other hosts' devices.
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf))

    return jax.tree.map(place, tree)


def shard_batch(batch, mesh: Mesh):
    """Turns this process's share of a batch (numpy leaves) into global sharded arrays."""
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(split(mesh), x), batch)


def in_turn(function):
    """Calls `function()` in each process in turn, process 0 first; returns its result.

    For work that must not run concurrently, such as building a dataset in a cache
    folder: the first process builds it and the others then find it, in a folder they
    share, or build their own in a local one.
    """
    if jax.process_count() == 1:
        return function()
    result = None
    for turn in range(jax.process_count()):
        if turn == jax.process_index():
            result = function()
        multihost_utils.sync_global_devices(f"cwt_jax in_turn {turn}")
    return result


def gather(tree):
    """Fetches (possibly sharded, multi-host) arrays to NumPy on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)
