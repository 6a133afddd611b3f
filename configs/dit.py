"""Diffusion-transformer (Stable Audio Open / 2.0) configs.

Variants:
  sao   Stable Audio Open 1.0: DiT 24 x 1536, 24 heads (64-d), cross-attention on 768-d tokens (T5 + 2 timing)
        with 12 key/value heads, global conditioning 1536 (2 timing embeddings); 1,056,828,544 parameters.
        The conditioning widths derive from ``conditioning.cond_dim`` (store.builders.resolve_conditioning).
        VAE: configs/vae.py:sao; text: t5-base, 128 tokens; window 2,097,152 samples (47.55 s, 1024 latents).
  sa2   Stable Audio 2.0 (stable-audio-tools' stable_audio_2_0.json): SAO's DiT and Oobleck VAE conditioned on
        CLAP text features (layer -2 of its RoBERTa branch, 77 x 768: models/clap.py) + timing; 285 s windows
        (12,582,912 samples, 6,144 latent frames). Stability never released its weights.
  tiny  the same structure at toy size (GQA x2 and partial rotary kept), float32, for tests.
  <variant>+clap  T5 and CLAP together (sao+clap, tiny+clap): two text conditioners, each with its own proj_out,
        their tokens one after the other in cross-attention ([t5 | clap | start | total]); encode with
        ``--text-encoder t5=DIR --text-encoder clap=DIR``. CLAP's sizes come from the data when unset (tiny).
``config.training`` is the diffusion trainer's (configs/diffusion_training.py).
"""
import math

import ml_collections

from stableaudio_jax.configs import diffusion_training
from stableaudio_jax.configs import t5 as t5_configs
from stableaudio_jax.configs import vae as vae_configs
from stableaudio_jax.parallel.sharding import DEFAULT_RULES

MODELS = {
    "sao": dict(io_channels=64, embed_dim=1536, depth=24, num_heads=24),
    "sa2": dict(io_channels=64, embed_dim=1536, depth=24, num_heads=24),
    "tiny": dict(io_channels=4, embed_dim=256, depth=2, num_heads=4, cond_embed_dim=128),
}
TEXT = {"sao": "t5-base", "tiny": "tiny"}  # sa2: CLAP (no T5)
COND_DIM = {"sao": 768, "sa2": 768, "tiny": 32}
SAMPLE_SIZE = {"sao": 2097152, "sa2": 6144 * 2048, "tiny": 8 * 64}
FULL_SIZE = ("sao", "sa2")  # the width of every conditioning token (stable-audio-tools' cond_dim)


def get_config(arg=None):
    variant, plus, extra = (arg or "sao").partition("+")
    if plus and extra != "clap":
        raise ValueError(f"configs/dit.py: {arg!r}: the only addition is '+clap' (T5 and CLAP together)")
    if variant not in MODELS:
        raise ValueError(f"configs/dit.py: unknown variant {variant!r}; expected one of {sorted(MODELS)}")
    config = ml_collections.ConfigDict()
    config.variant = arg or variant
    config.model = ml_collections.ConfigDict(dict(
        type="dit", rotary_dim=None, norm_bias=False, attention_impl="auto", scan_layers=variant == "sao",
        remat="none", cond_token_dim=None, global_cond_dim=None,  # None: derived from conditioning.cond_dim
        **MODELS[variant]))
    config.vae = vae_configs.get_config("tiny" if variant == "tiny" else "sao").model
    # One width: timing features, cond_token_dim and global_cond_dim (x 2 timing ids) follow cond_dim; a text
    # encoder of another width gets a projection (project_out: one even when the widths agree).
    config.conditioning = ml_collections.ConfigDict(dict(
        cond_dim=COND_DIM[variant],
        text=_text_with_clap(variant) if plus else _text(variant),
        timing=dict(style="number", features=None, min_val=0.0, max_val=512.0),
        cross_attention_ids=["prompt", "seconds_start", "seconds_total"],
        global_ids=["seconds_start", "seconds_total"]))
    config.diffusion = ml_collections.ConfigDict(dict(objective="v"))
    config.audio = ml_collections.ConfigDict(dict(sample_rate=44100, channels=2, sample_size=SAMPLE_SIZE[variant]))
    config.dtype = "bfloat16" if variant in FULL_SIZE else "float32"
    config.param_dtype = "float32"
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.sharding_rules = DEFAULT_RULES
    ratio = math.prod(config.vae.strides)  # audio samples per latent frame
    config.training = diffusion_training.training_config(variant in FULL_SIZE, config.audio.sample_size // ratio)
    config.distributed = ml_collections.ConfigDict(dict(mode="auto", initialization_timeout=300, heartbeat_timeout=100))
    config.seed = 0
    return config


def _text_with_clap(variant: str) -> dict:
    """T5 then CLAP's layer features (77 tokens; 768 wide at full size, the data's width for tiny)."""
    clap = dict(type="clap", max_length=77, width=None if variant == "tiny" else 768, layer=-2, output="features",
                project_out=False)
    return dict(type="multi", order=["t5", "clap"], parts=dict(t5=_text(variant), clap=clap), width=None,
                max_length=None)


def _text(variant: str) -> dict:
    if variant == "sa2":  # CLAP's layer features: 768 wide (LAION CLAP's RoBERTa-base branch)
        return dict(type="clap", max_length=77, width=768, project_out=False)
    text = t5_configs.get_config(TEXT[variant])
    return dict(type="t5", model=text.model.to_dict(), max_length=128, width=None, project_out=False)
