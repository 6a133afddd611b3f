"""Checkpoint converters: stable-audio-tools and diffusers → stableaudio-jax params."""
from stableaudio_jax.convert.clap import clap_params_from_state_dict, load_clap
from stableaudio_jax.convert.conditioning import (
    conditioning_config_from_stable_audio_tools,
    text_projection_params_from_state_dict,
    timing_params_from_state_dict,
)
from stableaudio_jax.convert.dit import (
    dit_config_from_diffusers,
    dit_config_from_stable_audio_tools,
    dit_params_from_state_dict,
)
from stableaudio_jax.convert.stable_audio import (StableAudioBundle, load_diffusers, load_stable_audio_tools,
                                                 text_to_audio_model)
from stableaudio_jax.convert.state_dict import CheckpointMismatchError, read_state_dict
from stableaudio_jax.convert.t5 import load_hf_t5, t5_config_from_hf, t5_params_from_state_dict
from stableaudio_jax.convert.vae import (
    load_vae_diffusers,
    load_vae_stable_audio_tools,
    vae_config_from_diffusers,
    vae_config_from_stable_audio_tools,
    vae_params_from_state_dict,
)

__all__ = [
    "CheckpointMismatchError",
    "clap_params_from_state_dict",
    "load_clap",
    "StableAudioBundle",
    "dit_config_from_diffusers",
    "dit_config_from_stable_audio_tools",
    "dit_params_from_state_dict",
    "load_diffusers",
    "load_stable_audio_tools",
    "conditioning_config_from_stable_audio_tools",
    "load_hf_t5",
    "t5_config_from_hf",
    "t5_params_from_state_dict",
    "text_projection_params_from_state_dict",
    "text_to_audio_model",
    "timing_params_from_state_dict",
    "load_vae_diffusers",
    "load_vae_stable_audio_tools",
    "read_state_dict",
    "vae_config_from_diffusers",
    "vae_config_from_stable_audio_tools",
    "vae_params_from_state_dict",
]
