"""Where a batch's features come from in evaluation and validation.

Either the backbone runs on each batch's images (`eval.feature_cache=False`), or the
features of every image of the runs are computed once, into a feature cache
(`cwt_jax.evaluation.feature_cache`), which the batches then read.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from cwt_jax import data, sharding
from cwt_jax.data import input_pipeline
from cwt_jax.evaluation import feature_cache
from cwt_jax.fewshot import episode

EPISODE_ARRAYS = ("support_images", "support_masks", "query_image", "query_mask")


@dataclasses.dataclass(frozen=True)
class FeatureSource:
    """Where evaluation's features come from.

    Attributes:
      batches: `(specs, batch_size)` -> this process's share of each batch of the specs'
        episodes, as global arrays on `mesh`: support_features (B, K, h, w, C),
        support_masks (B, K, S, S), query_features (B, h, w, C), query_mask (B, S, S),
        class_id (B,) and episode (B,), the index in `specs`; `len(specs)` is a multiple
        of `batch_size`. A source made with `original_masks` adds query_original_mask
        (B, G, G), the query's {0, 1, 255} mask at its original size, top-left in a square
        of 255 (G = `original_grid(split, runs)`), and query_side (B,), its longer side.
      mesh: the devices of the evaluation.
      cache: the feature cache read, None where the backbone runs on each batch.
    """

    batches: Callable[[Sequence[dict], int], Iterator[dict]]
    mesh: Mesh
    cache: feature_cache.FeatureCache | None = None


def make(
    config,
    model,
    backbone,
    split: data.Split,
    runs: list[list[dict]],
    *,
    original_masks: bool = False,
) -> FeatureSource:
    """The feature source of the runs' episodes; every episode is checked first.

    With `eval.feature_cache`, the features of every image of the runs are computed here,
    once; without it, each batch runs the backbone on its episodes' images.

    Args:
      config: the whole config (its `data` and `eval` sections are read).
      model: the backbone.
      backbone: its variables.
      split: the split holding the episodes' images.
      runs: each run's episode specs.
      original_masks: also yield each query's mask at its original size, for scores at
        the original resolution (`eval.label_resolution`); meta-training's validation
        scores at the padded test size only.

    Returns:
      A `FeatureSource`.
    """
    section = config.eval
    for specs in runs:  # checks every episode's images and class before any work
        data.episodes_from_list(
            split, specs, image_size=config.data.image_size, resize=config.data.resize
        )
    mesh = sharding.data_mesh(section.episodes_per_step, "eval.episodes_per_step")
    grid = original_grid(split, runs) if original_masks else None
    if not section.feature_cache:
        backbone = sharding.replicate(backbone, mesh)
        return FeatureSource(
            functools.partial(_backbone_batches, model, backbone, split, config.data, mesh, grid),
            mesh,
        )
    image_ids = [i for specs in runs for s in specs for i in (s["query_id"], *s["support_ids"])]
    cache = feature_cache.build(
        model,
        backbone,
        split,
        image_ids,
        image_size=config.data.image_size,
        resize=config.data.resize,
        batch_size=section.cache_batch_size,
        dtype=jnp.dtype(section.cache_dtype),
        mesh=mesh,
        memory=section.cache_memory,
        original_grid=grid,
    )
    return FeatureSource(functools.partial(feature_cache.batches, cache), mesh, cache)


def original_grid(split: data.Split, runs: list[list[dict]]) -> int:
    """The longest side of the runs' images, read from their masks' headers.

    Every original mask is padded to a square of this side, so that one compiled program
    scores every query (PASCAL VOC: at most 500). Supports count too: the feature cache
    keeps the original mask of every image it holds.
    """
    image_ids = {i for specs in runs for s in specs for i in (s["query_id"], *s["support_ids"])}
    return max(max(split.mask_shape(split.index_of[image_id])) for image_id in image_ids)


def _backbone_batches(model, backbone, split, data_config, mesh, grid, specs, batch_size):
    """`FeatureSource.batches` running the backbone on each batch's images."""
    episodes = data.episodes_from_list(
        split, specs, image_size=data_config.image_size, resize=data_config.resize
    )
    episodes = episodes.map_with_index(lambda index, record: {**record, "episode": index})
    names = (*EPISODE_ARRAYS, "class_id", "episode")
    if grid is not None:
        episodes = episodes.map(functools.partial(_with_original_query_mask, split, grid))
        names += ("query_original_mask", "query_side")
    for batch in input_pipeline.loader(episodes, batch_size, data_config.num_workers):
        batch = sharding.shard_batch({name: np.asarray(batch[name]) for name in names}, mesh)
        features = episode.episode_features(
            model, backbone, batch.pop("support_images"), batch.pop("query_image")
        )
        yield {**batch, "support_features": features[0], "query_features": features[1]}


def _with_original_query_mask(split: data.Split, grid: int, record: dict) -> dict:
    """An episode record with its query's {0, 1, 255} mask at the original size.

    Adds query_original_mask (grid, grid), top-left and padded with 255, and query_side,
    its longer side. The query is decoded a second time, beside the backbone's pass.
    """
    _, mask = split.load(split.index_of[str(record["query_id"])])
    return {
        **record,
        "query_original_mask": data.transforms.pad_to_grid(
            data.binary_mask(mask, split.mask_id(int(record["class_id"]))), grid
        ),
        "query_side": np.int32(max(mask.shape)),
    }
