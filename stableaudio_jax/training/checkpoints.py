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

import copy
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


def _write_replicas_from_one_process() -> None:
    """In a single-process run, orbax writes each replicated array once instead of splitting it between its
    replicas. Splitting (orbax's "replica-parallel" save) spreads the writes over the processes that hold a
    replica; when every replica lives in this one process it spreads nothing and costs a compiled slice per array
    shape and device on the first save: about 300 compiles and 11 s for the tiny VAE's train state on 8 devices, a
    pause of seconds in every short run. Multi-process runs keep orbax's default. The files written are the same.
    The jax.Array handler is orbax's own, copied with that one option changed (a constructor argument; it is
    copied rather than constructed so the array-metadata store it was registered with is kept)."""
    if jax.process_count() > 1:
        return
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(handler, "_use_replica_parallel", False):
        handler = copy.copy(handler)
        handler._use_replica_parallel = False
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


class TrainCheckpointer:
    """Training checkpoints: async save, keep-last-N, config and data position beside the state, sharded restore."""

    def __init__(self, workdir: str | os.PathLike, keep: int = 3, async_save: bool = True):
        self.directory = paths.join(paths.absolute(workdir), "checkpoints")  # orbax writes gs:// natively
        _write_replicas_from_one_process()
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
