"""Stable Audio 3 checkpoints (``model_config.json`` + ``model.safetensors``: Small-Music, Small-SFX, Medium and
their "-base" models; the standalone SAME-S / SAME-L repositories) → stored models (``store.sa3``).

An SA3 checkpoint holds the DiT (``model.model.*``), the conditioner's learned tensors
(``conditioner.conditioners.*``) and the SAME autoencoder (``pretransform.model.*``); T5Gemma is a separate
Hugging Face directory (``config.json``, weights, ``tokenizer.json``), given with ``--text-encoder``. Every option
the configs may set is read; one this port does not implement (patches, prepend or concatenated conditioning,
LayerNorm blocks, learned timestep features, ...) is an error that names it, never silently dropped.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax.numpy as jnp
import ml_collections

from stableaudio_jax.convert.same import same_params_from_state_dict
from stableaudio_jax.convert.sa3_dit import sa3_conditioner_params_from_state_dict, sa3_dit_params_from_state_dict
from stableaudio_jax.convert.state_dict import load_json, read_state_dict
from stableaudio_jax.convert.t5gemma import load_hf_t5gemma
from stableaudio_jax.models.same import same_from_config
from stableaudio_jax.store.hf_tokenizer import HFTokenizer
from stableaudio_jax.store.models import VAE, save_vae
from stableaudio_jax.store.sa3 import SA3Model, denoiser_from_config, save_sa3
from stableaudio_jax.store.t5gemma_text import T5GemmaText

PARTS = ("model.model.", "conditioner.conditioners.", "pretransform.model.")  # the checkpoint's three parts
GENERATE_SAMPLE_SIZE = 5292032  # the reference's generate() default: 1292 latents, ~120 s with the padding
# option: the only value this port implements (the reference's default where the config leaves it out)
DIT_FIXED = {"patch_size": 1, "global_cond_type": "adaLN", "timestep_features_type": "expo",
             "timestep_cond_type": "global", "transformer_type": "continuous_transformer", "norm_type": "rms_norm",
             "project_cond_tokens": True, "input_concat_dim": 0, "prepend_cond_dim": 0}
DIT_DEFAULTS = {"global_cond_type": "prepend", "timestep_features_type": "learned", "norm_type": "layer_norm",
                "patch_size": 1, "timestep_cond_type": "global", "transformer_type": "continuous_transformer",
                "project_cond_tokens": True, "input_concat_dim": 0, "prepend_cond_dim": 0}


class UnsupportedConfigError(ValueError):
    """An SA3 config option this port does not implement."""


def _require(found: dict, fixed: dict, defaults: dict, where: str) -> None:
    wrong = {k: found.get(k, defaults.get(k)) for k, v in fixed.items() if found.get(k, defaults.get(k)) != v}
    if wrong:
        raise UnsupportedConfigError(f"{where}: options {wrong} are not implemented; this port runs {fixed}")


def dit_config(diffusion: Mapping, source: str) -> dict:
    """Our SA3DiT config from the reference's ``model.diffusion`` section."""
    cfg = dict(diffusion.get("config") or {})
    where = f"{source}: model.diffusion.config"
    _require(cfg, DIT_FIXED, DIT_DEFAULTS, where)
    attn, ff, norm = cfg.get("attn_kwargs") or {}, cfg.get("ff_kwargs") or {}, cfg.get("norm_kwargs") or {}
    if attn.get("qk_norm", "none") != "rms" or attn.get("feat_scale") or ff.get("glu", True) is not True:
        raise UnsupportedConfigError(f"{where}: attn_kwargs {attn} / ff_kwargs {ff}: this port runs RMS q/k norms "
                                     "and GLU feed-forwards (the published models' options)")
    for key in ("conformer", "use_sinusoidal_emb", "use_abs_pos_emb", "cross_attn_rotary_pos_emb", "sliding_window",
                "modular_local_cond_configs"):
        if cfg.get(key):
            raise UnsupportedConfigError(f"{where}: {key}={cfg[key]!r} is not implemented")
    return dict(type="sa3_dit", io_channels=int(cfg["io_channels"]), embed_dim=int(cfg["embed_dim"]),
                depth=int(cfg["depth"]), num_heads=int(cfg["num_heads"]),
                cond_token_dim=int(cfg["cond_token_dim"]), global_cond_dim=int(cfg["global_cond_dim"]),
                local_cond_dim=int(cfg.get("local_add_cond_dim") or 0),
                num_memory_tokens=int(cfg.get("num_memory_tokens", 0)),
                timestep_features_dim=int(cfg.get("timestep_features_dim", 256)),
                timestep_features_logsnr=bool(cfg.get("timestep_features_logsnr", False)),
                ff_mult=int(ff.get("mult", 4)), differential=bool(attn.get("differential", False)),
                norm_eps=float(norm.get("eps", 1e-5)), qk_norm_eps=float(attn.get("qk_norm_eps", 1e-6)),
                scan_layers=True)


def same_config(autoencoder: Mapping, sample_rate: int, source: str) -> dict:
    """Our SAME config from the reference's autoencoder section (``model.pretransform.config``, or a standalone
    SAME repository's ``model``)."""
    enc, dec = autoencoder["encoder"]["config"], autoencoder["decoder"]["config"]
    where = f"{source}: the autoencoder"
    if len(enc.get("c_mults", [])) != 1 or len(dec.get("c_mults", [])) != 1:
        raise UnsupportedConfigError(f"{where}: c_mults {enc.get('c_mults')} / {dec.get('c_mults')}: this port "
                                     "runs SAME's single resampling block per side")
    window = enc.get("sliding_window")
    return dict(type="same", sample_rate=int(sample_rate),
                audio_channels=int(autoencoder["pretransform"]["config"]["channels"]),
                patch_size=int(autoencoder["pretransform"]["config"]["patch_size"]),
                width=int(enc["channels"]) * int(enc["c_mults"][0]), latent_dim=int(autoencoder["latent_dim"]),
                stride=int(enc["strides"][0]), encoder_depth=int(enc["transformer_depths"][0]),
                decoder_depth=int(dec["transformer_depths"][0]), head_dim=int(enc.get("dim_heads", 64)),
                chunk_size=int(enc.get("chunk_size", 32)), midpoint_shift=bool(enc.get("chunk_midpoint_shift", False)),
                sliding_window=None if not window else int(window[0]),
                decoder_sinusoidal_blocks=int((dec.get("sinusoidal_blocks") or [0])[0]),
                decoder_mask_noise=float(dec.get("mask_noise", 0.0)),
                encoder_conv_mapping=bool(enc.get("conv_mapping", False)),
                decoder_conv_mapping=bool(dec.get("conv_mapping", False)))


def conditioning_config(conditioning: Mapping, source: str) -> dict:
    parts = {c["id"]: c for c in conditioning.get("configs", [])}
    prompt, seconds = parts.get("prompt"), parts.get("seconds_total")
    if not prompt or prompt.get("type") != "t5gemma" or not seconds or seconds.get("type") != "number":
        raise UnsupportedConfigError(f"{source}: model.conditioning lists {sorted(parts)}; expected a t5gemma "
                                     "'prompt' and a number 'seconds_total' (the published SA3 models)")
    number = seconds.get("config", {})
    if float(number.get("min_val", 0)) != 0 or number.get("fourier_features_type", "learned") != "expo":
        raise UnsupportedConfigError(f"{source}: seconds_total {number}: this port runs expo features from 0")
    return dict(text_encoder="t5gemma", max_length=int(prompt.get("config", {}).get("max_length", 128)),
                text_dim=int(conditioning["cond_dim"]), seconds_max=float(number.get("max_val", 1)),
                seconds_features=256)


def generation_config(config: Mapping, objective: str, downsampling_ratio: int) -> dict:
    sample_size = min(int(config.get("sample_size") or GENERATE_SAMPLE_SIZE), GENERATE_SAMPLE_SIZE)
    return dict(sample_rate=int(config["sample_rate"]), duration_padding_seconds=6.0, frame_multiple=2,
                max_frames=sample_size // downsampling_ratio, steps=8, cfg_scale=1.0, apg_scale=1.0,
                sampler="pingpong" if objective == "rf_denoiser" else "euler")


def load_sa3_checkpoint(directory: str | os.PathLike, text_encoder: str | os.PathLike,
                        dtype: Any = jnp.float32) -> SA3Model:
    """An SA3 checkpoint directory (``model_config.json`` + ``model.safetensors``) and T5Gemma's directory."""
    directory = os.fspath(directory)
    config_path = os.path.join(directory, "model_config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{directory}: no model_config.json; expected a Stable Audio 3 checkpoint directory")
    config = load_json(config_path, "SA3 model config")
    if config.get("model_type") != "diffusion_cond":
        raise UnsupportedConfigError(f"{config_path}: model_type {config.get('model_type')!r}; expected "
                                     "'diffusion_cond' (a SAME repository converts with --from same)")
    model, weights = config["model"], os.path.join(directory, "model.safetensors")
    state = read_state_dict(weights)
    stray = sorted(k for k in state if not k.startswith(PARTS))
    if stray:
        raise UnsupportedConfigError(f"{weights}: {len(stray)} tensors outside the DiT, conditioner and autoencoder "
                                     f"({', '.join(stray[:4])}{' ...' if len(stray) > 4 else ''})")
    objective = str(model["diffusion"].get("diffusion_objective", "v"))
    if objective not in ("rf_denoiser", "rectified_flow"):
        raise UnsupportedConfigError(f"{config_path}: diffusion_objective {objective!r}; SA3 models are "
                                     "rf_denoiser or rectified_flow")
    vae = _vae(model["pretransform"]["config"], int(config["sample_rate"]), state, weights, dtype)
    ours = ml_collections.ConfigDict(dict(
        model=dit_config(model["diffusion"], config_path), diffusion=dict(objective=objective),
        conditioning=conditioning_config(model["conditioning"], config_path),
        generation=generation_config(config, objective, vae.module.downsampling_ratio)))
    denoiser = denoiser_from_config(ours, dtype)
    params = {"params": {"dit": sa3_dit_params_from_state_dict(state, denoiser.dit, weights)["params"],
                         "conditioner": sa3_conditioner_params_from_state_dict(state, denoiser.conditioner,
                                                                               weights)["params"]}}
    text = _text_encoder(text_encoder, int(ours.conditioning.max_length), dtype)
    return SA3Model(text, denoiser, params, vae, ours, source=directory)


def _vae(autoencoder: Mapping, sample_rate: int, state: Mapping, source: str, dtype: Any) -> VAE:
    cfg = ml_collections.ConfigDict(same_config(autoencoder, sample_rate, source))
    module = same_from_config(cfg, dtype=dtype)
    return VAE(module, same_params_from_state_dict(state, module, source), cfg, source)


def _text_encoder(directory: str | os.PathLike, max_length: int, dtype: Any) -> T5GemmaText:
    module, params = load_hf_t5gemma(directory, dtype)
    return T5GemmaText(module, params, HFTokenizer.from_directory(directory, max_length), max_length,
                       source=os.fspath(directory))


def convert_sa3(directory: str, text_encoder: str, out: str, overwrite: bool = False) -> str:
    model = load_sa3_checkpoint(directory, text_encoder)
    return save_sa3(out, model, overwrite, provenance={"converted_from": os.path.abspath(directory),
                                                      "text_encoder": os.path.abspath(text_encoder)})


def convert_same(directory: str, out: str, overwrite: bool = False) -> str:
    """A standalone SAME-S / SAME-L repository (``model_config.json`` with the autoencoder at ``model``) → a stored
    VAE."""
    config_path = os.path.join(os.fspath(directory), "model_config.json")
    config = load_json(config_path, "SAME model config")
    weights = os.path.join(os.fspath(directory), "model.safetensors")
    vae = _vae(config["model"], int(config["sample_rate"]), read_state_dict(weights), weights, jnp.float32)
    return save_vae(out, vae, overwrite, provenance={"converted_from": os.path.abspath(directory)})
