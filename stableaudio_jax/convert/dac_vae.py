"""Stable Audio 1.0's DAC-based VAE: stable-audio-tools checkpoints → :class:`stableaudio_jax.models.dac_vae.DACVAE`.

  ours                                       stable-audio-tools (``pretransform.model.`` prefix in a full model)
  encoder/dac/conv_in                        encoder.encoder.block.0
  encoder/dac/blocks_i/res_j/{act,conv}_k    encoder.encoder.block.{i+1}.block.j.block.{0,1,2,3}
  encoder/dac/blocks_i/act | conv            encoder.encoder.block.{i+1}.block.3 | .block.4
  encoder/dac/act_out | conv_out             encoder.encoder.block.{n+1} | .block.{n+2}
  encoder/proj_out_kernel | _bias            encoder.proj_out.weight | .bias          (plain conv, no weight norm)
  decoder/conv_in                            decoder.decoder.model.0
  decoder/blocks_i/act | conv_t              decoder.decoder.model.{i+1}.block.0 | .block.1
  decoder/blocks_i/res_j/...                 decoder.decoder.model.{i+1}.block.{j+2}.block.{0,1,2,3}
  decoder/act_out | conv_out                 decoder.decoder.model.{n+1} | .model.{n+2}

Layouts as for the Oobleck VAE (``convert/vae.py``); DAC's Snake ``alpha [1, C, 1]`` → ``[C]``.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stableaudio_jax.convert.state_dict import Path, fill_params, strip_prefix
from stableaudio_jax.convert.vae import _RES_SAT, normalize_weight_norm_names, torch_to_ours
from stableaudio_jax.models.dac_vae import DACVAE, dac_vae_from_config

PROJ_OUT = ("encoder.proj_out.weight", "encoder.proj_out.bias")


def _index(name: str) -> int:
    return int(name.split("_")[1])


def dac_key(path: Path, encoder_blocks: int, decoder_blocks: int) -> str:
    """stable-audio-tools name (without ``pretransform.model.``) of one of our DAC VAE parameters."""
    if path[:2] == ("encoder", "proj_out_kernel"):
        return PROJ_OUT[0]
    if path[:2] == ("encoder", "proj_out_bias"):
        return PROJ_OUT[1]
    encoder = path[0] == "encoder"
    module, *rest = path[2:] if encoder else path[1:]
    leaf = rest.pop()
    base, blocks = ("encoder.encoder.block", encoder_blocks) if encoder else ("decoder.decoder.model", decoder_blocks)
    if module.startswith("blocks_"):
        parts = [base, str(_index(module) + 1), "block"]
        sub = rest[0]
        if sub.startswith("res_"):
            parts += [str(_index(sub) + (0 if encoder else 2)), "block", _RES_SAT[rest[1]]]
        else:
            parts.append({"act": "3", "conv": "4"}[sub] if encoder else {"act": "0", "conv_t": "1"}[sub])
    else:
        parts = [base, str({"conv_in": 0, "act_out": blocks + 1, "conv_out": blocks + 2}[module])]
    return ".".join(parts + [leaf])


def _transform(path: Path, value: np.ndarray) -> np.ndarray:
    if path[-1] == "proj_out_kernel":
        return value.transpose(2, 1, 0)  # [out, in, 1] → [1, in, out]
    return torch_to_ours(path, value)


def dac_vae_config_from_stable_audio_tools(model_config: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Our ``model`` section from stable-audio-tools' autoencoder config (``model`` of
    ``stable_audio_1_0_vae.json``, or ``model.pretransform.config`` of a diffusion model's config)."""
    encoder = model_config["encoder"]
    decoder = model_config["decoder"]
    if encoder.get("type") != "dac" or decoder.get("type") != "dac":
        raise ValueError(f"encoder/decoder types {encoder.get('type')!r}/{decoder.get('type')!r}; expected 'dac' "
                         "(Stable Audio 1.0's VAE)")
    if model_config.get("bottleneck", {}).get("type") != "vae":
        raise ValueError(f"bottleneck {model_config.get('bottleneck')!r}; expected a 'vae' bottleneck")
    enc, dec = encoder["config"], decoder["config"]
    return ml_collections.ConfigDict(dict(
        type="dac_vae", sample_rate=int(model_config.get("sample_rate", 44100)),
        audio_channels=int(model_config.get("io_channels", enc.get("in_channels", 2))),
        channels=int(enc["d_model"]), strides=[int(s) for s in enc["strides"]],
        latent_dim=int(model_config["latent_dim"]), decoder_channels=int(dec["channels"]),
        decoder_rates=[int(r) for r in dec["rates"]]))


def dac_vae_params_from_state_dict(state: Mapping[str, np.ndarray], vae: DACVAE,
                                   source: str = "state dict") -> dict:
    """``{'params': ...}`` for ``vae`` from a stable-audio-tools state dict (a full diffusion checkpoint's
    ``pretransform.model.*`` or an autoencoder's own keys)."""
    prefixed = strip_prefix(state, "pretransform.model.")
    state = prefixed if prefixed else dict(state)
    plain = {k: state.pop(k) for k in PROJ_OUT if k in state}  # a plain conv: not split into (g, v)
    state = {**normalize_weight_norm_names(state), **plain}
    audio = jax.ShapeDtypeStruct((1, vae.downsampling_ratio, vae.audio_channels), jnp.float32)
    abstract = jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False), audio)["params"]
    key_for = lambda path: dac_key(path, len(vae.strides), len(vae.decoder_rates))  # noqa: E731
    return {"params": fill_params(state, abstract, key_for, _transform, source)}


def load_dac_vae_stable_audio_tools(state: Mapping[str, np.ndarray], model_config: Mapping[str, Any],
                                    dtype: Any = jnp.float32, source: str = "state dict"
                                    ) -> tuple[DACVAE, dict, ml_collections.ConfigDict]:
    """(module, params, our config) of Stable Audio 1.0's VAE from a state dict and its autoencoder config."""
    config = dac_vae_config_from_stable_audio_tools(model_config)
    vae = dac_vae_from_config(config, dtype=dtype)
    return vae, dac_vae_params_from_state_dict(state, vae, source), config
