"""Stable Audio 3's diffusion transformer (``stableaudio_jax.models.sa3_dit.SA3DiT``) and the settings of its
published models (shapes from the reference's modules and its hard-coded MLX ports).

Variants:
  small   Small-Music / Small-SFX: 20 blocks of 1024 (16 heads x 64), GLU 4096, 64 memory tokens, SAME-S.
          459,130,880 parameters in 437 tensors (the checkpoint adds a rotary buffer); the SA3 README's 433 M leaves out the blocks' inpainting
          embedders (to_local_embed: 26.2 M).
  medium  Medium: 24 blocks of 1536 (24 heads x 64), differential attention, GLU 6144, SAME-L.
          1,453,170,176 parameters in 521 tensors (1.39 B without the inpainting embedders; README: 1.4 B).
  tiny    the Small structure at toy size (2 blocks of 64, 8 latent channels), float32, for tests.
Each variant's published checkpoints come as a post-trained ``rf_denoiser`` (sampled with ping-pong, 8 steps, no
guidance) and a ``-base`` rectified-flow model (for fine-tuning; about 50 steps with guidance).

Conditioning: the prompt's T5Gemma states (256 tokens of 768, padded positions replaced by a learned embedding)
and a seconds_total token (clamped to [0, 384] s, exponential Fourier features, a Linear to 768) are the 257
cross-attention tokens; seconds_total is also the global conditioning. The latent length follows the duration:
``ceil((seconds + 6) * 44100 / 4096)`` frames rounded up to even, the 6 s of padding and the rest masked.
"""
import ml_collections

from stableaudio_jax.configs import diffusion_training
from stableaudio_jax.parallel.sharding import DEFAULT_RULES

DIT = dict(io_channels=256, cond_token_dim=768, global_cond_dim=768, local_cond_dim=257, num_memory_tokens=64,
           timestep_features_dim=256, ff_mult=4, norm_eps=1e-5, qk_norm_eps=1e-6)
MODELS = {
    "small": dict(DIT, embed_dim=1024, depth=20, num_heads=16, differential=False),
    "medium": dict(DIT, embed_dim=1536, depth=24, num_heads=24, differential=True),
    "tiny": dict(DIT, io_channels=8, cond_token_dim=16, global_cond_dim=16, local_cond_dim=9, num_memory_tokens=4,
                 embed_dim=64, depth=2, num_heads=1, differential=False),
}
AUTOENCODERS = {"small": "same.py:s", "medium": "same.py:l", "tiny": "same.py:tiny"}
FULL_SIZE = ("small", "medium")


def get_config(arg=None):
    variant = arg or "small"
    if variant not in MODELS:
        raise ValueError(f"configs/sa3.py: unknown variant {variant!r}; expected one of {sorted(MODELS)}")
    tiny = variant == "tiny"
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.model = ml_collections.ConfigDict(dict(type="sa3_dit", scan_layers=not tiny, remat="none",
                                                  attention_impl="auto", **MODELS[variant]))
    config.dtype = "float32" if tiny else "bfloat16"  # compute dtype; params stay float32
    config.param_dtype = "float32"
    config.autoencoder = AUTOENCODERS[variant]
    config.conditioning = ml_collections.ConfigDict(dict(
        text_encoder="t5gemma", max_length=8 if tiny else 256, text_dim=16 if tiny else 768,
        seconds_max=384.0, seconds_features=256))
    # max_frames: Small's cap is the reference's default sample_size (5,292,032 samples, 120 s with the padding);
    # Medium's follows the SA3 README's 380 s (its shipped sample_size was not available here). tiny: 2 kHz audio,
    # SAME tiny's 32x, 8 padding frames, at most 64 frames (1.024 s)
    config.generation = ml_collections.ConfigDict(dict(
        sample_rate=2000 if tiny else 44100, duration_padding_seconds=0.128 if tiny else 6.0, frame_multiple=2,
        max_frames={"small": 1292, "medium": 4096, "tiny": 64}[variant], sampler="euler", steps=50,
        cfg_scale=1.0, apg_scale=1.0))
    # what `train` trains: a "-base" (rectified-flow) model, sampled with Euler; the published post-trained models
    # (converted, not built from this file) are rf_denoiser, sampled with ping-pong at 8 steps
    config.diffusion = ml_collections.ConfigDict(dict(objective="rectified_flow"))
    _add_training(config, tiny)
    return config


def _add_training(config, tiny: bool) -> None:
    """``train`` on SA3: rectified flow on whole clips of any length up to ``crop_frames`` (padded and masked),
    the reference's random inpainting masks, length shift and masked loss (training/sa3_steps.py). A model
    trained from scratch is a "-base" (rectified-flow) model; ``--init-from`` a converted checkpoint fine-tunes it."""
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.sharding_rules = DEFAULT_RULES
    t = diffusion_training.training_config(not tiny, config.generation.max_frames)
    t.timestep_sampler = "logit_normal"  # the SA3 models' training sampler, then shifted by length
    t.mask_padding = True                # frames past a clip never reach the loss (always, for SA3)
    t.demo.every = 0                     # demos render through the SAO pipeline; SA3 runs show `generate` instead
    # LoRA as the reference's train_lora.py sets it (rank 0 = off; it uses 16 with alpha = rank): DoRA with
    # per-row magnitudes on every layer of the DiT. Its conditioner's seconds_total embedding, which the reference
    # adapts too, stays frozen here (its docs advise `--exclude seconds_total` on small datasets)
    t.lora.update(targets="all", kind="dora-rows")
    # inpainting masks per example (the reference's types 0, 1, 2): segments given, nothing given, a prefix given
    # context_loss_weight: the given frames' loss weight (the reference's mask_loss_weight, default 0: the model is
    # not taught to reproduce the given latents, and generation does not paste them back)
    t.sa3 = ml_collections.ConfigDict(dict(inpaint_probabilities=(0.1, 0.8, 0.1), length_shift=True,
                                           context_loss_weight=0.0))
    config.training = t
    config.distributed = ml_collections.ConfigDict(dict(mode="auto", initialization_timeout=300,
                                                        heartbeat_timeout=100))
    config.seed = 0
