"""Stable Audio 3 adapter files (LoRA, DoRA, BoRA and their LoRA-XS forms, as its ``train_lora.py`` writes them)
applied to a converted SA3 model, by computing each adapted weight as the reference's parametrisations do and
writing it into the params (the reference's ``merge_lora`` bake).

Why merged and not kept as side adapters: only plain LoRA adds ``x A B`` to a layer's output; DoRA and BoRA
renormalise the adapted weight's rows or columns, which no additive path reproduces.

File: safetensors (tensors stored in float16) with metadata ``lora_config`` = ``{rank, alpha, adapter_type,
include, exclude}``; keys ``<module>.parametrizations.weight.0.<p>`` where ``<module>`` is relative to the DiT
wrapper (``model.transformer.layers.3.self_attn.to_qkv``) or to the conditioner
(``conditioners.seconds_total.embedder.embedding.1``), and ``<p>`` in lora_A [r, in], lora_B [out, r], magnitude,
magnitude_r [out], magnitude_c [in], M_xs [r, r]. With ``s = alpha / rank`` and strength ``lam`` (W [out, in]):

  lora          W + s lam B A
  dora-rows     m[:, None] * V / ||V||_rows,  V = W + s lam B A      (dora-cols: columns; lam = 0 keeps W)
  bora          m_c[None] * H / ||H||_cols,  H = m_r[:, None] * V / ||V||_rows
  *-xs          B A replaced by U M V^T, U and V the top-``rank`` singular vectors of the weight the adapter is
                applied to (signs fixed so each U column's largest entry is positive), as the reference recomputes
Several files chain in order: W → p0(W) → p1(p0(W)).
"""
from __future__ import annotations

import json
import os
from typing import Any, Sequence

import jax
import numpy as np

from stableaudio_jax.convert.sa3_dit import sa3_key
from stableaudio_jax.convert.state_dict import UnreadableCheckpointError

ADAPTER_TYPES = ("lora", "dora-rows", "dora-cols", "bora", "lora-xs", "dora-rows-xs", "dora-cols-xs", "bora-xs")
MARKER = ".parametrizations.weight.0."


def read_sa3_lora(path: str | os.PathLike) -> tuple[dict[str, dict[str, np.ndarray]], dict]:
    """``({module: {param: float32 array}}, config)`` with the adapter type resolved (legacy ``dora``: from its
    magnitudes' shape, else dora-rows) and rank / alpha filled in (alpha defaults to the rank)."""
    from safetensors import SafetensorError, safe_open
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"SA3 adapter file {path!r} does not exist")
    try:
        with safe_open(path, framework="numpy") as f:
            tensors = {k: np.asarray(f.get_tensor(k), np.float32) for k in f.keys()}
            config = json.loads((f.metadata() or {}).get("lora_config", "{}"))
    except (SafetensorError, OSError, ValueError) as e:
        raise UnreadableCheckpointError(f"{path}: unreadable SA3 adapter file ({e})") from e
    modules: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        if MARKER not in key:
            raise ValueError(f"{path}: tensor {key!r} is not an adapter parameter (<module>{MARKER}<name>)")
        module, name = key.split(MARKER)
        modules.setdefault(module, {})[name] = value
    config = dict(config, adapter_type=_adapter_type(config.get("adapter_type", "lora"), modules, path))
    ranks = {v.shape[0] for m in modules.values() for k, v in m.items() if k in ("lora_A", "M_xs")}
    if not ranks:
        raise ValueError(f"{path}: no lora_A or M_xs tensors; not an SA3 adapter file")
    rank = int(config.get("rank") or max(ranks))
    return modules, dict(config, rank=rank, alpha=float(config.get("alpha") or rank))


def _adapter_type(kind: str, modules: dict, path: str) -> str:
    if kind == "dora":  # legacy: 2-D magnitudes tell the axis
        for params in modules.values():
            m = params.get("magnitude")
            if m is not None and m.ndim == 2:
                kind = "dora-cols" if m.shape[0] == 1 else "dora-rows"
                break
        else:
            kind = "dora-rows"
    if kind not in ADAPTER_TYPES:
        raise ValueError(f"{path}: adapter_type {kind!r} is not known; expected one of {ADAPTER_TYPES}")
    for params in modules.values():
        if "magnitude" in params:
            params["magnitude"] = params["magnitude"].reshape(-1)
    return kind


def svd_bases(weight: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """U [out, r], V [in, r] of ``weight`` with the reference's sign convention."""
    u, _, vh = np.linalg.svd(weight.astype(np.float64), full_matrices=False)
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(u.shape[1])])
    signs[signs == 0] = 1
    return (u * signs)[:, :rank], (vh * signs[:, None])[:rank].T


def _normalise(v: np.ndarray, axis: int) -> np.ndarray:
    return v / (np.linalg.norm(v, axis=axis, keepdims=True) + 1e-12)


def adapted_weight(weight: np.ndarray, params: dict[str, np.ndarray], kind: str, scale: float,
                   strength: float) -> np.ndarray:
    """One parametrisation applied to ``weight`` [out, in] (float32)."""
    weight = weight.astype(np.float32)
    if kind.endswith("-xs"):
        u, v = svd_bases(weight, params["M_xs"].shape[0])
        delta = u @ params["M_xs"] @ v.T
    else:
        delta = params["lora_B"] @ params["lora_A"]
    base = kind.removesuffix("-xs")
    if base != "lora" and strength == 0:
        return weight
    adapted = weight + scale * strength * delta
    if base == "lora":
        return adapted
    if base == "dora-rows":
        return params["magnitude"][:, None] * _normalise(adapted, 1)
    if base == "dora-cols":
        return params["magnitude"][None, :] * _normalise(adapted, 0)
    rows = params["magnitude_r"][:, None] * _normalise(adapted, 1)
    return params["magnitude_c"][None, :] * _normalise(rows, 0)


def _param_path(module: str) -> tuple[str, tuple[str, ...]]:
    """``('dit' | 'conditioner', reference weight name)`` of an adapter's module path."""
    if module.startswith("model."):
        return "dit", module[len("model."):] + ".weight"
    if module.startswith("conditioners."):
        return "conditioner", module
    raise ValueError(f"adapter module {module!r}: expected a path under the DiT ('model.') or the conditioner "
                     "('conditioners.')")


def apply_sa3_loras(params: Any, loras: Sequence[tuple[str, float]], scanned: bool) -> Any:
    """``params`` ({"params": {"dit", "conditioner"}}, as a stored SA3 model holds them) with each adapter file
    merged at its strength, in order."""
    from stableaudio_jax.convert.dit import stack_blocks, unstack_blocks
    tree = jax.tree_util.tree_map(np.asarray, params)
    dit = unstack_blocks(tree["params"]["dit"]) if scanned else tree["params"]["dit"]
    names = _kernel_names(dit)
    for path, strength in loras:
        modules, config = read_sa3_lora(path)
        scale = config["alpha"] / config["rank"]
        for module, adapter in modules.items():
            part, name = _param_path(module)
            if part == "conditioner":
                kernel_path = _conditioner_kernel(module, path)
                holder, key = tree["params"]["conditioner"], kernel_path
            else:
                if name not in names:
                    raise ValueError(f"{path}: module {module!r} is not a layer of this model's DiT")
                holder, key = dit, names[name]
            kernel = _get(holder, key)
            fan_in = int(np.prod(kernel.shape[:2])) if key[-2] == "to_out" else kernel.shape[0]
            weight = kernel.reshape(fan_in, -1).T
            _check(adapter, weight.shape, module, path, config["adapter_type"])
            new = adapted_weight(weight, adapter, config["adapter_type"], scale, strength)
            _set(holder, key, new.T.reshape(kernel.shape).astype(kernel.dtype))
    tree["params"]["dit"] = stack_blocks(dit, _depth(dit)) if scanned else dit
    return tree


def _kernel_names(dit: dict) -> dict[str, tuple[str, ...]]:
    """The reference's weight names of every kernel of an (unscanned) DiT param tree → its path."""
    flat = jax.tree_util.tree_flatten_with_path(dit)[0]
    paths = [tuple(str(getattr(k, "key", k)) for k in p) for p, _ in flat]
    return {sa3_key(p): p for p in paths if p[-1] == "kernel"}


def _conditioner_kernel(module: str, path: str) -> tuple[str, ...]:
    if module != "conditioners.seconds_total.embedder.embedding.1":
        raise ValueError(f"{path}: module {module!r} is not a layer of this model's conditioner")
    return ("seconds_total", "embedding", "kernel")


def _check(adapter: dict, shape: tuple, module: str, path: str, kind: str) -> None:
    out, fan_in = shape
    expected = {"lora_A": (None, fan_in), "lora_B": (out, None), "magnitude": (out if "rows" in kind else fan_in,),
                "magnitude_r": (out,), "magnitude_c": (fan_in,)}
    for name, value in adapter.items():
        want = expected.get(name)
        if want and any(w is not None and w != s for w, s in zip(want, value.shape)):
            raise ValueError(f"{path}: {module}.{name} has shape {value.shape}; the layer's weight is {shape} "
                             f"[out, in] ({kind})")


def _get(tree: dict, path: tuple[str, ...]):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def _depth(dit: dict) -> int:
    return sum(1 for k in dit if k.startswith("blocks_"))
