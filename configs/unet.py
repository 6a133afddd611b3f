"""Stable Audio 1.0 style 1-D U-Net configs.

Variants:
  sa1   the Stable Audio 1.0 denoiser: channels 256 x [4, 4, 4, 5, 5], factors [1, 2, 2, 4], 2 ResNets per level,
        attentions [1, 3, 3, 3, 3], 16 heads, 79 cross-attention tokens of 768 (77 CLAP + 2 integer timing
        tokens); 906,679,744 parameters. Its VAE is a 1024x DAC-style one (not the SAO Oobleck VAE).
  tiny  the same structure at toy size (the configuration of tests/data/unet_reference.npz, 4 text tokens), float32.
Training (configs/diffusion_training.py) reads pre-encoded latents whose channel count must equal ``in_channels``
and whose text tokens are ``context_features`` wide, at most ``context_max_length - 2`` of them (2 timing tokens).
SA 1.0 windows: 4,194,304 samples (95.1 s) = 4096 latents of its 1024x VAE.
"""
import ml_collections

from stableaudio_jax.configs import diffusion_training
from stableaudio_jax.configs import t5 as t5_configs
from stableaudio_jax.parallel.sharding import DEFAULT_RULES

MODELS = {
    "sa1": dict(in_channels=64, channels=256, multipliers=(4, 4, 4, 5, 5), factors=(1, 2, 2, 4),
                num_blocks=(2, 2, 2, 2),
                attentions=(1, 3, 3, 3, 3), attention_heads=16, attention_multiplier=4, resnet_groups=16,
                kernel_multiplier_downsample=2),
    "tiny": dict(in_channels=8, channels=32, multipliers=(2, 2, 2, 3, 3), factors=(1, 2, 2, 4), num_blocks=(2, 2, 2, 2),
                 attentions=(1, 2, 2, 2, 2), attention_heads=4, attention_multiplier=4, resnet_groups=8,
                 kernel_multiplier_downsample=2),
}
COND_DIM = {"sa1": 768, "tiny": 32}
# SA 1.0 reads 77 CLAP tokens (the CLAP text encoder: issue "Stable Audio 1.0 and 2.0"); tiny a tiny T5.
TEXT = {"sa1": dict(type="clap", width=768, max_length=77), "tiny": dict(type="t5", max_length=4)}


def get_config(arg=None):
    variant = arg or "sa1"
    if variant not in MODELS:
        raise ValueError(f"configs/unet.py: unknown variant {variant!r}; expected one of {sorted(MODELS)}")
    config = ml_collections.ConfigDict()
    config.variant = variant
    # context_features follows conditioning.cond_dim; context_max_length (the learned null sequence) = text
    # tokens + 2 timing tokens, from the text encoder or the pre-encoded data (store.builders.resolve_conditioning).
    config.model = ml_collections.ConfigDict(dict(type="unet1d", init_scale=0.5, attention_impl="auto",
                                                  context_features=None, context_max_length=None, **MODELS[variant]))
    text = dict(TEXT[variant], project_out=False)
    if text["type"] == "t5":
        text.update(model=t5_configs.get_config(variant).model.to_dict(), width=None)
    # SA 1.0 timing: integer seconds embedded by nn.Embed over 0..512, entering only through cross-attention.
    config.conditioning = ml_collections.ConfigDict(dict(
        cond_dim=COND_DIM[variant], text=text,
        timing=dict(style="int", features=None, min_val=0.0, max_val=512.0),
        cross_attention_ids=["prompt", "seconds_start", "seconds_total"], global_ids=[]))
    config.guidance = ml_collections.ConfigDict(dict(scale_phi=0.4))  # generate() rescales CFG with phi 0.4
    config.diffusion = ml_collections.ConfigDict(dict(objective="v"))
    config.dtype = "float32" if variant == "tiny" else "bfloat16"
    config.param_dtype = "float32"
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.sharding_rules = DEFAULT_RULES
    config.audio = ml_collections.ConfigDict(dict(sample_rate=44100, channels=2))
    config.training = diffusion_training.training_config(variant == "sa1", 4096 if variant == "sa1" else 32,
                                                         lr=4e-5 if variant == "sa1" else None)
    config.distributed = ml_collections.ConfigDict(dict(mode="auto", initialization_timeout=300, heartbeat_timeout=100))
    config.seed = 0
    return config
