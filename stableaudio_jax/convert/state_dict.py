"""Reading PyTorch state dicts without torch, and filling our parameter trees from them with full checks.

``.safetensors`` is read with the safetensors library (bfloat16 included, no torch needed). ``.ckpt`` / ``.pt`` /
``.bin`` pickles need torch (a test extra); without it the error says so. Every conversion accounts for every key:
missing keys, unexpected keys and shape mismatches are collected and raised together, never dropped.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import jax
import numpy as np

StateDict = dict[str, np.ndarray]
Path = tuple[str, ...]


class CheckpointMismatchError(ValueError):
    """A state dict does not match the model: lists every missing / unexpected key and shape mismatch."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str], mismatched: list[str]):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = [f"{source}: checkpoint does not match the model"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched)):
            if items:
                shown = "\n    ".join(items[:40]) + (f"\n    ... and {len(items) - 40} more" if len(items) > 40 else "")
                parts.append(f"  {len(items)} {title}:\n    {shown}")
        super().__init__("\n".join(parts))


class UnreadableCheckpointError(ValueError):
    """A weights or config file that cannot be read at all: truncated, corrupt, or not what its name says."""


def load_json(path: str | os.PathLike, what: str = "config") -> dict:
    """A JSON file as a dict; an unreadable one is an error naming the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnreadableCheckpointError(f"{path}: unreadable {what} file ({e})") from e
    if not isinstance(value, dict):
        raise UnreadableCheckpointError(f"{path}: the {what} file holds a {type(value).__name__}; expected an object")
    return value


def _read_safetensors(path: str) -> StateDict:
    from safetensors import SafetensorError, safe_open

    out = {}
    # framework="flax" handles bfloat16 (numpy alone cannot); keep the arrays on the host CPU device.
    try:
        with jax.default_device(jax.devices("cpu")[0]), safe_open(path, framework="flax") as f:
            for key in f.keys():
                out[key] = np.asarray(f.get_tensor(key))
    except (SafetensorError, OSError, ValueError) as e:
        raise UnreadableCheckpointError(f"{path}: unreadable safetensors file ({e}); it is truncated or corrupt, "
                                        "download or convert it again") from e
    return out


def _read_torch_pickle(path: str) -> StateDict:
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{path}: reading a PyTorch pickle (.ckpt/.pt/.bin) needs torch, which is not installed; "
                          "install torch or convert the file to .safetensors") from e
    import pickle
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, ValueError) as e:
        raise UnreadableCheckpointError(f"{path}: unreadable PyTorch checkpoint ({type(e).__name__}: "
                                        f"{str(e).splitlines()[0] if str(e) else ''}); it is truncated or corrupt, "
                                        "or not a state dict") from e
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # Lightning / stable-audio-tools training checkpoints
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not torch.is_tensor(value):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        out[key] = value.float().numpy() if value.dtype == torch.bfloat16 else value.numpy()
    return out


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """A flat ``{name: numpy array}`` from ``.safetensors`` (no torch needed) or a torch pickle."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    if path.endswith(".safetensors"):
        return _read_safetensors(path)
    if path.endswith((".ckpt", ".pt", ".pth", ".bin")):
        return _read_torch_pickle(path)
    raise ValueError(f"{path}: unknown checkpoint format; expected .safetensors, .ckpt, .pt, .pth or .bin")


def strip_prefix(state: Mapping[str, np.ndarray], prefix: str) -> StateDict:
    """The entries under ``prefix``, with the prefix removed (others are left to their own converters)."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def leaf_paths(tree: Any) -> list[Path]:
    """Paths of every leaf of a nested dict, as tuples of keys."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [tuple(str(getattr(k, "key", k)) for k in path) for path, _ in flat]


def fill_params(state: Mapping[str, np.ndarray], abstract_params: Any, key_for: Callable[[Path], str],
                transform: Callable[[Path, np.ndarray], np.ndarray], source: str,
                ignore: Iterable[str] = ()) -> dict:
    """Builds a param tree shaped like ``abstract_params`` from ``state``.

    ``key_for(path)`` names the state-dict entry of each parameter, ``transform(path, array)`` converts its layout.
    Keys in ``ignore`` (buffers that carry no parameters) may be present or absent. Raises
    :class:`CheckpointMismatchError` listing every problem at once.
    """
    abstract_params = nn.unbox(abstract_params)
    flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
    ignore = set(ignore)
    used, missing, mismatched, leaves = set(), [], [], []
    for path, spec in flat:
        path = tuple(str(getattr(k, "key", k)) for k in path)
        key = key_for(path)
        if key not in state:
            missing.append(key)
            leaves.append(None)
            continue
        used.add(key)
        try:
            value = np.asarray(transform(path, state[key]))
        except ValueError as e:  # a layout change impossible for this shape: report it with the others
            mismatched.append(f"{key}: checkpoint {tuple(state[key].shape)} cannot become model "
                              f"{'/'.join(path)} {tuple(spec.shape)} ({e})")
            leaves.append(None)
            continue
        if tuple(value.shape) != tuple(spec.shape):
            mismatched.append(f"{key}: checkpoint {tuple(state[key].shape)} → {tuple(value.shape)}, "
                              f"model {'/'.join(path)} expects {tuple(spec.shape)}")
        leaves.append(value.astype(spec.dtype))
    unexpected = sorted(set(state) - used - ignore)
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, sorted(missing), unexpected, mismatched)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def read_hf_weights(directory: str) -> tuple[dict, str]:
    """The weights of a Hugging Face model directory and the file they came from: a sharded safetensors index,
    ``model.safetensors``, or ``pytorch_model.bin`` (torch needed)."""
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        weight_map = load_json(index, "weights index").get("weight_map")
        if not isinstance(weight_map, dict):
            raise UnreadableCheckpointError(f"{index}: no 'weight_map' object; not a safetensors index")
        files = sorted(set(weight_map.values()))
        state = {}
        for name in files:
            state.update(read_state_dict(os.path.join(directory, name)))
        return state, index
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return read_state_dict(path), path
    raise FileNotFoundError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
