"""``train_diffusion(config, workdir, data_dir)``: the denoiser (DiT or U-Net) trained on pre-encoded latents.

Data: ``data_dir`` is a ``stableaudio-jax encode`` output (TFRecord shards + manifest), read per host, or
``"synthetic"`` for correctly shaped random latents (benchmarks). The manifest must fit the model: latent channels
= the denoiser's, text width = its cross-attention token width, and (DiT configs) the VAE that encoded the latents
= ``config.vae``. Its encoder hash is stored in the run's config, so resuming on re-encoded data raises.

Resumable by re-running with the same workdir; metrics to TensorBoard + ``metrics.jsonl``; non-finite loss stops
without saving; demos (wav + PNG) every ``training.demo.every`` steps. At the end a DiT run exports
``<workdir>/model`` (EMA weights + T5 + VAE), which ``stableaudio-jax generate --checkpoint`` reads.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import jax
import ml_collections

from stableaudio_jax.data.audio_folder import CheckpointableIterator
from stableaudio_jax.parallel.distributed import initialize
from stableaudio_jax.parallel.mesh import make_mesh
from stableaudio_jax.training import diffusion_steps
from stableaudio_jax.training.checkpoints import TrainCheckpointer
from stableaudio_jax.training.loop import abstract_with_shardings, resume_or_start, run_loop
from stableaudio_jax.training.metrics import MetricsWriter

logger = logging.getLogger(__name__)
SYNTHETIC = "synthetic"


def _text_width(config) -> int:
    return config.model.cond_token_dim if config.model.type == "dit" else config.model.context_features


def check_data_fits(manifest: dict, config, data_dir: str) -> None:
    """Raises ValueError naming the manifest when its latents or text cannot feed this model."""
    from stableaudio_jax.data.latent_records import config_hash, manifest_path
    path = manifest_path(data_dir)
    if manifest["text"] != "embeddings":
        raise ValueError(f"{path}: text is {manifest['text']!r}; the diffusion trainer reads pre-computed T5 "
                         "embeddings: re-encode with `stableaudio-jax encode --text embeddings`")
    if manifest["text_dim"] != _text_width(config):
        raise ValueError(f"{path}: text embeddings are {manifest['text_dim']} wide but the model's cross-attention "
                         f"tokens are {_text_width(config)} wide")
    if config.model.type == "unet1d" and manifest["text_length"] + 2 > config.model.context_max_length:
        raise ValueError(f"{path}: {manifest['text_length']} text tokens + 2 timing tokens exceed the U-Net's "
                         f"context_max_length {config.model.context_max_length}")
    vae = manifest.get("encoder_config", {}).get("vae")
    if "vae" in config and vae is not None and config_hash(vae) != config_hash(config.vae):
        raise ValueError(f"{path}: the latents were encoded by a VAE config ({vae}) other than this model's "
                         f"config.vae ({config.vae.to_dict()})")


def _data(config, data_dir: str, per_host: int, run_channels: int):
    from stableaudio_jax.data import latent_reader
    from stableaudio_jax.data.latent_records import read_manifest
    t = config.training
    if data_dir == SYNTHETIC:
        text_length = int(t.data.get("synthetic_text_length", 128))
        ds = latent_reader.synthetic_latent_dataset(per_host, t.crop_frames, run_channels, text_length,
                                                    _text_width(config), seed=config.seed)
        return None, CheckpointableIterator(ds)
    manifest = read_manifest(data_dir)
    check_data_fits(manifest, config, data_dir)
    expected = t.data.get("encoder_config_hash") or None  # set by the first run, saved with its checkpoints
    ds = latent_reader.latent_dataset(data_dir, per_host, t.crop_frames, seed=config.seed,
                                      process_index=jax.process_index(), process_count=jax.process_count(),
                                      shuffle_buffer=t.data.shuffle_buffer, on_corrupt=t.data.on_corrupt,
                                      latent_channels=run_channels, encoder_config_hash=expected)
    return manifest, CheckpointableIterator(ds)


def _saved_data_hash(checkpointer: TrainCheckpointer) -> str | None:
    if checkpointer.latest_step() is None:
        return None
    return checkpointer.saved_config().get("training", {}).get("data", {}).get("encoder_config_hash") or None


def train_diffusion(config: ml_collections.ConfigDict, workdir: str, data_dir: str, progress: bool = False,
                    max_steps: int | None = None) -> dict[str, Any]:
    """Trains until ``config.training.steps`` (or ``max_steps`` more steps); returns the last logged metrics."""
    initialize(config.get("distributed"))
    config = ml_collections.ConfigDict(config.to_dict())  # a private copy: the data hash is recorded in it
    t = config.training
    if t.batch_size % jax.process_count():
        raise ValueError(f"training.batch_size {t.batch_size} is not divisible by {jax.process_count()} processes")
    mesh = make_mesh(config.mesh)
    checkpointer = TrainCheckpointer(workdir, keep=t.keep_checkpoints)
    saved_hash = _saved_data_hash(checkpointer)
    if saved_hash:
        t.data.encoder_config_hash = saved_hash
    channels = diffusion_steps.denoiser_from_config(config)
    channels = channels.io_channels if config.model.type == "dit" else channels.in_channels
    manifest, data = _data(config, data_dir, t.batch_size // jax.process_count(), channels)
    if manifest is not None:
        t.data.encoder_config_hash = manifest["encoder_config_hash"]
    text_length = manifest["text_length"] if manifest else int(t.data.get("synthetic_text_length", 128))
    compiled = diffusion_steps.compiled(config, mesh, text_length, _text_width(config))
    state, data_state, _ = resume_or_start(
        checkpointer, abstract_with_shardings(compiled.abstract, compiled.shardings),
        lambda: compiled.init(jax.random.key(config.seed)), config, workdir)
    data.restore(data_state)
    writer = MetricsWriter(workdir)
    start = int(state.step)
    end = t.steps if max_steps is None else min(t.steps, start + max_steps)
    demos = _demos(compiled.run, config, manifest, workdir)
    after = None if demos is None else (lambda done, s: demos(done, s) if done % t.demo.every == 0 else None)
    ratio = manifest["downsampling_ratio"] / manifest["sample_rate"] if manifest else 2048 / 44100
    try:
        state, last = run_loop(state, lambda step, s, batch: compiled.step(s, _model_batch(batch)), data,
                               diffusion_steps.batch_sharding(mesh), start=start, end=end,
                               checkpointer=checkpointer, writer=writer, config=config, desc="train",
                               progress=progress, after_step=after,
                               audio_seconds_per_step=t.batch_size * t.crop_frames * ratio)
        checkpointer.wait()
        if manifest is not None and config.model.type == "dit" and int(state.step) == t.steps:
            if all(_sources(config, manifest)):
                export_pipeline(compiled.run, state, config, manifest, os.path.join(workdir, "model"))
            else:
                logger.info("no VAE / text encoder recorded for this data (training.demo.vae / text_encoder): "
                            "the model is not exported")
    finally:
        checkpointer.close()
        writer.close()
    return last


def _model_batch(batch: dict) -> dict:
    return {k: batch[k] for k in diffusion_steps.BATCH_KEYS}


def _sources(config, manifest: dict) -> tuple[str, str]:
    d, sources = config.training.demo, (manifest or {}).get("sources", {})
    return d.vae or sources.get("vae", ""), d.text_encoder or sources.get("text_encoder", "")


def _demos(run, config, manifest, workdir: str):
    if not config.training.demo.every or jax.process_index() != 0:
        return None
    vae_path, text_path = _sources(config, manifest)
    if not vae_path or not text_path:
        raise ValueError("training.demo.every is set but no VAE / text encoder is known: set training.demo.vae and "
                         "training.demo.text_encoder (or train on `stableaudio-jax encode` output, which records them)")
    from stableaudio_jax.inference.components import load_text_encoder, load_vae
    from stableaudio_jax.training.demos import DemoWriter
    text = load_text_encoder(text_path, max_length=manifest["text_length"] if manifest else 128)
    return DemoWriter(run, load_vae(vae_path), text, config, workdir)


def export_pipeline(run, state, config, manifest: dict, directory: str) -> str:
    """A model checkpoint of the trained DiT (EMA weights) with the run's T5 and VAE, for ``generate``."""
    from stableaudio_jax.inference.components import load_text_encoder, load_vae, t5_model_config
    from stableaudio_jax.inference.pipeline import DEFAULT_SAMPLING, TextToAudioPipeline
    vae_path, text_path = _sources(config, manifest)
    vae, text = load_vae(vae_path), load_text_encoder(text_path, max_length=manifest["text_length"])
    pipe_config = ml_collections.ConfigDict({
        "dit": config.model.to_dict(), "vae": vae.config.to_dict(), "conditioning": config.conditioning.to_dict(),
        "diffusion": config.diffusion.to_dict(),
        "text": {"model": t5_model_config(text), "max_length": text.max_length},
        "audio": {"sample_rate": manifest["sample_rate"], "channels": int(vae.module.audio_channels),
                  "sample_size": config.training.crop_frames * manifest["downsampling_ratio"]},
        "sampling": dict(DEFAULT_SAMPLING)})
    params = jax.device_get(state)
    pipe = TextToAudioPipeline(text=text, timing=run.timing, timing_params=params.params["timing"], dit=run.denoiser,
                               dit_params=params.ema, vae=vae.module, vae_params=vae.params, config=pipe_config)
    path = pipe.save(directory, overwrite=True)
    logger.info("exported the trained model to %s (stableaudio-jax generate --checkpoint %s)", path, path)
    return path
