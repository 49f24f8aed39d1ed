"""Metrics as JSON lines and TensorBoard event files (tensorboardX: no TensorFlow needed)."""

import concurrent.futures
import json
import os

import jax

from cwt_jax import files


class MetricWriter:
    """Appends scalars to `<workdir>/metrics.jsonl` and to TensorBoard events in `<workdir>/tb`.

    In a run of several processes only process 0 writes (the metrics are the same on all).
    The TensorBoard writer is opened in a thread: tensorboardX imports PyTorch where it is
    installed, which takes seconds that the run's start need not wait for.
    """

    def __init__(self, workdir: str):
        self._enabled = jax.process_index() == 0
        self._path = os.path.join(workdir, "metrics.jsonl")
        if self._enabled:
            executor = concurrent.futures.ThreadPoolExecutor(1)
            self._summary = executor.submit(_summary_writer, os.path.join(workdir, "tb"))
            executor.shutdown(wait=False)  # the thread ends once the writer is open

    def write(self, stage: str, step: int, scalars: dict[str, float]) -> None:
        """Records scalars of a stage ("pretrain", "metatrain", "eval") at a step."""
        if not self._enabled:
            return
        scalars = {name: float(value) for name, value in scalars.items()}
        with open(self._path, "a") as lines:
            lines.write(json.dumps({"stage": stage, "step": int(step), **scalars}) + "\n")
        summary = self._summary.result()
        for name, value in scalars.items():
            summary.add_scalar(f"{stage}/{name}", value, step)

    def truncate(self, stage: str, step: int) -> None:
        """Drops the JSON lines of `stage` after `step`: a resumed stage writes them again.

        TensorBoard discards the events a restart orphans itself, so its files are kept.
        """
        if not self._enabled or not os.path.isfile(self._path):
            return
        with open(self._path) as lines:
            records = [(line, json.loads(line)) for line in lines]
        kept = [
            line for line, record in records if record["stage"] != stage or record["step"] <= step
        ]
        files.write_atomically(self._path, "".join(kept).encode())

    def flush(self) -> None:
        """Writes the TensorBoard events recorded so far to disk."""
        if self._enabled:
            self._summary.result().flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._enabled:
            self._summary.result().close()


def _summary_writer(directory: str):
    import tensorboardX  # here, in the writer's thread: see MetricWriter

    return tensorboardX.SummaryWriter(directory)
