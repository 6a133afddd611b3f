"""The on-disk format of a stored model: one directory, a JSON manifest, the weights, the files they need.

  <model>/stableaudio_jax.json   the manifest: {"format": "stableaudio-jax/model", "version": 2, "kind": ...,
                                 "config": {...}, "weights": {"file", "sha256", "parameters"}, "files": {name:
                                 sha256}, "components": {name: subdirectory}, "provenance": {...}}
  <model>/weights.safetensors    the parameter tree, flattened to "a/b/c" keys (absent for a bundle)
  <model>/spiece.model, ...      files the model needs (a tokenizer), each with its sha256 in the manifest
  <model>/<component>/           a bundle's parts, each itself a stored model (``text-to-audio``)

The weights' content hash (sha256 over every tensor's name, dtype, shape and bytes, in name order) is computed
when a model is saved and checked when it is loaded, so a replaced or corrupted file is an error, and pre-encoded
data, training runs and bundles can record exactly which weights they were made with.

A directory is built under a temporary name and renamed into place when complete (in a bucket: uploaded with the
manifest last): a crash never leaves a half-written model that looks whole. Everything that does not fit (no
manifest, a newer format version, a kind other than the one asked for, a missing or altered file,
missing/extra/mis-shaped tensors) raises
:class:`StoreError` naming the file and what was expected.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import jax
import ml_collections
import numpy as np

from stableaudio_jax import paths

FORMAT = "stableaudio-jax/model"
VERSION = 2
MANIFEST_FILE = "stableaudio_jax.json"
WEIGHTS_FILE = "weights.safetensors"
KINDS = ("vae", "text_encoder", "diffusion", "text-to-audio", "lora")
SEPARATOR = "/"


class StoreError(RuntimeError):
    """A stored model or checkpoint that cannot be used: missing, corrupt, of another kind or format version, or
    not matching the model it is loaded into."""


@dataclass(frozen=True)
class ModelInfo:
    """A stored model's manifest, read and checked (files present and unaltered)."""

    directory: str
    kind: str
    config: ml_collections.ConfigDict
    weights_sha256: str | None
    files: dict[str, str] = field(default_factory=dict)
    components: dict[str, str] = field(default_factory=dict)
    component_sha256: dict[str, str] = field(default_factory=dict)  # what a bundle recorded for each part
    provenance: dict = field(default_factory=dict)

    def path(self, name: str) -> str:
        return paths.join(self.directory, name)


# ------------------------------------------------------------------------------------------------ hashing


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """A nested dict of arrays → {"a/b/c": array}."""
    out = {}
    for key, value in tree.items():
        key = str(key)
        if SEPARATOR in key:
            raise ValueError(f"parameter name {prefix + key!r} contains {SEPARATOR!r}; cannot be stored")
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}{SEPARATOR}"))
        else:
            out[prefix + key] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> dict:
    tree: dict = {}
    for key, value in flat.items():
        *parents, leaf = key.split(SEPARATOR)
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def host_arrays(tree: Any) -> Any:
    """Every leaf as a numpy array on this host (gathered across processes when a leaf is sharded over hosts);
    logically partitioned (boxed) leaves are unboxed."""
    import flax.linen as nn
    tree = nn.unbox(tree)

    def to_host(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))
    return jax.tree_util.tree_map(to_host, tree)


def weights_sha256(params: Mapping) -> str:
    """The content hash of a parameter tree: sha256 over (name, dtype, shape, little-endian bytes), names sorted.
    The same weights give the same hash in memory and on disk, whatever the file layout."""
    import flax.linen as nn
    digest = hashlib.sha256()
    for name, value in sorted(flatten(nn.unbox(params)).items()):
        array = np.ascontiguousarray(np.asarray(value))
        if array.dtype.byteorder == ">":
            array = array.astype(array.dtype.newbyteorder("<"))
        digest.update(f"{name}\0{array.dtype.name}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def components_sha256(hashes: Mapping[str, str]) -> str:
    """The content hash of a model made of components: the hash of their hashes."""
    return hashlib.sha256(json.dumps(dict(hashes), sort_keys=True).encode()).hexdigest()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with paths.open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def parameter_count(params: Mapping) -> int:
    return int(sum(np.prod(np.shape(v)) for v in flatten(params).values()))


# ------------------------------------------------------------------------------------------------ writing


@contextlib.contextmanager
def staged_directory(directory: str | os.PathLike, overwrite: bool = False) -> Iterator[str]:
    """Yields a local temporary directory to write into; on success it replaces ``directory`` (an existing model
    only with ``overwrite``): locally in one rename, in a bucket by an upload with the manifest last. On error
    the temporary directory is removed and ``directory`` is untouched."""
    directory = paths.absolute(directory)
    if paths.exists(paths.join(directory, MANIFEST_FILE)) and not overwrite:
        raise StoreError(f"{directory} already holds a stored model; pass overwrite=True (--overwrite) to replace it")
    if paths.isdir(directory) and not paths.exists(paths.join(directory, MANIFEST_FILE)) \
            and paths.listdir(directory):
        raise StoreError(f"{directory} exists and is not a stored model; refusing to replace its contents")
    with paths.staged_directory(directory, marker=MANIFEST_FILE) as staging:
        yield staging


def write_model(directory: str, kind: str, config: Mapping | ml_collections.ConfigDict, params: Mapping | None = None,
                files: Mapping[str, str] | None = None, components: Mapping[str, str] | None = None,
                provenance: Mapping | None = None) -> str:
    """Writes weights, copies ``files`` ({name in the model: source path}) and writes the manifest last, into
    ``directory`` (a staging directory from :func:`staged_directory`, or a bundle's component folder).
    Returns the weights' sha256 (a bundle's: the hash of its components' hashes)."""
    from safetensors.numpy import save_file
    if kind not in KINDS:
        raise ValueError(f"model kind {kind!r}; expected one of {KINDS}")
    os.makedirs(directory, exist_ok=True)
    manifest: dict[str, Any] = {"format": FORMAT, "version": VERSION, "kind": kind, "config": _plain(config)}
    if params is not None:
        params = host_arrays(params)
        flat = {k: np.ascontiguousarray(v) for k, v in flatten(params).items()}
        _check_storable(flat)
        save_file(flat, os.path.join(directory, WEIGHTS_FILE), metadata={"format": FORMAT})
        manifest["weights"] = {"file": WEIGHTS_FILE, "sha256": weights_sha256(params),
                               "parameters": parameter_count(params)}
    manifest["files"] = {}
    for name, source in (files or {}).items():
        paths.copy_file(source, os.path.join(directory, name))
        manifest["files"][name] = file_sha256(os.path.join(directory, name))
    if components:
        manifest["components"] = dict(components)
        hashes = {name: read_info(os.path.join(directory, sub)).weights_sha256 for name, sub in components.items()}
        manifest["weights"] = {"sha256": components_sha256(hashes), "components": hashes}
    manifest["provenance"] = _plain(provenance or {})
    from stableaudio_jax import __version__
    manifest["created_by"] = f"stableaudio-jax {__version__}"
    tmp = os.path.join(directory, MANIFEST_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(directory, MANIFEST_FILE))
    return manifest["weights"]["sha256"] if "weights" in manifest else ""


def _check_storable(flat: Mapping[str, np.ndarray]) -> None:
    for name, value in flat.items():
        if value.dtype == object or not (np.issubdtype(value.dtype, np.number) or value.dtype == bool
                                         or value.dtype.name == "bfloat16"):
            raise ValueError(f"parameter {name!r} has dtype {value.dtype}; only numeric arrays can be stored")


def _plain(config: Any) -> Any:
    """A ConfigDict / mapping → plain JSON values (tuples become lists)."""
    if isinstance(config, ml_collections.ConfigDict):
        config = config.to_dict()
    return json.loads(json.dumps(config, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


# ------------------------------------------------------------------------------------------------ reading


def is_stored_model(path: str | os.PathLike) -> bool:
    return paths.isfile(paths.join(os.fspath(path), MANIFEST_FILE))


def read_info(directory: str | os.PathLike, kind: str | tuple[str, ...] | None = None) -> ModelInfo:
    """The checked manifest of a stored model (``kind``: the kind(s) the caller can use)."""
    directory = paths.absolute(directory)
    path = paths.join(directory, MANIFEST_FILE)
    if not paths.isfile(path):
        raise StoreError(f"{directory}: no {MANIFEST_FILE}; not a stableaudio-jax stored model (write one with "
                         "`stableaudio-jax convert` or `stableaudio-jax export`)")
    try:
        manifest = paths.read_json(path)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{path}: unreadable manifest ({e})") from e
    _check_version(manifest, path)
    found = manifest.get("kind")
    if found not in KINDS:
        raise StoreError(f"{path}: model kind {found!r} is unknown; this stableaudio-jax stores {KINDS}")
    wanted = (kind,) if isinstance(kind, str) else kind
    if wanted is not None and found not in wanted:
        raise StoreError(f"{path}: a stored {found!r} model; expected {' or '.join(map(repr, wanted))}")
    files = dict(manifest.get("files") or {})
    for name, expected in files.items():
        file = paths.join(directory, name)
        if not paths.isfile(file):
            raise StoreError(f"{file}: missing; the manifest {path} lists it (sha256 {expected[:12]}...)")
        if file_sha256(file) != expected:
            raise StoreError(f"{file}: content differs from the manifest's sha256 {expected[:12]}...; the file was "
                             "replaced or corrupted")
    weights = manifest.get("weights") or {}
    return ModelInfo(directory, found, ml_collections.ConfigDict(manifest.get("config") or {}),
                     weights.get("sha256"), files, dict(manifest.get("components") or {}),
                     dict(weights.get("components") or {}), dict(manifest.get("provenance") or {}))


def _check_version(manifest: dict, path: str) -> None:
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{path}: format {manifest.get('format')!r}; expected {FORMAT!r}")
    version = manifest.get("version")
    if not isinstance(version, int):
        raise StoreError(f"{path}: format version {version!r} is not an integer")
    if version > VERSION:
        raise StoreError(f"{path}: format version {version} was written by a newer stableaudio-jax; this one reads "
                         f"version {VERSION}: upgrade stableaudio-jax")
    if version < VERSION:
        raise StoreError(f"{path}: format version {version} (stableaudio-jax before the model store); version "
                         f"{VERSION} is needed: convert or export the model again")


def read_weights(info: ModelInfo, abstract: Any, verify: bool = True) -> Any:
    """The stored parameter tree, checked against ``abstract`` (shapes/dtypes of the model built from the config:
    every tensor present, none extra, shapes equal; values cast to the model's dtypes) and, with ``verify``,
    against the manifest's content hash."""
    return match_tree(read_flat(info, verify), abstract, info.path(WEIGHTS_FILE))


def read_flat(info: ModelInfo, verify: bool = True) -> dict[str, np.ndarray]:
    """The stored tensors by flat name ("a/b/c"), checked against the manifest's content hash with ``verify``."""
    from safetensors import SafetensorError
    from safetensors.numpy import load, load_file
    path = info.path(WEIGHTS_FILE)
    if not paths.isfile(path):
        raise StoreError(f"{path}: missing; the stored {info.kind} model has no weights")
    try:
        flat = load(paths.read_bytes(path)) if paths.is_url(path) else load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise StoreError(f"{path}: unreadable weights file ({e}); it is truncated or corrupt") from e
    if verify and weights_sha256(unflatten(flat)) != info.weights_sha256:
        raise StoreError(f"{path}: the weights' content hash does not match the manifest "
                         f"({str(info.weights_sha256)[:12]}...); the file was replaced or corrupted")
    return flat


def match_tree(flat: Mapping[str, np.ndarray], abstract: Any, source: str) -> Any:
    """``flat`` ("a/b/c" → array) shaped as ``abstract``; every missing, unexpected or mis-shaped tensor is
    listed in one :class:`StoreError`."""
    expected = {k: v for k, v in flatten(abstract).items()}
    missing = sorted(set(expected) - set(flat))
    unexpected = sorted(set(flat) - set(expected))
    mismatched = [f"{k}: stored {tuple(flat[k].shape)}, model {tuple(expected[k].shape)}"
                  for k in sorted(set(flat) & set(expected)) if tuple(flat[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or mismatched:
        parts = [f"{source}: the stored weights do not match the model built from the manifest's config"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatches", mismatched)):
            if items:
                parts.append(f"  {len(items)} {title}: " + ", ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise StoreError("\n".join(parts))
    return unflatten({k: np.asarray(flat[k]).astype(expected[k].dtype) for k in expected})
