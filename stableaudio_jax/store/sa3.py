"""Stable Audio 3 models in the store: a ``text-to-audio`` bundle whose config says ``family: sa3``, with three
components — ``text_encoder`` (T5Gemma and its tokenizer), ``diffusion`` (the SA3 DiT with its conditioner; config
sections ``model``, ``conditioning``, ``diffusion``) and ``vae`` (a SAME autoencoder) — and the generation settings
in the bundle's config (``generation``: sample rate, latent cap, padding seconds, sampler defaults).

The SAO-family loaders (``load_text_to_audio``, ``load_diffusion``) refuse these bundles with a message naming
:func:`load_sa3`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from stableaudio_jax import paths
from stableaudio_jax.models.sa3_conditioning import SA3Conditioner, SA3Denoiser
from stableaudio_jax.models.sa3_dit import sa3_dit_from_config
from stableaudio_jax.store.format import StoreError, read_info, read_weights, staged_directory, write_model
from stableaudio_jax.store.models import (VAE, built_from_config, component_path, load_text_encoder, load_vae,
                                          write_text_encoder, write_vae)

FAMILY = "sa3"
PARTS = ("text_encoder", "diffusion", "vae")


@dataclass
class SA3Model:
    text: Any                       # a bound T5Gemma text encoder (store.t5gemma_text.T5GemmaText)
    denoiser: SA3Denoiser
    params: Any                     # {"params": {"dit": ..., "conditioner": ...}}
    vae: VAE
    config: ml_collections.ConfigDict  # {"family", "model", "conditioning", "diffusion", "generation"}
    source: str = ""

    def __post_init__(self):
        where = self.source or "SA3 model"
        if self.text.width != self.denoiser.conditioner.features:
            raise StoreError(f"{where}: the text encoder gives {self.text.width}-wide states but the conditioner "
                             f"reads {self.denoiser.conditioner.features}")
        if self.vae.module.latent_dim != self.denoiser.latent_channels:
            raise StoreError(f"{where}: the VAE has {self.vae.module.latent_dim} latent channels but the DiT takes "
                             f"{self.denoiser.latent_channels}")

    @property
    def objective(self) -> str:
        return str(self.config.diffusion.objective)


def denoiser_from_config(config: Any, dtype: Any = jnp.float32) -> SA3Denoiser:
    cond = config.conditioning
    conditioner = SA3Conditioner(int(cond.text_dim), int(cond.seconds_features), float(cond.seconds_max),
                                 dtype=jnp.dtype(dtype))
    return SA3Denoiser(sa3_dit_from_config(config.model, dtype=dtype), conditioner)


def abstract_denoiser_params(denoiser: SA3Denoiser) -> Any:
    import flax.linen as nn
    dit, width = denoiser.dit, denoiser.conditioner.features
    shapes = (jax.ShapeDtypeStruct((1, 2, dit.io_channels), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.float32),
              jax.ShapeDtypeStruct((1, 3, width), jnp.float32), jax.ShapeDtypeStruct((1, 3), jnp.bool_),
              jax.ShapeDtypeStruct((1,), jnp.float32))
    return nn.unbox(jax.eval_shape(lambda *a: denoiser.init(jax.random.key(0), *a), *shapes))


def _diffusion_config(config: Any) -> dict:
    return {"family": FAMILY, **{k: config[k].to_dict() for k in ("model", "conditioning", "diffusion")}}


def save_sa3(directory: str | os.PathLike, model: SA3Model, overwrite: bool = False,
             provenance: dict | None = None) -> str:
    """Writes the three components, then the bundle's manifest (their hashes included)."""
    with staged_directory(directory, overwrite) as staging:
        write_text_encoder(os.path.join(staging, "text_encoder"), model.text)
        write_model(os.path.join(staging, "diffusion"), "diffusion", _diffusion_config(model.config), model.params)
        write_vae(os.path.join(staging, "vae"), model.vae)
        bundle = {"family": FAMILY, "generation": model.config.generation.to_dict()}
        write_model(staging, "text-to-audio", bundle, components={p: p for p in PARTS}, provenance=provenance)
    return paths.absolute(directory)


def is_sa3(path: str | os.PathLike) -> bool:
    """Whether the stored model at ``path`` is a Stable Audio 3 bundle."""
    return read_info(path).config.get("family") == FAMILY


def load_sa3(path: str | os.PathLike, dtype: Any = jnp.float32, verify: bool = True) -> SA3Model:
    info = read_info(path, "text-to-audio")
    if info.config.get("family") != FAMILY:
        raise StoreError(f"{info.directory}: not a Stable Audio 3 model (its config has family "
                         f"{info.config.get('family')!r}); load it with store.load_text_to_audio")
    missing = [p for p in PARTS if p not in info.components]
    if missing:
        raise StoreError(f"{info.directory}: the bundle's manifest lists no {missing} component")
    text = load_text_encoder(component_path(info, "text_encoder"), dtype=dtype, verify=verify)
    vae = load_vae(component_path(info, "vae"), dtype, verify)
    part = read_info(component_path(info, "diffusion"), "diffusion")
    config = ml_collections.ConfigDict(part.config.to_dict())
    denoiser = built_from_config(part, denoiser_from_config, config, dtype)
    params = read_weights(part, abstract_denoiser_params(denoiser), verify)
    config.generation = info.config.generation
    return SA3Model(text, denoiser, params, vae, config, info.directory)

