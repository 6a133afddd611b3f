"""Stable Audio 3's SAME autoencoders (``stableaudio_jax.models.same.SAMEAutoencoder``).

Variants (shapes from the reference's modules and the hard-coded ports in its ``optimized/mlx/models/defs``):
  s      SAME-S (the Small models' autoencoder): 44.1 kHz stereo, patches of 256 samples, width 768, 6 encoder and
         6 decoder blocks of 12 heads x 64, attention in chunks of 2 latents with the midpoint shift, a kernel-3
         decoder mapping; 4096x down to 256 channels. 108,244,529 parameters in 231 tensors.
  l      SAME-L (the Medium model's): width 1536, 12 + 12 blocks of 24 heads x 64, sliding-window attention of one
         latent's 17 tokens either side, sin(pi x) gates in the decoder's last 7 blocks. 852,127,073 parameters in
         447 tensors.
The reference checkpoints hold 13 (S) and 25 (L) more tensors, none of them parameters: each block's rotary
``inv_freq`` buffer and an empty ``noise_scaling_factor``. The SA3 documentation's 266 M / 1.7 B do not follow
from these shapes (the sizes here are what the modules hold).
  tiny   the SAME-S structure at toy size (width 24, 2 blocks, patches of 8, stride 4), float32, for tests.
"""
import ml_collections

COMMON = dict(audio_channels=2, patch_size=256, latent_dim=256, stride=16, head_dim=64, ff_mult=3, chunk_size=32,
              decoder_mask_noise=0.01, encoder_conv_mapping=False)
MODELS = {
    "s": dict(COMMON, width=768, encoder_depth=6, decoder_depth=6, midpoint_shift=True, sliding_window=None,
              decoder_sinusoidal_blocks=0, decoder_conv_mapping=True),
    "l": dict(COMMON, width=1536, encoder_depth=12, decoder_depth=12, midpoint_shift=False, sliding_window=1,
              decoder_sinusoidal_blocks=8, decoder_conv_mapping=False),
    "tiny": dict(COMMON, patch_size=8, latent_dim=8, stride=4, head_dim=8, chunk_size=8, width=24, encoder_depth=2,
                 decoder_depth=2, midpoint_shift=True, sliding_window=None, decoder_sinusoidal_blocks=0,
                 decoder_conv_mapping=True),
}
FULL_SIZE = ("s", "l")


def get_config(arg=None):
    variant = arg or "s"
    if variant not in MODELS:
        raise ValueError(f"configs/same.py: unknown variant {variant!r}; expected one of {sorted(MODELS)}")
    config = ml_collections.ConfigDict()
    config.variant = variant
    rate = 2000 if variant == "tiny" else 44100  # tiny: a toy rate (configs/sa3.py:tiny's)
    config.model = ml_collections.ConfigDict(dict(type="same", sample_rate=rate, **MODELS[variant]))
    config.dtype = "bfloat16" if variant in FULL_SIZE else "float32"  # compute dtype; params stay float32
    config.param_dtype = "float32"
    # long audio: windows of latents, the reference's chunked defaults
    config.chunking = ml_collections.ConfigDict(dict(chunk_size=128, overlap=32))
    return config
