"""The model store: the exported-model format, save/load of every model kind, modules built from configs.

It sits above ``models/`` and below ``data/``, ``convert/``, ``training/`` and ``inference/``: everything that
writes or reads a model goes through here (``docs/design.md``, "Layers").
"""
from stableaudio_jax.store.builders import (count_parameters, denoiser_from_config, diffusion_model_from_config,
                                            resolve_conditioning, text_encoder_from_config, vae_from_config)
from stableaudio_jax.store.format import (StoreError, is_stored_model, read_info, weights_sha256)
from stableaudio_jax.store.models import (VAE, DiffusionModel, TextToAudioModel, diffusion_model, load_diffusion,
                                          load_text_encoder, load_text_to_audio, load_vae, save_diffusion,
                                          save_text_encoder, save_text_to_audio, save_vae, stored_kind)
from stableaudio_jax.store.text_encoders import T5TextEncoder

__all__ = ["VAE", "DiffusionModel", "StoreError", "T5TextEncoder", "TextToAudioModel", "count_parameters",
           "denoiser_from_config", "diffusion_model", "diffusion_model_from_config", "is_stored_model",
           "load_diffusion", "load_text_encoder", "load_text_to_audio", "load_vae", "read_info",
           "resolve_conditioning", "save_diffusion", "save_text_encoder", "save_text_to_audio", "save_vae",
           "stored_kind", "text_encoder_from_config", "vae_from_config", "weights_sha256"]
