"""Load one component (the VAE or the text encoder) from whatever a user has on disk.

The pre-encoder and the diffusion trainer's demos need the VAE and T5 on their own, from any of:

  VAE            a ``train-vae`` workdir (the latest checkpoint's EMA weights, as stable-audio-tools exports),
                 or a model checkpoint (``stableaudio-jax convert`` / ``TextToAudioPipeline.save``)
  text encoder   a Hugging Face T5 directory (config.json, weights, spiece.model), or a model checkpoint

Every path is recorded as given (absolute) in the pre-encoded dataset's manifest, so training finds them again.
"""
from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from stableaudio_jax.inference.text_encoder import T5TextEncoder, t5_model_config  # noqa: F401 (re-exported)
from stableaudio_jax.models.autoencoder import OobleckVAE, vae_from_config
from stableaudio_jax.training.checkpoints import METADATA_FILE, CheckpointError


class LoadedVAE(NamedTuple):
    module: OobleckVAE
    params: Any
    config: ml_collections.ConfigDict  # the VAE's model section (configs/vae.py ``model``)
    source: str


def _is_model_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, METADATA_FILE))


def _is_train_workdir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "checkpoints")) and os.path.isfile(os.path.join(path, "config.json"))


def load_vae(path: str | os.PathLike, dtype: Any = jnp.float32) -> LoadedVAE:
    path = os.path.abspath(os.fspath(path))
    if _is_model_checkpoint(path):
        from stableaudio_jax.inference.checkpoint_io import load_pipeline_parts
        parts = load_pipeline_parts(path, dtype)
        return LoadedVAE(parts["vae"], parts["vae_params"], parts["config"].vae, path)
    if _is_train_workdir(path):
        return _vae_from_workdir(path, dtype)
    raise FileNotFoundError(f"VAE {path!r}: expected a `stableaudio-jax train-vae` workdir (checkpoints/ + "
                            f"config.json) or a model checkpoint ({METADATA_FILE})")


def _vae_from_workdir(path: str, dtype: Any) -> LoadedVAE:
    from stableaudio_jax.training import vae_steps
    from stableaudio_jax.training.checkpoints import TrainCheckpointer
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    if config.get("model", {}).get("type") != "oobleck_vae":
        raise CheckpointError(f"{path}/config.json: model.type {config.get('model', {}).get('type')!r}; expected "
                              "'oobleck_vae' (a train-vae workdir)")
    run = vae_steps.build(config)
    abstract = vae_steps.abstract_state(run, config.training.crop_samples, config.model.audio_channels)
    checkpointer = TrainCheckpointer(path, async_save=False)
    try:
        if checkpointer.latest_step() is None:
            raise CheckpointError(f"{path}/checkpoints: no checkpoint yet; train the VAE first")
        state, _, _ = checkpointer.restore(abstract)
    finally:
        checkpointer.close()
    vae = vae_from_config(config.model, dtype=dtype, param_dtype=config.param_dtype)
    return LoadedVAE(vae, jax.device_get(state.ema_params), config.model, path)


def load_text_encoder(path: str | os.PathLike, max_length: int = 128, dtype: Any = jnp.float32) -> T5TextEncoder:
    path = os.path.abspath(os.fspath(path))
    if _is_model_checkpoint(path):
        from stableaudio_jax.inference.checkpoint_io import load_pipeline_parts
        text = load_pipeline_parts(path, dtype)["text"]
        if text.tokenizer is None:
            raise FileNotFoundError(f"{path}: the model checkpoint has no spiece.model; cannot tokenize prompts")
        return text
    if os.path.isfile(os.path.join(path, "config.json")):
        from stableaudio_jax.convert import load_hf_t5
        return load_hf_t5(path, max_length=max_length, dtype=dtype)
    raise FileNotFoundError(f"text encoder {path!r}: expected a Hugging Face T5 directory (config.json, weights, "
                            f"spiece.model) or a model checkpoint ({METADATA_FILE})")
