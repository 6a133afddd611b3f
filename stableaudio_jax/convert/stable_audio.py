"""Complete Stable Audio Open checkpoints → a bundle of callables with their params bound.

``load_stable_audio_tools(model.safetensors, model_config.json)`` reads the stable-audio-tools layout (VAE under
``pretransform.model.``, DiT under ``model.model.``, conditioners (timing, and the text projection when ``cond_dim``
differs from the T5 width) under ``conditioner.conditioners.``; every tensor must belong to one of them).
``load_diffusers(directory)`` reads a diffusers ``StableAudioPipeline`` folder (``vae/``, ``transformer/``,
``projection_model/``). T5 is loaded separately (``convert.load_hf_t5``); :func:`text_to_audio_model` joins a bundle
and a T5 into the model store's text-to-audio model (what ``stableaudio-jax convert`` saves).

All parts are channels-last and float32 unless a compute ``dtype`` is asked for:

  bundle.vae.encode(audio[B, N, C], sample=False, rng=None) -> latents[B, N / ratio, latent_dim]
  bundle.vae.decode(latents) -> audio[B, N, C]
  bundle.timing(seconds_start[B], seconds_total[B]) -> (cross_tokens[B, 2, cond_dim], global_cond[B, 2 cond_dim])
  bundle.dit(x[B, T, io], t[B], cross_attn_cond[B, S, cond_dim], global_cond[B, G], cfg_scale=None) -> v[B, T, io]
  bundle.text_projection(text[B, L, width], mask[B, L]) -> text tokens[B, L, cond_dim] (padded positions zero);
                         None when the checkpoint has no projection (width = cond_dim)
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from stableaudio_jax.convert.conditioning import (SAT_PREFIX, conditioning_config_from_stable_audio_tools,
                                                  split_conditioner_state, split_text_encoder_state,
                                                  text_projection_params_from_state_dict,
                                                  timing_params_from_state_dict)
from stableaudio_jax.convert.dit import (dit_config_from_diffusers, dit_config_from_stable_audio_tools,
                                         dit_params_from_state_dict, has_nonzero_norm_bias)
from stableaudio_jax.convert.dac_vae import dac_vae_config_from_stable_audio_tools, dac_vae_params_from_state_dict
from stableaudio_jax.convert.state_dict import CheckpointMismatchError, load_json, read_state_dict, strip_prefix
from stableaudio_jax.convert.unet import unet_config_from_stable_audio_tools, unet_params_from_state_dict
from stableaudio_jax.convert.vae import (load_vae_diffusers, vae_config_from_stable_audio_tools,
                                         vae_params_from_state_dict)
from stableaudio_jax.diffusion.samplers import default_sampling
from stableaudio_jax.models.autoencoder import BottleneckVAE, vae_from_config
from stableaudio_jax.models.conditioning import TextProjection, TimingConditioner
from stableaudio_jax.models.dit import DiT, dit_from_config, guided
from stableaudio_jax.store import VAE, T5TextEncoder, TextToAudioModel, builders, diffusion_model

VAE_PREFIX, DIT_PREFIX = "pretransform.model.", "model.model."
SAO_CROSS_IDS = ["prompt", "seconds_start", "seconds_total"]
SAO_GLOBAL_IDS = ["seconds_start", "seconds_total"]


@functools.partial(jax.jit, static_argnames=("vae", "method"))
def _vae_call(vae, params, x, method):
    return vae.apply(params, x, method=getattr(type(vae), method))


@dataclass(frozen=True)
class BoundVAE:
    module: BottleneckVAE
    params: Any

    def encode(self, audio, sample: bool = False, rng: jax.Array | None = None) -> jax.Array:
        posterior = _vae_call(self.module, self.params, jnp.asarray(audio), "encode_posterior")
        if not sample:
            return posterior.mean
        if rng is None:
            raise ValueError("vae.encode(sample=True) needs an rng key")
        return posterior.sample(rng)

    def decode(self, latents) -> jax.Array:
        return _vae_call(self.module, self.params, jnp.asarray(latents), "decode")


@functools.partial(jax.jit, static_argnames=("timing",))
def _timing_call(timing, params, start, total):
    start_tok, total_tok = timing.apply(params, start, total)
    return jnp.concatenate([start_tok, total_tok], axis=1), jnp.concatenate([start_tok[:, 0], total_tok[:, 0]], -1)


@dataclass(frozen=True)
class BoundTiming:
    module: TimingConditioner
    params: Any

    def __call__(self, seconds_start, seconds_total) -> tuple[jax.Array, jax.Array]:
        start, total = jnp.asarray(seconds_start, jnp.float32), jnp.asarray(seconds_total, jnp.float32)
        if start.ndim != 1 or start.shape != total.shape:
            raise ValueError(f"timing: seconds_start {tuple(start.shape)} and seconds_total {tuple(total.shape)} "
                             "must both be [batch]")
        return _timing_call(self.module, self.params, start, total)


@functools.partial(jax.jit, static_argnames=("dit", "guidance"))
def _dit_call(dit, params, x, t, cross, global_cond, cfg_scale, scale_phi, guidance):
    apply = functools.partial(dit.apply, params)
    if not guidance:
        return apply(x, t, cross, global_cond)
    return guided(apply, x, t, cross, global_cond, cfg_scale, scale_phi)


@dataclass(frozen=True)
class BoundDiT:
    module: DiT
    params: Any

    def __call__(self, x, t, cross_attn_cond, global_cond, cfg_scale=None, scale_phi: float = 0.0) -> jax.Array:
        """v-prediction; with ``cfg_scale`` the reference's batched guidance against an all-zero cross null.
        (A Stable Audio 1.0 bundle holds its U-Net here for conversion; use it through ``text_to_audio_model``.)"""
        if not isinstance(self.module, DiT):
            raise TypeError(f"bundle.dit holds a {type(self.module).__name__}: call it through the stored model "
                            "(text_to_audio_model / TextToAudioPipeline), not the DiT interface")
        args = [jnp.asarray(a, jnp.float32) for a in (x, t, cross_attn_cond, global_cond)]
        scale = jnp.asarray(1.0 if cfg_scale is None else cfg_scale, jnp.float32)
        return _dit_call(self.module, self.params, *args, scale, jnp.asarray(scale_phi, jnp.float32),
                         guidance=cfg_scale is not None)


@functools.partial(jax.jit, static_argnames=("projection",))
def _projection_call(projection, params, text, mask):
    return jnp.where(mask[..., None], projection.apply(params, text), 0.0)


@dataclass(frozen=True)
class BoundTextProjection:
    module: TextProjection
    params: Any

    def __call__(self, text, mask) -> jax.Array:
        return _projection_call(self.module, self.params, jnp.asarray(text, jnp.float32), jnp.asarray(mask, bool))


@dataclass(frozen=True)
class StableAudioBundle:
    vae: BoundVAE
    timing: BoundTiming
    dit: BoundDiT
    config: ml_collections.ConfigDict
    params: dict
    text_projection: BoundTextProjection | None = None
    text_state: dict | None = None  # a fine-tuned CLAP's weights carried by the checkpoint (full key names)


def _bundle(config, vae_mod, vae_params, timing_mod, timing_params, dit_mod, dit_params,
            projection_params=None, text_state=None) -> StableAudioBundle:
    params = {"vae": vae_params, "timing": timing_params, "dit": dit_params}
    projection = None
    if projection_params is not None:
        params["text_projection"] = projection_params
        projection = BoundTextProjection(TextProjection(int(config.conditioning.cond_dim)), projection_params)
    return StableAudioBundle(vae=BoundVAE(vae_mod, vae_params), timing=BoundTiming(timing_mod, timing_params),
                             dit=BoundDiT(dit_mod, dit_params), config=config, params=params,
                             text_projection=projection, text_state=text_state or None)


def _text_width(config, projection_params, source: str) -> int:
    """The text encoder width the checkpoint expects: its projection's input, else ``cond_dim`` (stable-audio-tools
    builds a projection exactly when the widths differ or ``project_out`` is set). The T5 loaded beside the
    checkpoint is checked against this width when the two are joined (:func:`text_to_audio_model`)."""
    text, cond_dim = config.conditioning.text, int(config.conditioning.cond_dim)
    if projection_params is not None:
        return int(projection_params["params"]["proj"]["kernel"].shape[0])
    if text.get("project_out"):
        raise CheckpointMismatchError(source, ["conditioner.conditioners.prompt.proj_out.weight",
                                               "conditioner.conditioners.prompt.proj_out.bias"], [], [])
    return cond_dim


def diffusion_config(config, text_width: int) -> ml_collections.ConfigDict:
    """The model store's diffusion config (model, conditioning, diffusion) of a converted bundle's config."""
    cond = config.conditioning
    timing = {k: cond.timing[k] for k in ("style", "features", "min_val", "max_val")}
    text = dict(type=cond.text.get("type", "t5"), width=int(text_width), max_length=int(cond.text.max_length),
                project_out=bool(cond.text.get("project_out", False)))
    return ml_collections.ConfigDict(dict(
        model=config.dit.to_dict(), diffusion=config.diffusion.to_dict(),
        conditioning=dict(cond_dim=int(cond.cond_dim), text=text, timing=timing,
                          cross_attention_ids=list(cond.cross_attention_ids), global_ids=list(cond.global_ids))))


def text_to_audio_model(bundle: StableAudioBundle, text: T5TextEncoder, source: str = "") -> TextToAudioModel:
    """The model store's text-to-audio model: a converted bundle with its T5 (widths checked against each other)."""
    config = diffusion_config(bundle.config, int(bundle.config.conditioning.text.width))
    config.conditioning.text.max_length = int(text.output_length)  # CLAP's pooled embedding: one token
    params = {"denoiser": bundle.dit.params, "timing": bundle.timing.params}
    if bundle.text_projection is not None:
        params["text_projection"] = bundle.text_projection.params
    dtype = bundle.dit.module.dtype
    diffusion = diffusion_model(config, params, source, dtype=dtype)
    vae = VAE(bundle.vae.module, bundle.vae.params, ml_collections.ConfigDict(bundle.config.vae.to_dict()), source)
    audio = {k: int(bundle.config.audio[k]) for k in ("sample_rate", "sample_size", "channels")}
    return TextToAudioModel(text, diffusion, vae, ml_collections.ConfigDict(
        {"audio": audio, "sampling": default_sampling(diffusion.objective)}), source)


def _load_json(path_or_dict) -> dict:
    return dict(path_or_dict) if isinstance(path_or_dict, Mapping) else load_json(path_or_dict, "model config")


def bundle_config_from_stable_audio_tools(model_config: Mapping[str, Any],
                                          source: str = "model_config.json") -> ml_collections.ConfigDict:
    """Our config sections (vae, dit, conditioning, diffusion, audio) for a stable-audio-tools diffusion model."""
    if model_config.get("model_type") != "diffusion_cond":
        raise ValueError(f"{source}: model_type is {model_config.get('model_type')!r}; expected 'diffusion_cond'")
    conditioning = conditioning_config_from_stable_audio_tools(model_config, source)
    diffusion = model_config["model"]["diffusion"]
    unet = diffusion.get("type") == "adp_cfg_1d"  # Stable Audio 1.0; else the DiT (Open, 2.0)
    ids = (SAO_CROSS_IDS, []) if unet else (SAO_CROSS_IDS, SAO_GLOBAL_IDS)
    if (list(conditioning.cross_attention_ids), list(conditioning.global_ids)) != ids:
        raise ValueError(f"{source}: model.diffusion.cross_attention_cond_ids {list(conditioning.cross_attention_ids)}"
                         f" / global_cond_ids {list(conditioning.global_ids)} are not supported; expected "
                         f"{ids[0]} / {ids[1]} ({'Stable Audio 1.0' if unet else 'Stable Audio Open / 2.0'})")
    objective = diffusion.get("diffusion_objective", "v")
    if objective not in ("v", "rectified_flow"):
        raise ValueError(f"{source}: model.diffusion.diffusion_objective={objective!r} is not supported")
    denoiser = (unet_config_from_stable_audio_tools if unet else dit_config_from_stable_audio_tools)(model_config,
                                                                                                      source)
    return ml_collections.ConfigDict(dict(
        vae=_sat_vae_config(model_config, source), dit=denoiser, conditioning=conditioning,
        diffusion=dict(objective=objective),
        audio=dict(sample_rate=int(model_config.get("sample_rate", 44100)),
                   sample_size=int(model_config.get("sample_size", 2097152)),
                   channels=int(model_config.get("audio_channels", 2)))))


def _split_sat_state(state: Mapping, source: str) -> tuple[dict, dict, dict]:
    parts = (strip_prefix(state, VAE_PREFIX), strip_prefix(state, DIT_PREFIX), strip_prefix(state, SAT_PREFIX))
    other = sorted(k for k in state if not k.startswith((VAE_PREFIX, DIT_PREFIX, SAT_PREFIX)))
    if other:
        raise CheckpointMismatchError(source, [], other, [])
    return parts


def load_stable_audio_tools(checkpoint_path: str | os.PathLike, model_config: str | os.PathLike | Mapping,
                            dtype: Any = jnp.float32) -> StableAudioBundle:
    """A complete stable-audio-tools checkpoint (SAO ``model.safetensors`` / ``model.ckpt``) → bundle."""
    source = os.fspath(checkpoint_path)
    config = bundle_config_from_stable_audio_tools(_load_json(model_config))
    vae_state, dit_state, cond_state = _split_sat_state(read_state_dict(checkpoint_path), source)
    cond_state, text_state = split_text_encoder_state(cond_state)
    timing_state, projection_state = split_conditioner_state(cond_state, "stable-audio-tools")
    projection = text_projection_params_from_state_dict(projection_state, "stable-audio-tools", source)
    config.conditioning.text.width = _text_width(config, projection, source)
    vae = builders.vae_from_config(config.vae, dtype=dtype)
    denoiser = builders.denoiser_from_config(config.dit, dtype=dtype)
    timing = TimingConditioner(features=config.conditioning.timing.features, min_val=config.conditioning.timing.min_val,
                               max_val=config.conditioning.timing.max_val, style=config.conditioning.timing.style)
    if config.vae.type == "dac_vae":
        vae_params = dac_vae_params_from_state_dict({VAE_PREFIX + k: v for k, v in vae_state.items()}, vae, source)
    else:
        vae_params = vae_params_from_state_dict(vae_state, vae, "stable-audio-tools", source)
    if config.dit.type == "unet1d":
        denoiser_params = unet_params_from_state_dict(dit_state, denoiser, source)
    else:
        denoiser_params = dit_params_from_state_dict(dit_state, denoiser, "stable-audio-tools", source)
    return _bundle(config, vae, vae_params, timing,
                   timing_params_from_state_dict(timing_state, timing, "stable-audio-tools", source), denoiser,
                   denoiser_params, projection, text_state)


def _sat_vae_config(model_config: Mapping[str, Any], source: str) -> ml_collections.ConfigDict:
    """The pretransform's config: the Oobleck VAE (Open, 2.0) or the DAC-based VAE (1.0)."""
    pretransform = model_config.get("model", {}).get("pretransform", {}).get("config", {})
    if pretransform.get("encoder", {}).get("type") == "dac":
        return dac_vae_config_from_stable_audio_tools(pretransform)
    return vae_config_from_stable_audio_tools(model_config, source)


def load_diffusers(directory: str | os.PathLike, dtype: Any = jnp.float32) -> StableAudioBundle:
    """A diffusers ``StableAudioPipeline`` directory (``vae/``, ``transformer/``, ``projection_model/``) → bundle."""
    directory = os.fspath(directory)

    def part(name):
        folder = os.path.join(directory, name)
        config_path = os.path.join(folder, "config.json")
        weights = [os.path.join(folder, f) for f in ("diffusion_pytorch_model.safetensors",
                                                     "diffusion_pytorch_model.bin") if os.path.isfile(
            os.path.join(folder, f))]
        if not os.path.isfile(config_path) or not weights:
            raise FileNotFoundError(f"{directory}: {name}/ needs config.json and diffusion_pytorch_model.safetensors")
        return _load_json(config_path), read_state_dict(weights[0]), weights[0]

    vae_cfg, vae_params = load_vae_diffusers(directory)
    dit_json, dit_state, dit_source = part("transformer")
    proj_json, proj_state, proj_source = part("projection_model")
    dit_cfg = dit_config_from_diffusers(dit_json, dit_source, norm_bias=has_nonzero_norm_bias(dit_state))
    timing_state, projection_state = split_conditioner_state(proj_state, "diffusers")
    projection = text_projection_params_from_state_dict(projection_state, "diffusers", proj_source)
    width, cond_dim = int(proj_json["text_encoder_dim"]), int(proj_json["conditioning_dim"])
    if (projection is None) != (width == cond_dim):
        raise CheckpointMismatchError(proj_source, [] if projection else ["text_projection.weight",
                                                                          "text_projection.bias"],
                                      sorted(projection_state) if projection and width == cond_dim else [], [])
    timing = TimingConditioner(features=int(proj_json["conditioning_dim"]), min_val=float(proj_json["min_value"]),
                               max_val=float(proj_json["max_value"]))
    dit = dit_from_config(dit_cfg, dtype=dtype)
    vae = vae_from_config(vae_cfg, dtype=dtype)
    sample_size = int(dit_json.get("sample_size", 1024)) * vae.downsampling_ratio
    config = ml_collections.ConfigDict(dict(
        vae=vae_cfg, dit=dit_cfg, diffusion=dict(objective="v"),
        conditioning=dict(cond_dim=cond_dim, text=dict(type="t5", width=width, max_length=128, project_out=False),
                          timing=dict(style="number", features=timing.features, min_val=timing.min_val,
                                      max_val=timing.max_val, ids=["seconds_start", "seconds_total"]),
                          cross_attention_ids=SAO_CROSS_IDS, global_ids=SAO_GLOBAL_IDS),
        audio=dict(sample_rate=int(vae_cfg.sample_rate), sample_size=sample_size,
                   channels=int(vae_cfg.audio_channels))))
    return _bundle(config, vae, vae_params, timing,
                   timing_params_from_state_dict(timing_state, timing, "diffusers", proj_source), dit,
                   dit_params_from_state_dict(dit_state, dit, "diffusers", dit_source), projection)
