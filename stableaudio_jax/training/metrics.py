"""Metrics from process 0: TensorBoard event files (tensorboardX) and a JSON-lines file, side by side."""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping

import jax
import numpy as np


class MetricsWriter:
    """``write(step, {name: scalar})`` → ``<workdir>/tensorboard/`` and ``<workdir>/metrics.jsonl``.

    Only process 0 writes; the others accept the calls and do nothing.
    """

    def __init__(self, workdir: str | os.PathLike, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = os.path.join(os.fspath(workdir), "metrics.jsonl")
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter
            os.makedirs(os.fspath(workdir), exist_ok=True)
            self._tb = SummaryWriter(os.path.join(os.fspath(workdir), "tensorboard"))
            self._jsonl = open(self.path, "a", encoding="utf-8")

    def write(self, step: int, scalars: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        values = {k: float(np.asarray(v)) for k, v in scalars.items()}
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)
        record = {"step": int(step), "time": time.time(),
                  **{k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()

    def write_audio(self, step: int, name: str, audio: np.ndarray, sample_rate: int) -> None:
        if self.enabled:
            self._tb.add_audio(name, np.clip(np.asarray(audio, np.float32), -1, 1).mean(-1), step, sample_rate)

    def close(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._tb.close()
            self._jsonl.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The JSON-lines records of a run (for tests and quick analysis)."""
    path = os.path.join(os.fspath(workdir), "metrics.jsonl")
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
