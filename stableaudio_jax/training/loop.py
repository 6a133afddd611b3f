"""Pieces every training loop shares: resume-or-start, stop on signals/preemption, non-finite guard, step timing.

Resuming is strict: if ``<workdir>/checkpoints`` holds a checkpoint, it is restored (into the current mesh's
shardings) together with the data position, and its model config must equal the current one; anything else
raises. A fresh start happens only when there is no checkpoint at all.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.training.checkpoints import CheckpointError, TrainCheckpointer

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN/inf: the run stops and the state that produced it is not saved."""


class StopSignal:
    """Turns SIGTERM/SIGINT into a flag the loop polls (installs only in the main thread; restores on exit)."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        logger.warning("signal %d: saving a checkpoint and stopping", signum)
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False

    def any_process(self) -> bool:
        """True when any process got a stop signal (processes must stop at the same step)."""
        if jax.process_count() == 1:
            return self.requested
        from jax.experimental import multihost_utils
        return bool(np.any(multihost_utils.process_allgather(np.array([self.requested]))))


class FiniteGuard:
    """Accumulates per-step finiteness on the device (no host sync per step); ``check`` raises on the first bad."""

    def __init__(self):
        self._ok = jnp.array(True)
        self._since = 0

    def update(self, finite: jax.Array, step: int) -> None:
        self._ok = jnp.logical_and(self._ok, finite)
        self._since = self._since or step

    def check(self, step: int, metrics: dict | None = None) -> None:
        if not bool(jax.device_get(self._ok)):
            shown = {k: float(v) for k, v in (metrics or {}).items() if np.ndim(v) == 0}
            raise NonFiniteLossError(f"non-finite loss between steps {self._since} and {step} ({shown}); stopping "
                                     "without saving this state. Lower the learning rate or check the data.")
        self._since = 0


def abstract_with_shardings(abstract: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
                                  shardings)


def frozen_without(config: ml_collections.ConfigDict,
                   training_keys: tuple[str, ...]) -> ml_collections.FrozenConfigDict:
    """A hashable copy of ``config`` without the training loop's own settings (steps, logging, ...): the key of
    the compiled-step caches, so that a run resumed with other loop settings reuses its compiled steps."""
    plain = config.to_dict()
    plain["training"] = {k: v for k, v in plain["training"].items() if k not in training_keys}
    return ml_collections.FrozenConfigDict(plain)


def check_global_batch(batch_size: int, mesh, axes: tuple[str, ...] = ("data", "fsdp"),
                       key: str = "training.batch_size") -> None:
    """The global batch is split over the mesh's data axes and over processes: say so when it cannot be."""
    sizes = {a: int(mesh.shape[a]) for a in axes if a in mesh.shape}
    shards = math.prod(sizes.values())
    if batch_size % shards:
        raise ValueError(f"{key}={batch_size} cannot be split over the mesh's data axes {sizes} ({shards} shards); "
                         f"use a multiple of {shards} or change config.mesh")
    if batch_size % jax.process_count():
        raise ValueError(f"{key}={batch_size} is not divisible by the {jax.process_count()} processes")


def _model_sections(config: dict) -> dict:
    return {k: config.get(k) for k in ("model", "vae", "dit") if k in config}


def resume_or_start(checkpointer: TrainCheckpointer, abstract_state: Any, init: Callable[[], Any],
                    config: ml_collections.ConfigDict, workdir: str) -> tuple[Any, dict, bool]:
    """(state, data position, resumed?). Writes ``<workdir>/config.json`` on a fresh start."""
    current = json.loads(config.to_json_best_effort())
    if checkpointer.latest_step() is None:
        paths.makedirs(workdir)
        paths.write_text_atomic(paths.join(workdir, "config.json"),
                                config.to_json_best_effort(indent=1, sort_keys=True))
        return init(), {}, False
    mine, theirs = _model_sections(current), _model_sections(checkpointer.saved_config())
    if json.dumps(mine, sort_keys=True) != json.dumps(theirs, sort_keys=True):
        raise CheckpointError(f"{checkpointer.directory}: the checkpoint was written with a different model config "
                              f"({theirs}) than this run's ({mine}); use another --workdir")
    state, data_state, _ = checkpointer.restore(abstract_state)
    logger.info("resumed from step %d", checkpointer.latest_step())
    return state, data_state, True


class StepTimer:
    """Wall time per step over a logging window (the first window includes compilation)."""

    def __init__(self):
        self.start, self.steps = time.perf_counter(), 0

    def tick(self) -> None:
        self.steps += 1

    def lap(self) -> float:
        now = time.perf_counter()
        per_step = (now - self.start) / max(self.steps, 1)
        self.start, self.steps = now, 0
        return per_step


class StepProfiler:
    """A JAX profiler trace of ``steps`` steps, from the end of the run's first (compiling) step, into ``folder``.
    Every process records its own host (``plugins/profile/<time>/<host>.xplane.pb``); a bucket folder gets the
    trace uploaded when it stops (the profiler writes local files)."""

    def __init__(self, steps: int, folder: str, start: int):
        self.steps, self.folder, self.first = int(steps), folder, start
        self.active, self.done = False, start + 1

    def after(self, step: int, state: Any) -> None:
        if self.steps <= 0:
            return
        if step == self.first:
            jax.block_until_ready(state)  # the compile and the first step stay out of the trace
            self.local = tempfile.mkdtemp(prefix="stableaudio_jax-profile-") if paths.is_url(self.folder) \
                else self.folder
            jax.profiler.start_trace(self.local)
            self.active = True
        elif self.active:
            self.done = step + 1
            if step == self.first + self.steps:
                self.close(state)

    def close(self, state: Any = None) -> None:
        if self.active:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
            if self.local != self.folder:
                paths.upload_tree(self.local, self.folder)
                shutil.rmtree(self.local, ignore_errors=True)
            logger.info("profile of steps %d-%d written to %s (TensorBoard's profile tab, xprof or Perfetto)",
                        self.first + 2, self.done, self.folder)


def run_loop(state: Any, step_fn: Callable, data, batch_sharding, *, start: int, end: int, checkpointer:
             TrainCheckpointer, writer, config: ml_collections.ConfigDict, audio_seconds_per_step: float,
             desc: str, progress: bool = False, after_step: Callable[[int, Any], None] | None = None,
             flops_per_step: float | None = None):
    """The shared training loop: ``state, metrics = step_fn(step, state, batch)`` for steps ``start..end-1``.

    Every ``log_every`` steps: finiteness check and metrics (+ step time, audio-seconds/s and, given the step's
    model FLOPs, achieved TFLOP/s and MFU against this chip's peak where it is known); every
    ``checkpoint_every`` steps, at the end, and on a stop signal or preemption notice: a checkpoint with the data
    position and config. ``after_step(done, state)`` runs after each step (demos). Returns (state, last metrics).
    """
    from stableaudio_jax.parallel.distributed import global_batch
    t = config.training
    guard, timer, last = FiniteGuard(), StepTimer(), {}
    bar = _progress_bar(progress, start, end, desc)
    profiler = StepProfiler(t.get("profile_steps", 0),
                            paths.join(os.path.dirname(checkpointer.directory), "profile"), start)
    try:
        with StopSignal() as stop:
            for step in range(start, end):
                state, metrics = step_fn(step, state, global_batch(next(data), batch_sharding))
                profiler.after(step, state)
                guard.update(metrics.pop("finite"), step)
                timer.tick()
                last.update({f"train/{k}": v for k, v in metrics.items()})
                if bar is not None:
                    bar.update(1)
                done = step + 1
                if done % t.log_every == 0 or done == end:
                    last = _log(writer, guard, timer, last, done, audio_seconds_per_step, flops_per_step)
                if after_step is not None:
                    after_step(done, state)
                # one process: poll the flag every step; several: agree at log steps (a collective, not per step)
                stopping = stop.requested if jax.process_count() == 1 else (
                    done % t.log_every == 0 and stop.any_process())
                if done % t.checkpoint_every == 0 or done == end or stopping:
                    guard.check(done, last)
                    checkpointer.save(done, state, data.state(), config)
                    if stopping and done < end:
                        logger.warning("stopped at step %d; re-run the same command to resume", done)
                        break
                    if checkpointer.reached_preemption(done):
                        logger.warning("preemption at step %d: checkpoint saved", done)
                        break
    finally:
        profiler.close(state)
        if bar is not None:
            bar.close()
    return state, {k: float(np.asarray(v)) for k, v in last.items()}


def _log(writer, guard: FiniteGuard, timer: StepTimer, last: dict, step: int, audio_seconds: float,
         flops: float | None = None) -> dict:
    from stableaudio_jax.parallel.hardware import local_chip, mfu
    guard.check(step, last)
    seconds = timer.lap()
    values = {k: float(np.asarray(jax.device_get(v))) for k, v in last.items()}
    values.update({"perf/step_time_s": seconds, "perf/audio_seconds_per_s": audio_seconds / seconds})
    if flops:
        values["perf/tflops_per_s"] = flops / seconds / 1e12
        utilisation = mfu(flops, seconds, local_chip(), jax.device_count())
        if utilisation is not None:
            values["perf/mfu"] = utilisation
    writer.write(step, values)
    return values


def _progress_bar(enabled: bool, start: int, end: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=end, initial=start, desc=desc, unit="step")
