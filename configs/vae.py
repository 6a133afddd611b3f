"""VAE configs: the Oobleck VAE (Stable Audio Open / 2.0) and the DAC-based VAE (Stable Audio 1.0).

Variants:
  sao       the exact Stable Audio Open 1.0 VAE: 44.1 kHz stereo, channels 128, c_mults [1,2,4,8,16],
            strides [2,4,4,8,8] (2048x), latent 64; 156,112,514 parameters. bfloat16 compute.
  tiny      a few-thousand-parameter VAE with the same structure (8x), float32, for tests.
  sa1       Stable Audio 1.0's VAE (stable-audio-tools' stable_audio_1_0_vae.json): DAC encoder d_model 128,
            strides [4,4,8,8], DAC decoder channels 1536, rates [8,8,4,4], latent 64 (1024x); 133,431,300
            parameters. bfloat16 compute.
  dac-tiny  the DAC VAE at toy size (8x), float32, for tests.
"""
import ml_collections

from stableaudio_jax.parallel.sharding import DEFAULT_RULES

MODELS = {
    "sao": dict(sample_rate=44100, audio_channels=2, channels=128, c_mults=(1, 2, 4, 8, 16),
                strides=(2, 4, 4, 8, 8), latent_dim=64),
    "tiny": dict(sample_rate=44100, audio_channels=2, channels=8, c_mults=(1, 2), strides=(2, 4), latent_dim=4),
    "sa1": dict(type="dac_vae", sample_rate=44100, audio_channels=2, channels=128, strides=(4, 4, 8, 8),
                latent_dim=64, decoder_channels=1536, decoder_rates=(8, 8, 4, 4)),
    "dac-tiny": dict(type="dac_vae", sample_rate=44100, audio_channels=2, channels=4, strides=(2, 4), latent_dim=4,
                     decoder_channels=16, decoder_rates=(4, 2)),
}
OOBLECK = dict(type="oobleck_vae", activation="snake", final_tanh=False)
FULL_SIZE = ("sao", "sa1")


def get_config(arg=None):
    variant = arg or "sao"
    if variant not in MODELS:
        raise ValueError(f"configs/vae.py: unknown variant {variant!r}; expected one of {sorted(MODELS)}")
    config = ml_collections.ConfigDict()
    config.variant = variant

    model = MODELS[variant]
    config.model = ml_collections.ConfigDict(dict(**({} if "type" in model else OOBLECK), remat=False, **model))

    config.dtype = "bfloat16" if variant in FULL_SIZE else "float32"  # compute dtype; params stay float32
    config.param_dtype = "float32"

    # Long-audio encode/decode, in latent frames (stable-audio-tools' defaults).
    config.chunking = ml_collections.ConfigDict(dict(chunk_size=128, overlap=32))

    # Parallelism: the strategy is the mesh shape (data parallel by default; set fsdp/tensor > 1 to shard).
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    config.sharding_rules = DEFAULT_RULES

    config.training = training_config(variant)
    config.distributed = ml_collections.ConfigDict(dict(mode="auto", initialization_timeout=300, heartbeat_timeout=100))
    config.seed = 0
    return config


def training_config(variant):
    """stable-audio-tools' SAO VAE recipe (``stable_audio_2_0_vae.json``); ``tiny`` keeps its shape at toy size."""
    sao = variant in FULL_SIZE  # Stable Audio 1.0's VAE recipe is not published: SAO's is used for it

    def optimizer(lr):
        # tiny: a short warm-up so that a test run of a few hundred steps actually learns
        schedule = (dict(type="inverse_lr", inv_gamma=200_000, power=0.5, warmup=0.999) if sao else
                    dict(type="inverse_lr", inv_gamma=10_000, power=0.5, warmup=0.9))
        return dict(lr=lr, betas=(0.8, 0.99), eps=1e-8, weight_decay=1e-3, grad_clip=0.0, schedule=schedule)

    return ml_collections.ConfigDict(dict(
        batch_size=32 if sao else 8,          # global, over all hosts and devices
        crop_samples=65536 if sao else 2048,  # 1.49 s at 44.1 kHz (tiny: 46 ms)
        steps=1_000_000 if sao else 200,
        accumulation=1,
        gen_optimizer=optimizer(1.5e-4 if sao else 1e-3),
        disc_optimizer=optimizer(3e-4 if sao else 1e-3),
        discriminator=dict(filters=64 if sao else 8, n_ffts=(2048, 1024, 512, 256, 128) if sao else (256, 128, 64),
                           hops=(512, 256, 128, 64, 32) if sao else (64, 32, 16)),
        spectral=dict(fft_sizes=(2048, 1024, 512, 256, 128, 64, 32), hop_sizes=(512, 256, 128, 64, 32, 16, 8),
                      perceptual_weighting=True),
        loss_weights=dict(adversarial=0.1, feature_matching=5.0, spectral=1.0, kl=1e-4),
        warmup_steps=0,                       # batches of spectral-only generator updates before the GAN starts
        sample_posterior=True,                # decode a posterior sample (the reference); False: the mean
        ema=dict(beta=0.9999, power=0.75, inv_gamma=1.0, update_after_step=1,
                 place="device"),  # "host": in pinned host memory; "off": none (training/optim.py)
        data=dict(silence_db=-60.0, max_redraws=50, phase_flip=0.5),
        log_every=100 if sao else 10,
        checkpoint_every=10_000 if sao else 100,
        keep_checkpoints=3,
        profile_steps=0,                      # > 0: a JAX profiler trace of that many steps after the first
        # before the first step: refuse a compiled step that needs more memory per device than a device has
        # (training/memory_fit.py); `--force` sets check_memory False; None = the device's (host's) own figure
        check_memory=True,
        device_memory_gib=None,
    ))
