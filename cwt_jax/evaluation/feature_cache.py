"""The feature cache: the frozen backbone's features of each evaluation image, made once.

Evaluation applies no augmentation and the backbone is frozen, so an image's features are
the same in every episode that uses it. The cache holds them with each image's class-id
mask (and, for `eval.label_resolution` original or both, its class-id mask at the
original size), and a step of evaluation then receives only cache rows and class ids:
nothing is decoded or run through the backbone per episode.

Where the cache lies is its placement, `placement(mesh, eval.cache_memory)`:
- "device": split over the evaluation's devices, each holding its share of every
  backbone pass; a step gathers its rows with one reduce-scatter.
- "replicated": whole on every device; a step gathers without communication (on 4 CPU
  devices at ResNet-50 233 px shapes, 11 ms against 84 ms for a split cache, beside a
  900 ms step), for caches that fit one device.
- "host": NumPy in each process's memory, for caches too large for the devices; a step's
  rows are gathered on the host and sent with the batch.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence

import grain
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import Mesh, NamedSharding

from cwt_jax import data, models, sharding

MEMORIES = ("device", "replicated", "host")


def placement(mesh: Mesh, memory: str) -> NamedSharding | None:
    """The cache's sharding for `eval.cache_memory=memory`; None for host memory.

    The one place that reads `eval.cache_memory`: the rest of this module follows the
    sharding. A split cache is split on its second axis (the images of a pass), so each
    device keeps its share of every pass.
    """
    return {
        "device": sharding.split(mesh, axis=1),
        "replicated": sharding.replicated(mesh),
        "host": None,
    }[memory]


@dataclasses.dataclass(frozen=True)
class FeatureCache:
    """Features and class-id masks of the images of an evaluation.

    Attributes:
      arrays: `{"features": (P, N, h, w, C), "masks": (P, N, S, S) uint8 class ids}` over P
        backbone passes of N images: row r is image r % N of pass r // N. Built with an
        `original_grid` G, also `"original_masks": (P, N, G, G)` uint8, each image's
        class ids at its original size, top-left and padded with 255
        (`transforms.pad_to_grid`), and `"sides": (P, N)` int32, its longer side.
      rows: image id -> row.
      placement: the arrays' sharding, None where they are NumPy arrays in host memory.
      mesh: the devices of the evaluation.
      binary_masks: the masks are a one-class-per-image split's {0, 1} masks, where 1 is
        the image's class whatever its id (`data.Split.mask_id`).
    """

    arrays: dict
    rows: dict[str, int]
    placement: NamedSharding | None
    mesh: Mesh
    binary_masks: bool = False


def build(
    model,
    backbone,
    split: data.Split,
    image_ids: Sequence[str],
    *,
    image_size: int,
    resize: str,
    batch_size: int,
    dtype,
    mesh: Mesh,
    memory: str,
    original_grid: int | None,
) -> FeatureCache:
    """Runs the backbone once on each distinct image and keeps the results.

    Each pass of `batch_size` images is split over the devices of the mesh, in all
    processes: each process decodes its share of the images (grain, in threads, while the
    devices run). The cache is allocated once and written pass by pass in place.

    Args:
      model: the backbone.
      backbone: its variables.
      split: the split holding the images.
      image_ids: ids of the images needed (repeats are fine).
      image_size: side S of the evaluation transform.
      resize: `data.resize` of the evaluation transform, "padded" or "squash".
      batch_size: images per backbone pass, rounded up to a multiple of the mesh's devices.
      dtype: storage dtype of the features (float32, or bfloat16 to halve their memory).
      mesh: the devices of the evaluation (`sharding.data_mesh`).
      memory: `eval.cache_memory`, see `placement`.
      original_grid: keep the original-size masks too, in squares of this side (at least
        the longest side of the images); None keeps the test-size masks only.

    Returns:
      The cache.
    """
    batch_size = -(-batch_size // mesh.size) * mesh.size  # whole shares for the devices
    image_ids = sorted(set(image_ids))
    num_passes = -(-len(image_ids) // batch_size)
    placed = placement(mesh, memory)
    backbone = sharding.replicate(backbone, mesh)

    def load(image_id):
        image, original_mask = split.load(split.index_of[image_id])
        image, mask = data.transforms.eval_transform(image, original_mask, image_size, resize)
        loaded = {"image": image, "masks": mask.astype(np.uint8)}
        if original_grid is None:
            return loaded
        return {
            **loaded,
            "original_masks": data.transforms.pad_to_grid(original_mask, original_grid),
            "sides": np.int32(max(original_mask.shape)),
        }

    # Whole passes (one compiled shape): the last is padded with copies of the last image.
    padded = image_ids + image_ids[-1:] * (num_passes * batch_size - len(image_ids))
    share = batch_size // jax.process_count()
    own_ids = [
        i for row, i in enumerate(padded) if row % batch_size // share == jax.process_index()
    ]
    loaded = grain.MapDataset.source(own_ids).map(load).batch(share).to_iter_dataset()
    arrays = None
    for index, batch in enumerate(
        tqdm.tqdm(loaded, total=num_passes, desc="feature cache", leave=False)
    ):
        rows = sharding.shard_batch(batch, mesh)
        images = rows.pop("image")
        rows["features"] = models.apply_backbone(model, backbone, images).astype(dtype)
        if arrays is None:
            arrays = _allocate(rows, num_passes, placed)
        arrays = _write(arrays, rows, index, placed)
    rows = {image_id: row for row, image_id in enumerate(image_ids)}
    return FeatureCache(arrays, rows, placed, mesh, binary_masks=split.labels is not None)


def _allocate(rows: dict, num_passes: int, placed: NamedSharding | None) -> dict:
    """Empty cache arrays for `num_passes` passes shaped as `rows`."""
    shapes = tuple((name, (num_passes, *array.shape), array.dtype) for name, array in rows.items())
    if placed is None:
        return {name: np.empty(shape, dtype) for name, shape, dtype in shapes}
    return _zeros_on_devices(shapes, placed)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _zeros_on_devices(shapes: tuple, placed: NamedSharding) -> dict:
    zeros = {name: jnp.zeros(shape, dtype) for name, shape, dtype in shapes}
    return jax.lax.with_sharding_constraint(zeros, placed)


def _write(arrays: dict, rows: dict, index: int, placed: NamedSharding | None) -> dict:
    """Writes one pass's rows at pass `index`, in place."""
    if placed is None:
        for name, array in sharding.gather(rows).items():
            arrays[name][index] = array
        return arrays
    return _write_on_devices(arrays, rows, index, placed)


@functools.partial(jax.jit, static_argnums=3, donate_argnums=0)
def _write_on_devices(arrays, rows, index, placed):
    # A split cache's devices each write their share of the pass: no communication.
    written = jax.tree.map(lambda array, new: array.at[index].set(new), arrays, rows)
    return jax.lax.with_sharding_constraint(written, placed)


def batches(cache: FeatureCache, specs: Sequence[dict], batch_size: int) -> Iterator[dict]:
    """This process's share of each batch of episodes, with features from the cache.

    Args:
      cache: from `build`, holding every image of `specs`.
      specs: episode specs `{"class_id", "query_id", "support_ids"}`, a multiple of
        `batch_size` of them.
      batch_size: episodes per step B.

    Yields:
      Global arrays sharded over the cache's mesh: support_features (B, K, h, w, C),
      support_masks (B, K, S, S), query_features (B, h, w, C) and query_mask (B, S, S)
      ({0, 1, 255} uint8), class_id (B,) and episode (B,), the index in `specs`; from a
      cache with original masks, also query_original_mask (B, G, G) ({0, 1, 255} uint8)
      and query_side (B,).
    """
    columns = {
        "support_index": [[cache.rows[i] for i in spec["support_ids"]] for spec in specs],
        "query_index": [cache.rows[spec["query_id"]] for spec in specs],
        "class_id": [spec["class_id"] for spec in specs],
        "mask_id": [1 if cache.binary_masks else spec["class_id"] for spec in specs],
        "episode": range(len(specs)),
    }
    columns = {name: np.asarray(column, np.int32) for name, column in columns.items()}
    share = batch_size // jax.process_count()
    gather = _device_gather(cache.placement) if cache.placement is not None else None
    for start in range(jax.process_index() * share, len(specs), batch_size):
        indices = {name: column[start : start + share] for name, column in columns.items()}
        if gather is None:  # host memory: gathered here, sent with the batch
            yield sharding.shard_batch(gather_episodes(cache.arrays, indices), cache.mesh)
        else:
            yield gather(cache.arrays, sharding.shard_batch(indices, cache.mesh))


def gather_episodes(arrays: dict, indices: dict) -> dict:
    """A batch's features and {0, 1, 255} masks from cache arrays held whole.

    Works on NumPy arrays (a host cache) and inside `jax.jit` on device arrays held whole
    by each device.

    Args:
      arrays: `FeatureCache.arrays`.
      indices: `support_index` (B, K), `query_index` (B,), `class_id` (B,), `mask_id` (B,),
        the class's value in the cached masks, and `episode` (B,).

    Returns:
      The batch of `batches`.
    """
    rows = _episode_rows(
        lambda array, index: _rows(array)[index],
        arrays,
        indices["support_index"],
        indices["query_index"],
    )
    return _with_binary_masks(rows, indices)


@functools.cache  # one compiled gather per placement, for every run of an evaluation
def _device_gather(placed: NamedSharding) -> Callable:
    """`gather_episodes` for a cache on the devices, jitted.

    Each device gathers the rows of the whole batch that it holds and zeros for the others;
    a reduce-scatter adds the devices' results and leaves each device its own episodes.
    Adding zeros is exact: the features are those of the cache, bit for bit. A cache whole
    on each device is gathered locally.
    """
    if placed.is_fully_replicated:  # replicated, or split over one device
        return jax.jit(gather_episodes)
    mesh = placed.mesh

    def gather_here(arrays, support_index, query_index):  # on each device: its share
        share = arrays["features"].shape[1]  # of each pass
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
        rows = _episode_rows(take, arrays, *whole_batch)
        return jax.lax.psum_scatter(rows, sharding.DATA_AXIS, scatter_dimension=0, tiled=True)

    gather_rows = jax.shard_map(
        gather_here,
        mesh=mesh,
        in_specs=(placed.spec, *(sharding.split(mesh).spec,) * 2),
        out_specs=sharding.split(mesh).spec,
    )

    @jax.jit
    def gather(arrays, indices):
        rows = gather_rows(arrays, indices["support_index"], indices["query_index"])
        return _with_binary_masks(rows, indices)

    return gather


def _rows(array):
    """A cache array (P, pass size, ...) as rows (P * pass size, ...), without a copy."""
    return array.reshape(-1, *array.shape[2:])


def _episode_rows(take, arrays: dict, support_index, query_index) -> dict:
    """Features and class-id masks of a batch, each taken by `take(cache array, index)`."""
    rows = {
        "support_features": take(arrays["features"], support_index),
        "support_masks": take(arrays["masks"], support_index),
        "query_features": take(arrays["features"], query_index),
        "query_mask": take(arrays["masks"], query_index),
    }
    if "original_masks" in arrays:
        rows["query_original_mask"] = take(arrays["original_masks"], query_index)
        rows["query_side"] = take(arrays["sides"], query_index)
    return rows


def _with_binary_masks(rows: dict, indices: dict) -> dict:
    """`_episode_rows` with the episode class's {0, 1, 255} masks and the batch's ids."""
    mask_id = indices["mask_id"]

    def binary(masks):  # (B, ..., S, S) class ids
        return data.binary_mask(masks, mask_id.reshape((-1,) + (1,) * (masks.ndim - 1)))

    masks = ("support_masks", "query_mask", "query_original_mask")
    return {
        **rows,
        **{name: binary(rows[name]) for name in masks if name in rows},
        "class_id": indices["class_id"],
        "episode": indices["episode"],
    }
