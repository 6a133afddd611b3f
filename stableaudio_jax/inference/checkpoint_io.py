"""The pipeline's model checkpoint: parameters of T5, timing, DiT and VAE plus the config that rebuilds them."""
from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stableaudio_jax.data.tokenizer import SPIECE_FILE, T5Tokenizer
from stableaudio_jax.inference.text_encoder import T5TextEncoder
from stableaudio_jax.models.autoencoder import vae_from_config
from stableaudio_jax.models.conditioning import TimingConditioner
from stableaudio_jax.models.dit import dit_from_config
from stableaudio_jax.models.t5 import T5Encoder
from stableaudio_jax.training.checkpoints import load_model_config, restore_params, save_model


def save_pipeline(pipe, directory, overwrite: bool = False) -> str:
    tokenizer = pipe.text.tokenizer
    assets = {SPIECE_FILE: tokenizer.model_file} if tokenizer is not None else {}
    return save_model(directory, jax.device_get(pipe.params), pipe.config, assets, overwrite)


def _abstract(module, *args, **kwargs) -> Any:
    return nn.unbox(jax.eval_shape(lambda *a: module.init(jax.random.key(0), *a, **kwargs), *args))["params"]


def load_pipeline_parts(directory: str | os.PathLike, dtype: Any = jnp.float32) -> dict:
    """Modules rebuilt from the stored config and their restored params, as ``TextToAudioPipeline`` kwargs."""
    config = load_model_config(directory)
    f32 = jnp.float32
    vae = vae_from_config(config.vae, dtype=dtype)
    dit = dit_from_config(config.dit, dtype=dtype)
    t = config.conditioning.timing
    timing = TimingConditioner(features=t.features, min_val=t.min_val, max_val=t.max_val, style=t.style)
    t5 = T5Encoder(**config.text.model, dtype=jnp.dtype(dtype))
    sds = jax.ShapeDtypeStruct
    abstract = {
        "text": {"params": _abstract(t5, sds((1, 2), jnp.int32), sds((1, 2), bool))},
        "timing": {"params": _abstract(timing, sds((1,), f32), sds((1,), f32))},
        "dit": {"params": _abstract(dit, sds((1, 2, dit.io_channels), f32), sds((1,), f32),
                                    sds((1, 3, dit.cond_token_dim), f32), sds((1, dit.global_cond_dim), f32))},
        "vae": {"params": _abstract(vae, sds((1, vae.downsampling_ratio, vae.audio_channels), f32), sample=False)},
    }
    params = restore_params(directory, abstract)
    spiece = os.path.join(os.fspath(directory), SPIECE_FILE)
    tokenizer = T5Tokenizer(spiece, int(config.text.max_length)) if os.path.isfile(spiece) else None
    text = T5TextEncoder(t5, params["text"], tokenizer, int(config.text.max_length), source=os.fspath(directory))
    return dict(text=text, timing=timing, timing_params=params["timing"], dit=dit, dit_params=params["dit"],
                vae=vae, vae_params=params["vae"], config=config)
