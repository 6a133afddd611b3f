"""The loop hooks every run has (``run_loop``'s ``(every, fn)`` hooks): metrics, checkpoints, the progress bar and
a profiler trace. A run's own hooks (the diffusion run's demos) sit beside them in the list the trainer builds.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

import jax
import ml_collections
import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.training.checkpoints import TrainCheckpointer
from stableaudio_jax.training.loop import Hook, LoopStep

logger = logging.getLogger(__name__)


def log_hook(writer, every: int, audio_seconds_per_step: float, flops_per_step: float | None = None) -> Hook:
    """Every ``every`` steps and after the last: finiteness check and metrics (+ step time, audio-seconds/s and,
    given the step's model FLOPs, achieved TFLOP/s and MFU against this chip's peak where it is known)."""
    def log(step: LoopStep) -> None:
        step.window.latest = _log(writer, step, audio_seconds_per_step, flops_per_step)
    return Hook(every, log, at_end=True)


def _log(writer, step: LoopStep, audio_seconds: float, flops: float | None) -> dict:
    from stableaudio_jax.parallel.hardware import local_chip, mfu
    window = step.window
    window.check(step.done)
    seconds = window.timer.lap()
    values = {k: float(np.asarray(jax.device_get(v))) for k, v in window.latest.items()}
    values.update({"perf/step_time_s": seconds, "perf/audio_seconds_per_s": audio_seconds / seconds})
    if flops:
        values["perf/tflops_per_s"] = flops / seconds / 1e12
        utilisation = mfu(flops, seconds, local_chip(), jax.device_count())
        if utilisation is not None:
            values["perf/mfu"] = utilisation
    writer.write(step.done, values)
    return values


def checkpoint_hook(checkpointer: TrainCheckpointer, data, config: ml_collections.ConfigDict, every: int) -> Hook:
    """Every ``every`` steps, after the last and on a stop signal: a checkpoint with the data position and config
    (never of a state whose loss went non-finite); a TPU preemption notice saves and ends the loop too."""
    def save(step: LoopStep) -> None:
        step.window.check(step.done)
        checkpointer.save(step.done, step.state, data.state(), config)
        if step.stopping and step.done < step.end:
            logger.warning("stopped at step %d; re-run the same command to resume", step.done)
        elif checkpointer.reached_preemption(step.done):
            logger.warning("preemption at step %d: checkpoint saved", step.done)
            step.stop = True
    return Hook(every, save, at_end=True, at_stop=True)


def progress_hook(start: int, end: int, desc: str) -> Hook:
    """A tqdm bar over the run's steps (the CLI's)."""
    from tqdm import tqdm
    bar = tqdm(total=end, initial=start, desc=desc, unit="step")
    return Hook(1, lambda step: bar.update(1), close=lambda state: bar.close())


class StepProfiler:
    """A JAX profiler trace of ``steps`` steps, from the end of the run's first (compiling) step, into ``folder``.
    Every process records its own host (``plugins/profile/<time>/<host>.xplane.pb``); a bucket folder gets the
    trace uploaded when it stops (the profiler writes local files). A hook on every step (:meth:`hook`)."""

    def __init__(self, steps: int, folder: str, start: int):
        self.steps, self.folder, self.first = int(steps), folder, start
        self.active, self.done = False, start + 1

    def hook(self) -> Hook:
        return Hook(1, lambda step: self.after(step.done - 1, step.state), close=self.close)

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
