"""The training loop and the pieces every run shares: resume-or-start, stop on signals/preemption, non-finite guard,
step timing. What happens between steps (logging, checkpoints, demos, profiling, the progress bar) is a list of
hooks, each with its own cadence (``training/hooks.py`` has the standard ones).

Resuming is strict: if ``<workdir>/checkpoints`` holds a checkpoint, it is restored (into the current mesh's
shardings) together with the data position, and its model config must equal the current one; anything else
raises. A fresh start happens only when there is no checkpoint at all.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import threading
import time
from typing import Any, Callable, Sequence

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


class MetricsWindow:
    """The steps since the last log: their finiteness (accumulated on the device), their time and the latest value
    of each metric (device arrays until a log turns them into floats)."""

    def __init__(self):
        self.guard, self.timer, self.latest = FiniteGuard(), StepTimer(), {}

    def add(self, step: int, metrics: dict) -> None:
        self.guard.update(metrics.pop("finite"), step)
        self.timer.tick()
        self.latest.update({f"train/{k}": v for k, v in metrics.items()})

    def check(self, done: int) -> None:
        """Raises :class:`NonFiniteLossError` when a step since the last check had a non-finite loss."""
        self.guard.check(done, self.latest)

    def floats(self) -> dict:
        return {k: float(np.asarray(v)) for k, v in self.latest.items()}


@dataclasses.dataclass
class LoopStep:
    """What a hook sees after a step."""
    done: int  # steps done: the step just taken + 1, the number logs and checkpoints carry
    end: int  # the step this run stops at
    state: Any
    window: MetricsWindow
    stopping: bool = False  # a stop signal arrived (every process agrees): the loop ends after this step
    stop: bool = False  # set by a hook to end the loop after this step (a preemption notice)


@dataclasses.dataclass(frozen=True)
class Hook:
    """``fn(step)`` after every ``every``-th step; with ``at_end`` also after the run's last step, with ``at_stop``
    also after the step a stop signal ends the run at; ``close(state)`` when the loop ends, however it ends."""
    every: int
    fn: Callable[[LoopStep], Any]
    at_end: bool = False
    at_stop: bool = False
    close: Callable[[Any], None] | None = None

    @classmethod
    def of(cls, hook: "Hook | tuple[int, Callable[[LoopStep], Any]]") -> "Hook":
        return hook if isinstance(hook, Hook) else cls(*hook)

    def due(self, step: LoopStep) -> bool:
        return (self.every > 0 and step.done % self.every == 0) or (self.at_end and step.done == step.end) or (
            self.at_stop and step.stopping)


def run_loop(state: Any, step_fn: Callable, batches: Callable[[], Any],
             hooks: Sequence[Hook | tuple[int, Callable[[LoopStep], Any]]], *, start: int, end: int,
             poll_every: int) -> tuple[Any, dict]:
    """``state, metrics = step_fn(step, state, batches())`` for steps ``start..end-1``; after each step, the hooks
    that are due, in order. Returns (state, the latest metrics as floats: the last log's, with later steps' values).

    A stop signal (SIGTERM/SIGINT) ends the loop after the hooks of the step it is seen at: one process polls every
    step; several agree every ``poll_every`` steps (a collective, not one per step). A hook ends it by setting
    ``step.stop``.
    """
    hooks = [Hook.of(h) for h in hooks]
    window = MetricsWindow()
    try:
        with StopSignal() as stop:
            for step in range(start, end):
                state, metrics = step_fn(step, state, batches())
                window.add(step, metrics)
                done = step + 1
                stopping = stop.requested if jax.process_count() == 1 else (
                    done % poll_every == 0 and stop.any_process())
                info = LoopStep(done, end, state, window, stopping)
                for hook in hooks:
                    if hook.due(info):
                        hook.fn(info)
                if info.stop or stopping:
                    break
    finally:
        for hook in hooks:
            if hook.close is not None:
                hook.close(state)
    return state, window.floats()
