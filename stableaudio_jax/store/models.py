"""Save and load every model kind: the VAE, the text encoder, the diffusion model, and the text-to-audio bundle.

  kind            config                                              params
  vae             the VAE's model section (``type``: oobleck_vae)      VAE variables
  text_encoder    ``{"type": "t5", "model": {...}, "max_length"}``    encoder variables (+ spiece.model)
                  ``{"type": "clap", ..., "layer", "output"}``        (+ vocab.json, merges.txt / tokenizer.json)
                  ``{"type": "multi", "model": {"order", "parts"}}``  none: each part a component (its id)
  diffusion       ``model`` + ``conditioning`` + ``diffusion``         {"denoiser", "timing"[, "text_projection"]}
                  (+ ``guidance``), widths resolved
  text-to-audio   ``audio`` + ``sampling``                             none: components text_encoder/, diffusion/,
                                                                       vae/, each a stored model of its own

A bundle's parts can be used on their own (``encode --vae runs/dit/model`` takes the bundle's VAE). Each load
rebuilds the modules from the stored config and checks the weights against it and against their content hash.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from stableaudio_jax import paths
from stableaudio_jax.models.conditioned import ConditionedDenoiser
from stableaudio_jax.store import builders
from stableaudio_jax.store.format import (StoreError, read_info, read_weights, staged_directory, weights_sha256,
                                          write_model)
from stableaudio_jax.store.multi_text import MULTI_TEXT, MultiText
from stableaudio_jax.store.text_encoders import T5TextEncoder
from stableaudio_jax.store.tokenizers import SPIECE_FILE, T5Tokenizer

BUNDLE_PARTS = ("text_encoder", "diffusion", "vae")


@dataclass
class VAE:
    """A VAE module with its variables (``{"params": ...}``) and its model config."""

    module: nn.Module
    params: Any
    config: ml_collections.ConfigDict
    source: str = ""

    @functools.cached_property
    def sha256(self) -> str:
        return weights_sha256(self.params)


@dataclass
class DiffusionModel:
    """The conditioned denoiser (DiT or U-Net + timing conditioner + optional text projection) with its params."""

    model: ConditionedDenoiser
    params: dict
    config: ml_collections.ConfigDict  # model, conditioning, diffusion (+ guidance) sections, widths resolved
    source: str = ""

    @property
    def objective(self) -> str:
        return self.config.diffusion.objective

    @property
    def text_width(self) -> int:
        return int(self.config.conditioning.text.width)

    @functools.cached_property
    def sha256(self) -> str:
        return weights_sha256(self.params)


@dataclass
class TextToAudioModel:
    """Everything ``generate`` needs: text encoder, diffusion model, VAE, audio format and sampling defaults."""

    text: T5TextEncoder
    diffusion: DiffusionModel
    vae: VAE
    config: ml_collections.ConfigDict  # audio: sample_rate, channels, sample_size; sampling: defaults
    source: str = ""

    def __post_init__(self):
        check_compatible(self.text, self.diffusion, self.vae, self.source or "text-to-audio model")


def check_compatible(text: T5TextEncoder, diffusion: DiffusionModel, vae: VAE, where: str) -> None:
    """The parts of a bundle must fit each other; otherwise an error names both widths."""
    if text.width != diffusion.text_width:
        raise StoreError(f"{where}: the text encoder ({text.source}) gives {text.width}-wide features but the "
                         f"diffusion model reads {diffusion.text_width}-wide ones (conditioning.text.width)")
    if vae.module.latent_dim != diffusion.model.latent_channels:
        raise StoreError(f"{where}: the VAE ({vae.source}) has {vae.module.latent_dim} latent channels but the "
                         f"denoiser takes {diffusion.model.latent_channels}")


# ----------------------------------------------------------------------------------------------------- VAE


def save_vae(directory: str | os.PathLike, vae: VAE, overwrite: bool = False, provenance: dict | None = None) -> str:
    with staged_directory(directory, overwrite) as staging:
        write_vae(staging, vae, provenance)
    return paths.absolute(directory)


def write_vae(directory: str, vae: VAE, provenance: dict | None = None) -> str:
    return write_model(directory, "vae", vae.config, vae.params, provenance=provenance)


def load_vae(path: str | os.PathLike, dtype: Any = jnp.float32, verify: bool = True) -> VAE:
    """A stored VAE, or the VAE of a stored text-to-audio model."""
    info = read_info(path, ("vae", "text-to-audio"))
    if info.kind == "text-to-audio":
        return load_vae(component_path(info, "vae"), dtype, verify)
    module = built_from_config(info, builders.vae_from_config, info.config, dtype=dtype)
    params = read_weights(info, builders.abstract_vae_params(module), verify)
    vae = VAE(module, params, info.config, info.directory)
    vae.__dict__["sha256"] = info.weights_sha256  # verified above (or trusted): no need to hash again
    return vae


# -------------------------------------------------------------------------------------------- text encoder


def save_text_encoder(directory: str | os.PathLike, text: T5TextEncoder, overwrite: bool = False) -> str:
    with staged_directory(directory, overwrite) as staging:
        write_text_encoder(staging, text)
    return paths.absolute(directory)


def write_text_encoder(directory: str, text: T5TextEncoder) -> str:
    if isinstance(text, MultiText):  # each part a stored text encoder of its own, in a sub-directory
        for name, part in text.parts:
            write_text_encoder(os.path.join(directory, name), part)
        return write_model(directory, "text_encoder", text.config, components={name: name for name, _ in text.parts})
    return write_model(directory, "text_encoder", text.config, text.params, files=text.tokenizer_files)


def load_text_encoder(path: str | os.PathLike, max_length: int | None = None, dtype: Any = jnp.float32,
                      verify: bool = True) -> T5TextEncoder:
    """A stored text encoder, or the text encoder of a stored text-to-audio model; ``max_length`` overrides the
    stored tokens per prompt."""
    info = read_info(path, ("text_encoder", "text-to-audio"))
    if info.kind == "text-to-audio":
        return load_text_encoder(component_path(info, "text_encoder"), max_length, dtype, verify)
    kind = info.config.get("type", "t5")
    if kind == MULTI_TEXT:
        return _load_multi_text(info, max_length, dtype, verify)
    if kind not in TEXT_ENCODER_BINDERS:
        raise StoreError(f"{info.directory}: text encoder type {kind!r} is not known; expected one of "
                         f"{sorted(TEXT_ENCODER_BINDERS)}")
    module = built_from_config(info, builders.text_encoder_from_config, info.config, dtype=dtype)
    params = read_weights(info, builders.abstract_text_encoder_params(module), verify)
    text = TEXT_ENCODER_BINDERS[kind](info, module, params, int(max_length or info.config.max_length))
    text.__dict__["sha256"] = info.weights_sha256
    return text


def _load_multi_text(info, max_length: int | None, dtype: Any, verify: bool) -> MultiText:
    names = list(info.config.model.order)
    if sorted(names) != sorted(info.components):
        raise StoreError(f"{info.directory}: the multi-conditioner text encoder lists parts {names} but its "
                         f"components are {sorted(info.components)}")
    text = MultiText([(name, load_text_encoder(component_path(info, name), dtype=dtype, verify=verify))
                      for name in names], source=info.directory)
    if max_length is not None and int(max_length) not in (text.max_length, text.output_length):
        raise StoreError(f"{info.directory}: a multi-conditioner text encoder keeps its parts' token counts "
                         f"({text.max_length} tokens); max_length={max_length} cannot be applied")
    return text


def _bind_t5(info, module, params, max_length: int) -> T5TextEncoder:
    tokenizer = T5Tokenizer(info.path(SPIECE_FILE), max_length) if SPIECE_FILE in info.files else None
    return T5TextEncoder(module, params, tokenizer, max_length, source=info.directory)


def _bind_clap(info, module, params, max_length: int):
    from stableaudio_jax.store.clap_text import ClapText
    from stableaudio_jax.store.clap_tokenizer import ClapTokenizer
    tokenizer = ClapTokenizer.from_directory(info.directory, max_length) if info.files else None
    return ClapText(module, params, tokenizer, max_length, int(info.config.get("layer", -2)),
                    str(info.config.get("output", "features")), source=info.directory)


def _bind_t5gemma(info, module, params, max_length: int):
    from stableaudio_jax.store.hf_tokenizer import TOKENIZER_FILE, HFTokenizer
    from stableaudio_jax.store.t5gemma_text import T5GemmaText
    tokenizer = HFTokenizer.from_directory(info.directory, max_length) if TOKENIZER_FILE in info.files else None
    return T5GemmaText(module, params, tokenizer, max_length, source=info.directory)


# text encoder type → (stored info, module, params, max_length) → the bound encoder with its tokenizer
TEXT_ENCODER_BINDERS = {"t5": _bind_t5, "clap": _bind_clap, "t5gemma": _bind_t5gemma}


# ----------------------------------------------------------------------------------------- diffusion model


def diffusion_model(config: Any, params: dict, source: str = "", dtype: Any = None) -> DiffusionModel:
    """A :class:`DiffusionModel` from a (training or stored) config and its params; the config is resolved."""
    resolved = builders.resolve_conditioning(config)
    sections = {k: resolved[k].to_dict() for k in ("model", "conditioning", "diffusion", "guidance")
                if k in resolved}
    stored = ml_collections.ConfigDict(sections)
    return DiffusionModel(builders.diffusion_model_from_config(resolved, dtype, "float32"), params, stored, source)


def save_diffusion(directory: str | os.PathLike, model: DiffusionModel, overwrite: bool = False,
                   provenance: dict | None = None) -> str:
    with staged_directory(directory, overwrite) as staging:
        write_model(staging, "diffusion", model.config, model.params, provenance=provenance)
    return paths.absolute(directory)


def load_diffusion(path: str | os.PathLike, dtype: Any = jnp.float32, verify: bool = True) -> DiffusionModel:
    """A stored diffusion model, or the diffusion model of a stored text-to-audio model."""
    info = read_info(path, ("diffusion", "text-to-audio"))
    _refuse_sa3(info)
    if info.kind == "text-to-audio":
        return load_diffusion(component_path(info, "diffusion"), dtype, verify)
    config = ml_collections.ConfigDict(info.config.to_dict())
    model = built_from_config(info, builders.diffusion_model_from_config, config, dtype, "float32")
    params = read_weights(info, builders.abstract_diffusion_params(model, config), verify)
    loaded = DiffusionModel(model, params, config, info.directory)
    loaded.__dict__["sha256"] = info.weights_sha256
    return loaded


# ------------------------------------------------------------------------------------- text-to-audio bundle


def save_text_to_audio(directory: str | os.PathLike, bundle: TextToAudioModel, overwrite: bool = False,
                       provenance: dict | None = None) -> str:
    """Writes the three parts as sub-directories, then the bundle's manifest (their hashes included)."""
    with staged_directory(directory, overwrite) as staging:
        write_text_encoder(os.path.join(staging, "text_encoder"), bundle.text)
        write_model(os.path.join(staging, "diffusion"), "diffusion", bundle.diffusion.config, bundle.diffusion.params)
        write_vae(os.path.join(staging, "vae"), bundle.vae)
        write_model(staging, "text-to-audio", bundle.config, components={p: p for p in BUNDLE_PARTS},
                    provenance=provenance)
    return paths.absolute(directory)


def load_text_to_audio(path: str | os.PathLike, dtype: Any = jnp.float32, verify: bool = True) -> TextToAudioModel:
    info = read_info(path, "text-to-audio")
    _refuse_sa3(info)
    missing = [p for p in BUNDLE_PARTS if p not in info.components]
    if missing:
        raise StoreError(f"{info.directory}: the bundle's manifest lists no {missing} component")
    text = load_text_encoder(component_path(info, "text_encoder"), dtype=dtype, verify=verify)
    diffusion = load_diffusion(component_path(info, "diffusion"), dtype, verify)
    vae = load_vae(component_path(info, "vae"), dtype, verify)
    return TextToAudioModel(text, diffusion, vae, info.config, info.directory)


def _refuse_sa3(info) -> None:
    if info.config.get("family") == "sa3":
        raise StoreError(f"{info.directory}: a Stable Audio 3 model; load it with store.sa3.load_sa3 (the SAO-family "
                         "loaders cannot build it)")


def built_from_config(info, build, *args, **kwargs):
    """A module from a stored config; a config this version cannot build is an error naming the model."""
    try:
        return build(*args, **kwargs)
    except (ValueError, TypeError, KeyError) as e:
        raise StoreError(f"{info.directory}: cannot build the stored {info.kind} model from its config: {e}") from e


def component_path(info, name: str) -> str:
    """A bundle part's directory; its hash must be the one the bundle recorded (else a part was swapped)."""
    if name not in info.components:
        raise StoreError(f"{info.directory}: the bundle has no {name!r} component")
    path = info.path(info.components[name])
    recorded = info.component_sha256.get(name)
    found = read_info(path).weights_sha256
    if recorded is not None and recorded != found:
        raise StoreError(f"{path}: its weights hash differs from the one {info.directory} recorded for {name!r}; "
                         "a component was replaced after the bundle was written")
    return path


def stored_kind(path: str | os.PathLike) -> str:
    """The kind of the stored model at ``path`` (raises :class:`StoreError` when it is not one)."""
    return read_info(path).kind
