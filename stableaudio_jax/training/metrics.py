"""Metrics from process 0: TensorBoard event files (tensorboardX) and a JSON-lines file, side by side."""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Mapping

import jax
import numpy as np

from stableaudio_jax import paths


class MetricsWriter:
    """``write(step, {name: scalar})`` → ``<workdir>/tensorboard/`` and ``<workdir>/metrics.jsonl``.

    Only process 0 writes; the others accept the calls and do nothing. With a bucket workdir (objects cannot be
    appended to) the event files are written to a local temporary folder and uploaded, and the JSON lines kept and
    rewritten, every ``sync_seconds`` and at close: a crash loses at most that much of the log.
    """

    def __init__(self, workdir: str | os.PathLike, enabled: bool | None = None, sync_seconds: float = 30.0):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        workdir = os.fspath(workdir)
        self.path = paths.join(workdir, "metrics.jsonl")
        self.remote = paths.is_url(workdir)
        self._tb, self._events, self._synced, self.sync_seconds = None, paths.join(workdir, "tensorboard"), 0.0, \
            sync_seconds
        if self.enabled:
            SummaryWriter = _summary_writer_class()
            paths.makedirs(workdir)
            self._local_events = tempfile.mkdtemp(prefix="stableaudio_jax-events-") if self.remote else self._events
            self._tb = SummaryWriter(self._local_events)
            self._jsonl = _ObjectText(self.path) if self.remote else open(self.path, "a", encoding="utf-8")

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
        if self.remote and time.monotonic() - self._synced >= self.sync_seconds:
            self._sync()

    def _sync(self) -> None:
        self._tb.flush()
        paths.upload_tree(self._local_events, self._events)
        self._jsonl.upload()
        self._synced = time.monotonic()

    def write_audio(self, step: int, name: str, audio: np.ndarray, sample_rate: int) -> None:
        if self.enabled:
            self._tb.add_audio(name, np.clip(np.asarray(audio, np.float32), -1, 1).mean(-1), step, sample_rate)

    def close(self) -> None:
        if not self.enabled:
            return
        self._tb.flush()
        self._tb.close()
        if self.remote:
            self._sync()
            shutil.rmtree(self._local_events, ignore_errors=True)
        else:
            self._jsonl.close()


def _summary_writer_class():
    """tensorboardX's ``SummaryWriter``, imported without torch and boto3. tensorboardX imports both at module level
    when they are installed (for torch tensors and s3:// logs, neither of which this writer uses): 1.4 s and 190 MB
    of every training process. Modules already imported are left alone."""
    blocked = [name for name in ("torch", "boto3") if name not in sys.modules]
    sys.modules.update(dict.fromkeys(blocked))  # None: `import torch` raises ImportError, as if not installed
    try:
        from tensorboardX import SummaryWriter
    finally:
        for name in blocked:
            sys.modules.pop(name, None)
    return SummaryWriter


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """The JSON-lines records of a run (for tests and quick analysis)."""
    path = paths.join(os.fspath(workdir), "metrics.jsonl")
    with paths.open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class _ObjectText:
    """The JSON lines of a bucket workdir: the existing object's text (a resumed run continues it) plus what is
    written, uploaded whole by :meth:`upload`."""

    def __init__(self, path: str):
        self.path = path
        self._text = paths.read_text(path) if paths.isfile(path) else ""

    def write(self, text: str) -> None:
        self._text += text

    def flush(self) -> None:
        pass  # uploads are the writer's schedule

    def upload(self) -> None:
        paths.write_text_atomic(self.path, self._text)
