"""Checkpoints on disk, behind one small module (orbax).

A *training checkpoint* (:class:`TrainCheckpointer`) lives in ``<workdir>/checkpoints/<step>/`` as an orbax
``CheckpointManager`` composite: ``state`` (the train state), ``data`` (the data iterator's position, JSON) and
``config`` (the run's config, JSON). Saves are asynchronous, the last ``keep`` are kept, a termination signal
(SIGTERM/SIGINT) or a TPU preemption notice makes the loop save and stop.

Exported models (what `generate` and `encode` read) are the model store's business: ``stableaudio_jax.store``.

Restoring goes through an abstract target (shapes, dtypes and, optionally, shardings), so a checkpoint written on
one mesh loads onto another. Anything missing, mis-shaped or unreadable raises; nothing falls back to fresh weights.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from stableaudio_jax import paths
from stableaudio_jax.store.format import StoreError

# One error type for every unusable checkpoint or stored model (the CLI reports it as a clear error).
CheckpointError = StoreError
EXPORT_DIR = "model"  # a finished run's export: <workdir>/model


def _placed_here(abstract_state: Any) -> Any:
    """Leaves without a sharding are restored onto this process's first device: orbax otherwise places them as
    they were saved, which fails ("topology mismatch") for a checkpoint of a multi-host run read by one process
    (``export --workdir``, ``encode --vae WORKDIR``, demos rendered afterwards)."""
    here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(
        lambda a: a if getattr(a, "sharding", None) is not None else jax.ShapeDtypeStruct(a.shape, a.dtype,
                                                                                           sharding=here),
        abstract_state)


class TrainCheckpointer:
    """Training checkpoints: async save, keep-last-N, config and data position beside the state, sharded restore."""

    def __init__(self, workdir: str | os.PathLike, keep: int = 3, async_save: bool = True):
        self.directory = paths.join(paths.absolute(workdir), "checkpoints")  # orbax writes gs:// natively
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict | None, config: Any, force: bool = True) -> bool:
        config_dict = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state),
                                  data=ocp.args.JsonSave(data_state or {}),
                                  config=ocp.args.JsonSave(json.loads(json.dumps(config_dict, default=list))))
        return self.manager.save(step, args=args, force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, dict]:
        """(state placed as ``abstract_state``'s shardings say, data position, config) of ``step`` (default: the
        latest). Raises :class:`CheckpointError` if there is none or it does not fit."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{self.directory}: no checkpoint to restore")
        args = ocp.args.Composite(state=ocp.args.StandardRestore(_placed_here(abstract_state)),
                                  data=ocp.args.JsonRestore(),
                                  config=ocp.args.JsonRestore())
        try:
            restored = self.manager.restore(step, args=args)
        except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
            raise CheckpointError(f"{self.directory}/{step}: cannot restore the train state: {e}") from e
        return restored["state"], dict(restored["data"] or {}), dict(restored["config"] or {})

    def saved_config(self, step: int | None = None) -> dict:
        """The config stored with ``step`` (default: the latest), without touching the state."""
        step = self.latest_step() if step is None else step
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        except (ValueError, FileNotFoundError, KeyError, TypeError) as e:
            raise CheckpointError(f"{self.directory}/{step}: unreadable config: {e}") from e
        return dict(restored["config"] or {})

    def reached_preemption(self, step: int) -> bool:
        """True when the cluster announced a preemption (TPU maintenance events via jax.distributed)."""
        return bool(self.manager.reached_preemption(step))

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
