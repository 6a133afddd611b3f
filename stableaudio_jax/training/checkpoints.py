"""Checkpoints on disk, behind one small module (orbax).

A *training checkpoint* (:class:`TrainCheckpointer`) lives in ``<workdir>/checkpoints/<step>/`` as an orbax
``CheckpointManager`` composite: ``state`` (the train state), ``data`` (the data iterator's position, JSON) and
``config`` (the run's config, JSON). Saves are asynchronous, the last ``keep`` are kept, a termination signal
(SIGTERM/SIGINT) or a TPU preemption notice makes the loop save and stop.

A *model checkpoint* is what ``stableaudio-jax convert`` writes and ``generate --checkpoint`` / the pipeline's
``from_checkpoint`` read: a directory with

  stableaudio_jax.json   {"format": "stableaudio-jax/model", "version": 1, "config": {...}} (self-describing)
  params/                an orbax checkpoint of the parameter tree
  spiece.model           the text encoder's sentencepiece model, when there is one

Restoring goes through an abstract target (shapes, dtypes and, optionally, shardings), so a checkpoint written on
one mesh loads onto another. Anything missing, mis-shaped or unreadable raises; nothing falls back to fresh weights.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

MODEL_FORMAT = "stableaudio-jax/model"
MODEL_VERSION = 1
METADATA_FILE = "stableaudio_jax.json"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt, or not matching the model it is loaded into."""


def save_model(directory: str | os.PathLike, params: Any, config: ml_collections.ConfigDict | dict,
               assets: dict[str, str] | None = None, overwrite: bool = False) -> str:
    """Writes params + config (+ asset files copied in by name) as a model checkpoint; returns the directory."""
    directory = os.path.abspath(os.fspath(directory))
    if os.path.exists(os.path.join(directory, METADATA_FILE)) and not overwrite:
        raise CheckpointError(f"{directory} already holds a model checkpoint; pass overwrite=True to replace it")
    os.makedirs(directory, exist_ok=True)
    params_dir = os.path.join(directory, "params")
    if os.path.exists(params_dir):
        shutil.rmtree(params_dir)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(params_dir, params)
    checkpointer.wait_until_finished()
    for name, source in (assets or {}).items():
        shutil.copyfile(source, os.path.join(directory, name))
    config_dict = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    with open(os.path.join(directory, METADATA_FILE), "w", encoding="utf-8") as f:
        json.dump({"format": MODEL_FORMAT, "version": MODEL_VERSION, "config": config_dict}, f, indent=1,
                  sort_keys=True, default=list)
    return directory


def load_model_config(directory: str | os.PathLike) -> ml_collections.ConfigDict:
    """The config stored in a model checkpoint (raises :class:`CheckpointError` if it is not one)."""
    path = os.path.join(os.fspath(directory), METADATA_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f"{os.fspath(directory)}: no {METADATA_FILE}; not a stableaudio-jax model checkpoint "
                              "(write one with `stableaudio-jax convert`)")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: unreadable checkpoint metadata ({e})") from e
    if meta.get("format") != MODEL_FORMAT or meta.get("version") != MODEL_VERSION:
        raise CheckpointError(f"{path}: format {meta.get('format')!r} version {meta.get('version')!r}; expected "
                              f"{MODEL_FORMAT!r} version {MODEL_VERSION}")
    return ml_collections.ConfigDict(meta["config"])


def restore_params(directory: str | os.PathLike, abstract_params: Any) -> Any:
    """Restores the parameter tree into ``abstract_params`` (``jax.ShapeDtypeStruct`` leaves, with ``sharding``
    where the result should be placed). A missing/extra leaf or a shape mismatch raises :class:`CheckpointError`."""
    params_dir = os.path.join(os.path.abspath(os.fspath(directory)), "params")
    if not os.path.isdir(params_dir):
        raise CheckpointError(f"{os.fspath(directory)}: no params/ directory; the checkpoint is incomplete")
    abstract = jax.tree_util.tree_map(
        lambda x: x if isinstance(x, jax.ShapeDtypeStruct) else jax.ShapeDtypeStruct(x.shape, x.dtype),
        abstract_params)
    try:
        return ocp.StandardCheckpointer().restore(params_dir, abstract)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise CheckpointError(f"{params_dir}: cannot restore into the model's parameters: {e}") from e


class TrainCheckpointer:
    """Training checkpoints: async save, keep-last-N, config and data position beside the state, sharded restore."""

    def __init__(self, workdir: str | os.PathLike, keep: int = 3, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(os.fspath(workdir)), "checkpoints")
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
        args = ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
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
