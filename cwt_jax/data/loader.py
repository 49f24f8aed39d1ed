"""Sharded, multi-worker iteration over an indexable dataset with grain's DataLoader."""

import grain


def make_loader(
    dataset: grain.MapDataset,
    *,
    batch_size: int,
    worker_count: int = 0,
    shard_options: grain.sharding.ShardOptions | None = None,
    num_epochs: int = 1,
) -> grain.DataLoader:
    """Batches a dataset in index order; the output does not depend on ``worker_count``.

    Each element is fixed by its index (see episodes.py). Batches are formed before the
    sampler (batch b holds elements b*B .. b*B+B-1, the last incomplete one dropped), so
    worker processes, which each take every w-th record, exchange whole batches and the
    stream is the same for any number of workers; shards take contiguous ranges of
    batches, so the shards of several hosts partition one run's batches.

    Args:
      dataset: Indexable dataset, e.g. from ``train_episodes`` or ``base_class_dataset``.
      batch_size: Per-shard batch size.
      worker_count: Worker processes (0 reads in the calling process). Workers need absl
        flags parsed: run under ``absl.app.run`` or call ``flags.FLAGS.mark_as_parsed()``.
      shard_options: e.g. ``grain.sharding.ShardByJaxProcess(drop_remainder=True)`` or
        ``grain.sharding.ShardOptions(index, count, drop_remainder=True)``; None for one
        shard.
      num_epochs: Passes over the dataset.

    Returns:
      A grain DataLoader; iterating it gives batches (dicts of numpy arrays with a leading
      batch dimension); its iterator state can be checkpointed with orbax.

    """
    batches = dataset.batch(batch_size, drop_remainder=True)
    sampler = grain.samplers.IndexSampler(
        num_records=len(batches),
        shard_options=shard_options or grain.sharding.NoSharding(),
        shuffle=False,
        num_epochs=num_epochs,
    )
    return grain.DataLoader(data_source=batches, sampler=sampler, worker_count=worker_count)
