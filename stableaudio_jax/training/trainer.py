"""The one training skeleton every run goes through: mesh → checkpointer → data source → compiled step and memory
check → resume → loop with hooks → export. (The checkpointer comes before the data: a resumed run checks its data
against the hash its checkpoint recorded.) ``train-vae`` (``vae_train.VAERun``), ``train`` (``diffusion_train.DiffusionRun``: DiT or U-Net, any
objective, LoRA too) and ``train-arc`` (``arc_train.ARCRun``) configure it with a :class:`Run`; :func:`train`
runs one.

Resumable by re-running with the same workdir: the latest checkpoint (state, data position, config) is restored
onto the current mesh. Metrics go to TensorBoard and ``metrics.jsonl`` from process 0; a non-finite loss stops the
run without saving; SIGTERM/SIGINT (and TPU preemption notices) save a checkpoint and stop. A finished run exports
``<workdir>/model``.
"""
from __future__ import annotations

import abc
import os
from typing import Any, Callable

import ml_collections

from stableaudio_jax import paths
from stableaudio_jax.parallel.distributed import global_batch, initialize
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.training.checkpoints import EXPORT_DIR, TrainCheckpointer
from stableaudio_jax.training.hooks import StepProfiler, checkpoint_hook, log_hook, progress_hook
from stableaudio_jax.training.loop import Hook, check_global_batch, resume_or_start, run_loop
from stableaudio_jax.training.memory_fit import Need, check_fits
from stableaudio_jax.training.metrics import MetricsWriter


class Run(abc.ABC):
    """One kind of training run. :func:`train` calls, in this order: :meth:`check`, :meth:`open_data`,
    :meth:`compile`, :meth:`need` (the memory check), :meth:`init` and :meth:`abstract_state` (resume or start),
    then :meth:`step` in the loop with :meth:`hooks` beside the standard ones, and :meth:`export` at the end."""
    command: str  # names the run in the memory check's messages and on the progress bar

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        self.config, self.workdir = config, workdir  # config: the run's private copy (runs record data in it)

    def check(self) -> None:
        """Refuses a config this kind of run cannot start from, before anything is built."""

    @abc.abstractmethod
    def open_data(self, data_dir: str, checkpointer: TrainCheckpointer):
        """This host's checkpointable iterator of ``training.batch_size / processes``-example batches."""

    @abc.abstractmethod
    def compile(self, mesh) -> None:
        """Builds the compiled steps on ``mesh`` (after the data: its shapes can set the model's)."""

    @abc.abstractmethod
    def need(self, config: ml_collections.ConfigDict) -> Need:
        """The per-device memory of the compiled step under ``config`` (this run's, or a candidate change)."""

    @abc.abstractmethod
    def init(self, checkpointer: TrainCheckpointer) -> Callable[[], Any]:
        """The fresh start's state maker (called only when there is no checkpoint)."""

    @abc.abstractmethod
    def abstract_state(self) -> Any:
        """The train state's shapes with the mesh's shardings: what a checkpoint restores into."""

    @abc.abstractmethod
    def step(self, step: int, state: Any, batch: dict) -> tuple[Any, dict]:
        """One training step on a global batch: (state, metrics with a ``finite`` flag)."""

    @abc.abstractmethod
    def batch_sharding(self):
        """How a global batch is laid out on the mesh."""

    @property
    @abc.abstractmethod
    def audio_seconds_per_step(self) -> float:
        """Seconds of audio one step trains on (the logs' audio-seconds per second)."""

    def flops_per_step(self) -> float | None:
        """The step's model FLOPs, for the logs' TFLOP/s and MFU (None: not counted)."""
        return None

    def first_metrics(self) -> dict:
        """Metrics written at step 0 of a fresh run (the data's size)."""
        return {}

    def hooks(self) -> list[Hook | tuple]:
        """This kind's own loop hooks, run after the log and before the checkpoint."""
        return []

    @abc.abstractmethod
    def export(self, state: Any, out: str) -> None:
        """The finished run's model into ``out`` (every process calls it: the weights are gathered)."""


def train(run_type: type[Run], config: ml_collections.ConfigDict, workdir: str, data_dir: str,
          progress: bool = False, max_steps: int | None = None) -> dict[str, Any]:
    """Trains a ``run_type`` run until ``config.training.steps`` (or ``max_steps`` more steps); returns the last
    logged metrics."""
    initialize(config.get("distributed"))
    config = ml_collections.ConfigDict(config.to_dict())  # a private copy: runs record what they train on in it
    run = run_type(config, workdir)
    run.check()
    t = config.training
    mesh = make_mesh(config.mesh)
    check_global_batch(t.batch_size, mesh)
    checkpointer = TrainCheckpointer(workdir, keep=t.keep_checkpoints)
    try:
        data = run.open_data(data_dir, checkpointer)
        run.compile(mesh)
        if t.get("check_memory", True):
            check_fits(config, run.need, run.command)
        state, data_state, _ = resume_or_start(checkpointer, run.abstract_state(), run.init(checkpointer), config,
                                               workdir)
        data.restore(data_state)
        return _loop_and_export(run, state, data, checkpointer, progress, max_steps)
    finally:
        checkpointer.close()


def _loop_and_export(run: Run, state, data, checkpointer: TrainCheckpointer, progress: bool,
                     max_steps: int | None) -> dict:
    t = run.config.training
    writer = MetricsWriter(run.workdir)
    try:
        start = int(state.step)
        end = t.steps if max_steps is None else min(t.steps, start + max_steps)
        first = run.first_metrics() if start == 0 else {}
        if first:
            writer.write(0, first)
        sharding = run.batch_sharding()
        state, last = run_loop(state, run.step, lambda: global_batch(next(data), sharding),
                               _hooks(run, checkpointer, data, writer, progress, start, end),
                               start=start, end=end, poll_every=t.log_every)
        checkpointer.wait()
        if int(state.step) == t.steps:
            run.export(state, os.path.join(run.workdir, EXPORT_DIR))
    finally:
        writer.close()
    return last


def _hooks(run: Run, checkpointer, data, writer, progress: bool, start: int, end: int) -> list:
    """profiler, progress bar, log, the run's own (demos), checkpoint: in that order after each step (the checkpoint
    last: it may end the loop)."""
    t = run.config.training
    hooks = []
    if t.get("profile_steps", 0) > 0:
        folder = paths.join(os.path.dirname(checkpointer.directory), "profile")
        hooks.append(StepProfiler(t.profile_steps, folder, start).hook())
    if progress:
        hooks.append(progress_hook(start, end, run.command))
    hooks.append(log_hook(writer, t.log_every, run.audio_seconds_per_step, run.flops_per_step()))
    return hooks + run.hooks() + [checkpoint_hook(checkpointer, data, run.config, t.checkpoint_every)]
