"""Metrics as JSON lines and TensorBoard event files (tensorboardX: no TensorFlow needed)."""

import json
import os

import jax
import tensorboardX


class MetricWriter:
    """Appends scalars to `<workdir>/metrics.jsonl` and to TensorBoard events in `<workdir>/tb`.

    In a run of several processes only process 0 writes (the metrics are the same on all).
    """

    def __init__(self, workdir: str):
        self._enabled = jax.process_index() == 0
        self._path = os.path.join(workdir, "metrics.jsonl")
        if self._enabled:
            self._summary = tensorboardX.SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, stage: str, step: int, scalars: dict[str, float]) -> None:
        """Records scalars of a stage ("pretrain", "metatrain", "eval") at a step."""
        if not self._enabled:
            return
        scalars = {name: float(value) for name, value in scalars.items()}
        with open(self._path, "a") as lines:
            lines.write(json.dumps({"stage": stage, "step": int(step), **scalars}) + "\n")
        for name, value in scalars.items():
            self._summary.add_scalar(f"{stage}/{name}", value, step)
        self._summary.flush()

    def close(self) -> None:
        """Flushes and closes the event file."""
        if self._enabled:
            self._summary.close()
