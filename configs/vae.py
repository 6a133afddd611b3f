"""Oobleck VAE configs.

Variants:
  sao   the exact Stable Audio Open 1.0 VAE: 44.1 kHz stereo, channels 128, c_mults [1,2,4,8,16],
        strides [2,4,4,8,8] (2048x), latent 64; 156,112,514 parameters. bfloat16 compute.
  tiny  a few-thousand-parameter VAE with the same structure (8x), float32, for tests.
"""
import ml_collections

from stableaudio_jax.parallel.sharding import DEFAULT_RULES

MODELS = {
    "sao": dict(sample_rate=44100, audio_channels=2, channels=128, c_mults=(1, 2, 4, 8, 16),
                strides=(2, 4, 4, 8, 8), latent_dim=64),
    "tiny": dict(sample_rate=44100, audio_channels=2, channels=8, c_mults=(1, 2), strides=(2, 4), latent_dim=4),
}


def get_config(arg=None):
    variant = arg or "sao"
    if variant not in MODELS:
        raise ValueError(f"configs/vae.py: unknown variant {variant!r}; expected one of {sorted(MODELS)}")
    config = ml_collections.ConfigDict()
    config.variant = variant

    config.model = ml_collections.ConfigDict(dict(
        type="oobleck_vae", activation="snake", final_tanh=False, remat=False, **MODELS[variant]))

    config.dtype = "float32" if variant == "tiny" else "bfloat16"  # compute dtype; params stay float32
    config.param_dtype = "float32"

    # Long-audio encode/decode, in latent frames (stable-audio-tools' defaults).
    config.chunking = ml_collections.ConfigDict(dict(chunk_size=128, overlap=32))

    # Parallelism: the strategy is the mesh shape (data parallel by default; set fsdp/tensor > 1 to shard).
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.sharding_rules = DEFAULT_RULES

    config.seed = 0
    return config
