"""Pre-encoding: an ingested audio dataset → sharded TFRecord files of VAE latents + T5 text + timing.

Every file is cut into fixed windows of ``window_frames`` latent frames (the last one zero-padded, its padding
recorded); each window becomes one record (see ``latent_records``) with the exact window start and file duration,
so crops taken at training time can condition on correct timing. Windows go through the VAE encoder (posterior
mean, or a sample with ``sample_posterior``) and the caption through T5 in fixed-size batches, sharded over this
host's devices.

Hosts take disjoint items (``items[process_index::process_count]``) and each writes ``shards_per_host`` files,
dealing its items round-robin so shard sizes stay close. Hosts never wait on each other while encoding: their
batches run on their local devices only, so an uneven split cannot deadlock a collective.

Resumable: a shard is written to ``<name>.partial`` and renamed when complete, with ``<name>.done.json`` beside it
(record count). A re-run skips complete shards and redoes partial ones from their first item, so a crash neither
duplicates nor loses records. ``manifest.json`` is written last, by process 0, once every shard is complete.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stableaudio_jax import paths
from stableaudio_jax.data.latent_records import (FORMAT, VERSION, LatentRecord, config_hash, read_manifest,
                                                 write_manifest)
from stableaudio_jax.data.tfrecord import TFRecordWriter

logger = logging.getLogger(__name__)
SETTINGS_FILE = "encode_settings.json"
PROVENANCE_FILE = "provenance.jsonl"


def encoder_config(vae, text, *, window_frames: int, sample_posterior: bool, text_form: str,
                   latent_dtype: str, text_dtype: str) -> dict:
    """What determines the records' content, hashed into the manifest: the VAE's and the text encoder's configs
    *and weights* (content hashes), so a resume or a training run cannot mix two encodings of the same shape.
    Where the models were loaded from (sources) is kept apart, unhashed."""
    return {"vae": vae.config.to_dict(), "vae_sha256": vae.sha256, "window_frames": int(window_frames),
            "sample_posterior": bool(sample_posterior), "latent_dtype": latent_dtype,
            "text": {"form": text_form, "model": text.config["model"], "max_length": int(text.max_length),
                     "sha256": text.sha256, "dtype": text_dtype if text_form == "embeddings" else "int64",
                     # T5 manifests keep their earlier hash; other encoders say what they are and how they were read
                     **({} if text.config.get("type", "t5") == "t5" else
                        {k: text.config[k] for k in ("type", "layer", "output") if k in text.config})}}


def shard_name(host: int, shard: int, hosts: int, per_host: int) -> str:
    index = host * per_host + shard
    return f"latents-{index:05d}-of-{hosts * per_host:05d}.tfrecord"


def windows(audio: np.ndarray, window_samples: int, ratio: int) -> Iterator[tuple[int, np.ndarray, int]]:
    """(window index, zero-padded window [window_samples, C], valid latent frames) covering the whole file."""
    count = max(1, math.ceil(audio.shape[0] / window_samples))
    for w in range(count):
        chunk = audio[w * window_samples:(w + 1) * window_samples]
        valid = math.ceil(chunk.shape[0] / ratio)
        yield w, np.pad(chunk, ((0, window_samples - chunk.shape[0]), (0, 0))), valid


class _Encoder:
    """Fixed-size, device-sharded VAE and T5 calls (one compile each)."""

    def __init__(self, vae, text, batch_size: int, sample_posterior: bool, seed: int):
        devices = jax.local_devices()
        if batch_size % len(devices):
            raise ValueError(f"encode: batch_size {batch_size} is not divisible by this host's {len(devices)} "
                             "devices")
        mesh = Mesh(np.array(devices), ("data",))
        self.batch, self.replicated = NamedSharding(mesh, PartitionSpec("data")), NamedSharding(mesh, PartitionSpec())
        self.vae_params = jax.device_put(vae.params, self.replicated)
        self.text_params = jax.device_put(text.params, self.replicated)
        self.vae, self.sample_posterior = vae.module, sample_posterior
        self.key = jax.random.key(seed)
        self._latents = jax.jit(self._encode_audio, out_shardings=self.batch)
        # the text encoder's own features: T5's masked hidden states, CLAP's layer features or pooled embedding
        self._embed = jax.jit(text._features, out_shardings=self.batch)

    def _encode_audio(self, params, audio, key):
        return self.vae.apply(params, audio, self.sample_posterior, key, method=type(self.vae).encode).astype(
            jnp.float32)

    def latents(self, audio: np.ndarray, shard: int, batch_index: int) -> np.ndarray:
        # a posterior sample depends on (shard, batch), not on the run's history: a resumed encode draws the same
        key = jax.random.fold_in(jax.random.fold_in(self.key, shard), batch_index)
        return np.asarray(self._latents(self.vae_params, jax.device_put(audio, self.batch), key))

    def embeddings(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.asarray(self._embed(self.text_params, jax.device_put(ids, self.batch),
                                      jax.device_put(mask, self.batch)))


def _check_settings(output_dir: str, settings: dict) -> None:
    """A re-run must encode exactly as the interrupted run did, or complete shards would mix two encodings."""
    path = paths.join(output_dir, SETTINGS_FILE)
    if paths.isfile(path):
        previous = paths.read_json(path)
        if previous != settings:
            changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != settings.get(k))
            raise ValueError(f"{output_dir} holds a partial encode with other settings ({', '.join(changed)} "
                             f"differ; see {path}); use a new --out or the same settings")
    elif jax.process_index() == 0:
        paths.write_json_atomic(path, settings, indent=1, sort_keys=True)


def _write_shard(path: str, items: list[int], dataset, enc: _Encoder, text, *, window_frames: int, ratio: int,
                 batch_size: int, text_form: str, latent_dtype: str, text_dtype: str, shard_index: int) -> int:
    """Encodes ``items`` into ``path`` (via ``.partial``); returns the number of records."""
    window_samples = window_frames * ratio
    pending: list[tuple[dict, np.ndarray, int]] = []  # (item, window audio, valid frames) waiting for a batch
    count, batch_index = 0, 0
    # an object appears only when its upload completes, so a bucket shard is written in place
    partial = path if paths.is_url(path) else path + ".partial"
    with TFRecordWriter(partial) as writer:
        def flush():
            nonlocal count, batch_index
            records = _encode_batch(pending, enc, text, batch_size, text_form, latent_dtype, text_dtype,
                                    (shard_index, batch_index), window_samples, ratio)
            for record in records:
                writer.write(record.to_bytes())
            count, batch_index = count + len(records), batch_index + 1
            pending.clear()

        for index in items:
            item = dataset[index]
            for w, audio, valid in windows(item["audio"], window_samples, ratio):
                pending.append((dict(item, window=w), audio, valid))
                if len(pending) == batch_size:
                    flush()
        if pending:
            flush()
    if partial != path:
        paths.replace(partial, path)
    paths.write_json_atomic(path + ".done.json", {"records": count, "items": len(items)})
    return count


def _encode_batch(pending, enc: _Encoder, text, batch_size: int, text_form: str, latent_dtype: str,
                  text_dtype: str, batch_key: tuple[int, int], window_samples: int, ratio: int) -> list[LatentRecord]:
    n = len(pending)
    audio = np.zeros((batch_size, window_samples, pending[0][1].shape[1]), np.float32)
    audio[:n] = np.stack([a for _, a, _ in pending])
    latents = enc.latents(audio, *batch_key)[:n]
    captions = [item["caption"] for item, _, _ in pending] + [""] * (batch_size - n)
    ids, mask = text.tokenize(captions)
    embeddings = enc.embeddings(ids, mask)[:n] if text_form == "embeddings" else None
    mask = text.output_mask(mask) if text_form == "embeddings" else mask
    records = []
    for i, (item, _, valid) in enumerate(pending):
        rate = item["sample_rate"]
        form = (dict(text_embeddings=embeddings[i].astype(_np_dtype(text_dtype))) if embeddings is not None
                else dict(text_ids=np.asarray(ids[i], np.int64)))
        records.append(LatentRecord(
            latents=latents[i].astype(_np_dtype(latent_dtype)), latent_length=int(valid),
            seconds_start=item["window"] * window_samples / rate, seconds_total=item["audio"].shape[0] / rate,
            text_mask=np.asarray(mask[i], bool), caption=item["caption"], source_id=item["source_path"],
            window_index=int(item["window"]), **form))
    return records


def _np_dtype(name: str):
    import ml_dtypes
    return {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[name]


def encode_dataset(audio_dir: str, output_dir: str, vae, text, *, window_frames: int, batch_size: int = 8,
                   sample_posterior: bool = False, text_form: str = "embeddings", latent_dtype: str = "float32",
                   text_dtype: str = "float16", shards_per_host: int = 4, seed: int = 0,
                   progress: bool = False, text_source: str = "") -> dict[str, Any]:
    """Encodes this host's share of ``audio_dir`` (an ingested dataset) into ``output_dir``; process 0 writes the
    manifest when every shard of every host is complete. Returns the manifest (on process 0; others: {})."""
    from stableaudio_jax.data.ingest import load_audio_dataset
    if text_form not in ("embeddings", "ids"):
        raise ValueError(f"encode: text form {text_form!r}; expected 'embeddings' or 'ids'")
    if text_form == "ids" and text.config.get("type", "t5") != "t5":
        raise ValueError(f"encode: --text-form ids stores token ids for a T5 run inside training; the text encoder "
                         f"{text.source} is {text.config.get('type')!r}: store its embeddings instead")
    if shards_per_host < 1 or window_frames < 1:
        raise ValueError(f"encode: shards_per_host={shards_per_host} and window_frames={window_frames} must be >= 1")
    dataset = load_audio_dataset(audio_dir)
    _check_audio(dataset, vae, audio_dir)
    if len(dataset) == 0:
        raise ValueError(f"encode: the audio dataset {audio_dir!r} is empty")
    cfg = encoder_config(vae, text, window_frames=window_frames, sample_posterior=sample_posterior,
                         text_form=text_form, latent_dtype=latent_dtype, text_dtype=text_dtype)
    host, hosts = jax.process_index(), jax.process_count()
    output_dir = paths.absolute(output_dir)
    paths.makedirs(output_dir)
    _check_settings(output_dir, {"encoder_config_hash": config_hash(cfg), "hosts": hosts, "seed": seed,
                                 "shards_per_host": shards_per_host, "items": len(dataset), "batch_size": batch_size})
    enc = _Encoder(vae, text, batch_size, sample_posterior, seed)
    mine = list(range(host, len(dataset), hosts))
    bar = _progress(progress, len(mine))
    for shard in range(shards_per_host):
        items = mine[shard::shards_per_host]
        path = paths.join(output_dir, shard_name(host, shard, hosts, shards_per_host))
        if not paths.isfile(path + ".done.json"):
            count = _write_shard(path, items, dataset, enc, text, window_frames=window_frames,
                                 ratio=vae.module.downsampling_ratio, batch_size=batch_size, text_form=text_form,
                                 latent_dtype=latent_dtype, text_dtype=text_dtype,
                                 shard_index=host * shards_per_host + shard)
            logger.info("wrote %s: %d records from %d files", path, count, len(items))
        if bar is not None:
            bar.update(len(items))
    if bar is not None:
        bar.close()
    if hosts > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices("stableaudio_jax.encode: shards written")
    if host != 0:
        return {}
    return _finish(output_dir, cfg, vae, text, hosts, shards_per_host, audio_dir, text_source)


def _check_audio(dataset, vae, audio_dir: str) -> None:
    rate, channels = vae.module.sample_rate, vae.module.audio_channels
    if dataset.sample_rate != rate or dataset.channels != channels:
        raise ValueError(f"encode: {audio_dir!r} holds {dataset.sample_rate} Hz / {dataset.channels}-channel audio "
                         f"but the VAE ({vae.source}) expects {rate} Hz / {channels} channels; re-run "
                         f"`stableaudio-jax ingest --sample-rate {rate} --channels {channels}`")


def _finish(output_dir: str, cfg: dict, vae, text, hosts: int, per_host: int, audio_dir: str,
            text_source: str) -> dict:
    shards = []
    for host in range(hosts):
        for shard in range(per_host):
            name = shard_name(host, shard, hosts, per_host)
            done = paths.join(output_dir, name + ".done.json")
            if not paths.isfile(done):
                raise RuntimeError(f"encode: shard {name} of host {host} is not complete; re-run the same command")
            shards.append({"file": name, "records": int(paths.read_json(done)["records"])})
    shards = [s for s in shards if s["records"] > 0] or shards[:1]
    licenses = _write_provenance(output_dir, audio_dir)
    manifest = {"format": FORMAT, "version": VERSION, "encoder_config_hash": config_hash(cfg),
                "latent_channels": int(vae.module.latent_dim), "latent_frames": cfg["window_frames"],
                "sample_rate": int(vae.module.sample_rate), "downsampling_ratio": int(vae.module.downsampling_ratio),
                "text": cfg["text"]["form"], "text_length": int(text.output_length),
                "text_dim": int(text.d_model) if cfg["text"]["form"] == "embeddings" else None,
                "shards": shards, "records": sum(s["records"] for s in shards), "encoder_config": cfg,
                "sources": {"audio": paths.absolute(audio_dir), "vae": vae.source,
                            "text_encoder": text_source},
                "data": {"licenses": licenses, "provenance": PROVENANCE_FILE}}
    write_manifest(output_dir, manifest)
    return read_manifest(output_dir)


def _write_provenance(output_dir: str, audio_dir: str) -> dict[str, int]:
    """``provenance.jsonl`` (every encoded file: path, id, caption, source, licence, from the ingested dataset);
    returns the count per licence for the manifest."""
    from stableaudio_jax.data.ingest import load_audio_dataset
    items = load_audio_dataset(audio_dir).items()
    keys = ("source_path", "id", "caption", "source", "license")
    with paths.open(paths.join(output_dir, PROVENANCE_FILE), "w", encoding="utf-8") as f:
        f.writelines(json.dumps({k: item.get(k, "") for k in keys}, sort_keys=True) + "\n" for item in items)
    licenses: dict[str, int] = {}
    for item in items:
        name = item.get("license") or "(none given)"
        licenses[name] = licenses.get(name, 0) + 1
    return dict(sorted(licenses.items()))


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc="encode", unit="file")
