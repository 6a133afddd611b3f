"""The on-disk format of pre-encoded latents: TFRecord shards of ``tf.train.Example`` records plus ``manifest.json``.

One record is one fixed window of one audio file, as written by the pre-encoder (``stableaudio-jax encode``).
Features (all arrays are raw little-endian bytes, row-major):

=========================  =========  ==============================================================================
feature                    type       meaning
=========================  =========  ==============================================================================
``latents``                bytes      VAE latents ``[latent_frames, latent_channels]`` in ``latents_dtype``
``latents_shape``          int64[2]   ``[latent_frames, latent_channels]``
``latents_dtype``          bytes      ``float32``, ``float16`` or ``bfloat16`` (ascii)
``latent_length``          int64      valid frames; frames ``latent_length:`` are padding (a short file's last window)
``padding_mask``           bytes      uint8 ``[latent_frames]``, 1 = valid frame
``text_embeddings``        bytes      text form "embeddings": T5 output ``[L, D]`` in ``text_embeddings_dtype``
``text_embeddings_shape``  int64[2]   ``[L, D]``
``text_embeddings_dtype``  bytes      ``float32``, ``float16`` or ``bfloat16``
``text_ids``               int64[L]   text form "ids": token ids (the denoiser runs T5 itself)
``text_mask``              bytes      uint8 ``[L]``, 1 = real token (both text forms)
``seconds_start``          float      start of the window in the file, seconds (float32 in the proto)
``seconds_total``          float      duration of the whole file, seconds (float32 in the proto)
``caption``                bytes      utf-8 caption
``source_id``              bytes      utf-8 id of the source file (relative path)
``window_index``           int64      index of this window within its source file
=========================  =========  ==============================================================================

A record carries exactly one text form. The timing is exact up to float32 (a relative error of 6e-8; the reader
floors / ceils it to whole seconds for conditioning).

``manifest.json`` (written last, atomically, by the pre-encoder) describes the dataset::

    {"format": "stableaudio-jax/latents", "version": 1, "encoder_config_hash": str, "latent_channels": int,
     "latent_frames": int, "sample_rate": int, "downsampling_ratio": int, "text": "embeddings" | "ids",
     "text_length": int, "text_dim": int | None, "shards": [{"file": name relative to the directory, "records": int}],
     "records": int, "encoder_config": {...}}
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import ml_dtypes
import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.data.tfrecord import make_example, parse_example

FORMAT = "stableaudio-jax/latents"
VERSION = 1
MANIFEST = "manifest.json"
# Little-endian storage types; bfloat16 goes through its uint16 bit pattern (ml_dtypes has no byte-order variants).
_DTYPES = {"float32": (np.dtype("<f4"), np.float32), "float16": (np.dtype("<f2"), np.float16),
           "bfloat16": (np.dtype("<u2"), ml_dtypes.bfloat16)}


def _encode_array(array: np.ndarray) -> tuple[bytes, str]:
    name = np.dtype(array.dtype).name
    if name not in _DTYPES:
        raise ValueError(f"latents/embeddings dtype {name} is not one of {sorted(_DTYPES)}")
    wire, native = _DTYPES[name]
    bits = np.ascontiguousarray(array, dtype=native)
    if name == "bfloat16":
        bits = bits.view(np.uint16)
    return bits.astype(wire, copy=False).tobytes(), name


def _decode_array(data: bytes, dtype: str, shape, what: str, where: str) -> np.ndarray:
    if dtype not in _DTYPES:
        raise ValueError(f"{where}: {what} dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    wire, native = _DTYPES[dtype]
    shape = tuple(int(s) for s in shape)
    if len(data) != int(np.prod(shape)) * wire.itemsize:
        raise ValueError(f"{where}: {what} has {len(data)} bytes, but shape {list(shape)} of {dtype} needs "
                         f"{int(np.prod(shape)) * wire.itemsize}")
    array = np.frombuffer(data, wire).astype(wire.newbyteorder("="))  # a native, writable copy
    return array.view(native).reshape(shape)


@dataclasses.dataclass
class LatentRecord:
    """One window of one audio file. Exactly one of ``text_embeddings`` / ``text_ids`` is set."""
    latents: np.ndarray  # [latent_frames, latent_channels], float32 / float16 / bfloat16
    latent_length: int
    seconds_start: float
    seconds_total: float
    text_mask: np.ndarray  # [L] bool
    text_embeddings: np.ndarray | None = None  # [L, D]
    text_ids: np.ndarray | None = None  # [L] int
    padding_mask: np.ndarray | None = None  # [latent_frames] bool; default: the first latent_length frames
    caption: str = ""
    source_id: str = ""
    window_index: int = 0

    def __post_init__(self):
        if self.padding_mask is None:
            self.padding_mask = np.arange(self.latents.shape[0]) < self.latent_length
        self.padding_mask = np.asarray(self.padding_mask, bool)
        self.text_mask = np.asarray(self.text_mask, bool)

    def check(self, where: str = "record") -> None:
        """Raises ValueError naming the inconsistent field."""
        if self.latents.ndim != 2:
            raise ValueError(f"{where}: latents must be [frames, channels], got shape {self.latents.shape}")
        frames = self.latents.shape[0]
        if not 0 <= self.latent_length <= frames:
            raise ValueError(f"{where}: latent_length {self.latent_length} is outside [0, {frames}] latent frames")
        if self.padding_mask.shape != (frames,):
            raise ValueError(f"{where}: padding_mask has shape {self.padding_mask.shape}, expected ({frames},)")
        if (self.text_embeddings is None) == (self.text_ids is None):
            raise ValueError(f"{where}: exactly one of text_embeddings / text_ids must be set")
        text = self.text_embeddings if self.text_ids is None else self.text_ids
        if text.ndim != (2 if self.text_ids is None else 1):
            raise ValueError(f"{where}: text has shape {text.shape}; embeddings are [L, D], ids are [L]")
        if self.text_mask.shape != (text.shape[0],):
            raise ValueError(f"{where}: text_mask has shape {self.text_mask.shape}, expected ({text.shape[0]},)")

    def to_bytes(self) -> bytes:
        """The serialised ``tf.train.Example``."""
        self.check()
        latents, latents_dtype = _encode_array(self.latents)
        features = {"latents": latents, "latents_shape": list(self.latents.shape), "latents_dtype": latents_dtype,
                    "latent_length": int(self.latent_length),
                    "padding_mask": self.padding_mask.astype(np.uint8).tobytes(),
                    "text_mask": self.text_mask.astype(np.uint8).tobytes(),
                    "seconds_start": float(self.seconds_start), "seconds_total": float(self.seconds_total),
                    "caption": self.caption.encode("utf-8"), "source_id": self.source_id.encode("utf-8"),
                    "window_index": int(self.window_index)}
        if self.text_ids is not None:
            features["text_ids"] = np.asarray(self.text_ids, np.int64)
        else:
            data, dtype = _encode_array(self.text_embeddings)
            features.update(text_embeddings=data, text_embeddings_shape=list(self.text_embeddings.shape),
                            text_embeddings_dtype=dtype)
        return make_example(features)

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "record") -> "LatentRecord":
        """Parses one record; ``where`` (file and record index) prefixes every error message."""
        try:
            f = parse_example(data)
        except Exception as e:  # protobuf's DecodeError; the record passed its checksum, so the writer was wrong
            raise ValueError(f"{where}: not a tf.train.Example ({type(e).__name__}: {e})") from e

        def get(name, kind):
            if name not in f:
                raise ValueError(f"{where}: missing feature {name!r} (present: {sorted(f)})")
            value = f[name]
            ok = (len(value) == 1 and isinstance(value, list)) if kind == "bytes" else (
                isinstance(value, np.ndarray) and value.dtype.kind == kind)
            if not ok:
                raise ValueError(f"{where}: feature {name!r} is {value!r:.80}, expected "
                                 + ("one bytes value" if kind == "bytes" else f"numbers of kind {kind!r}"))
            return value[0] if kind == "bytes" else value

        def scalar(name, kind):
            value = get(name, kind)
            if value.shape != (1,):
                raise ValueError(f"{where}: feature {name!r} must hold one number, got {value.tolist()}")
            return value[0].item()

        latents = _decode_array(get("latents", "bytes"), get("latents_dtype", "bytes").decode(),
                                get("latents_shape", "i"), "latents", where)
        record = cls(latents=latents, latent_length=int(scalar("latent_length", "i")),
                     seconds_start=float(scalar("seconds_start", "f")),
                     seconds_total=float(scalar("seconds_total", "f")),
                     text_mask=np.frombuffer(get("text_mask", "bytes"), np.uint8).astype(bool),
                     padding_mask=np.frombuffer(get("padding_mask", "bytes"), np.uint8).astype(bool),
                     caption=get("caption", "bytes").decode("utf-8"),
                     source_id=get("source_id", "bytes").decode("utf-8"),
                     window_index=int(scalar("window_index", "i")))
        if "text_ids" in f:
            record.text_ids = get("text_ids", "i")
        elif "text_embeddings" in f:
            record.text_embeddings = _decode_array(
                get("text_embeddings", "bytes"), get("text_embeddings_dtype", "bytes").decode(),
                get("text_embeddings_shape", "i"), "text_embeddings", where)
        else:
            raise ValueError(f"{where}: missing feature 'text_embeddings' or 'text_ids' (present: {sorted(f)})")
        record.check(where)
        return record


# --- manifest -----------------------------------------------------------------------------------------------------

def config_hash(obj) -> str:
    """First 16 hex digits of the sha256 of canonical JSON (sorted keys, no spaces; tuples as lists)."""
    if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict
        obj = obj.to_dict()
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def manifest_path(directory: str | os.PathLike) -> str:
    return paths.join(os.fspath(directory), MANIFEST)


def write_manifest(directory: str | os.PathLike, manifest: dict) -> str:
    """Writes ``manifest.json`` atomically (a reader sees the old manifest or the new one, never half of one)."""
    path = manifest_path(directory)
    paths.write_json_atomic(path, manifest, indent=2, sort_keys=True)
    return path


def read_manifest(directory: str | os.PathLike) -> dict:
    path = manifest_path(directory)
    if not paths.exists(path):
        raise FileNotFoundError(f"{path} does not exist: {os.fspath(directory)!r} is not a pre-encoded latent "
                                "dataset (run `stableaudio-jax encode` to create one)")
    with paths.open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e


_REQUIRED = {"format": str, "version": int, "encoder_config_hash": str, "latent_channels": int,
             "latent_frames": int, "sample_rate": int, "downsampling_ratio": int, "text": str, "text_length": int,
             "shards": list, "records": int, "encoder_config": dict}


def validate_manifest(manifest: dict, directory: str | os.PathLike, *, latent_channels: int | None = None,
                      encoder_config_hash: str | None = None) -> None:
    """Checks the manifest's structure, that its shard files exist, and that it matches this run's model (channel
    count) and encoder (config hash). Raises ValueError naming the manifest, the value found and the expected."""
    path = manifest_path(directory)
    for key, kind in _REQUIRED.items():
        if key not in manifest:
            raise ValueError(f"{path}: missing field {key!r}")
        if not isinstance(manifest[key], kind):
            raise ValueError(f"{path}: field {key!r} is {manifest[key]!r}, expected a {kind.__name__}")
    if manifest["format"] != FORMAT or manifest["version"] != VERSION:
        raise ValueError(f"{path}: format {manifest['format']!r} version {manifest['version']}, expected "
                         f"{FORMAT!r} version {VERSION}")
    if manifest["text"] not in ("embeddings", "ids"):
        raise ValueError(f"{path}: text is {manifest['text']!r}, expected 'embeddings' or 'ids'")
    if manifest["text"] == "embeddings" and not isinstance(manifest.get("text_dim"), int):
        raise ValueError(f"{path}: text is 'embeddings' but text_dim is {manifest.get('text_dim')!r}")
    if not manifest["shards"]:
        raise ValueError(f"{path}: the dataset has no shards")
    for shard in manifest["shards"]:
        file = paths.join(os.fspath(directory), shard["file"])
        if not paths.isfile(file):
            raise ValueError(f"{path}: shard {shard['file']!r} is listed but {file} does not exist")
    total = sum(int(s["records"]) for s in manifest["shards"])
    if total != manifest["records"]:
        raise ValueError(f"{path}: records is {manifest['records']} but the shards hold {total}")
    if latent_channels is not None and manifest["latent_channels"] != latent_channels:
        raise ValueError(f"{path}: latents have {manifest['latent_channels']} channels but the model's io_channels "
                         f"is {latent_channels}")
    if encoder_config_hash is not None and manifest["encoder_config_hash"] != encoder_config_hash:
        raise ValueError(f"{path}: manifest encoder_config_hash {manifest['encoder_config_hash']} differs from this "
                         f"run's {encoder_config_hash}: the latents were encoded with a different VAE/T5 config")
