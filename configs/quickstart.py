"""``stableaudio-jax quickstart`` presets: the whole job (demo data → VAE → latents → denoiser → audio →
evaluation) sized for a machine.

Variants:
  cpu   a 2-core laptop in about 15 minutes: 4 instruments, 3 s clips, a small VAE (256x), a small DiT
  gpu   one lent GPU: all 8 instruments, 5 s clips, bigger models, longer training
  tpu   a TPU VM host: as gpu, larger batches
  ci    the test suite's size: minutes on 2 cores, three very distinct instruments
Every stage's settings are overridable (``--config.dit.steps=2000``); the VAE and denoiser sections hold overrides
applied to configs/vae.py:tiny and configs/dit.py:tiny (or configs/unet.py:tiny with ``--denoiser unet``).

The text encoder is a small T5 with frozen random weights over a sentencepiece vocabulary trained on the demo
captions: nothing is downloaded, and the denoiser learns what the caption tokens mean (the captions are
attribute lists, which a random frozen encoder keeps apart).
"""
import ml_collections

VAE_BASE = ["model.channels=16", "model.c_mults=(1,2,4,4)", "model.strides=(2,4,4,8)", "model.latent_dim=16",
            "training.spectral.fft_sizes=(2048,1024,512,256,128,64)",
            "training.spectral.hop_sizes=(512,256,128,64,32,16)",
            "training.discriminator.n_ffts=(1024,512,256)", "training.discriminator.hops=(256,128,64)",
            "training.discriminator.filters=16"]
DIT_BASE = ["model.io_channels=16", "model.embed_dim=192", "model.depth=4", "model.num_heads=4",
            "model.cond_embed_dim=None", "conditioning.cond_dim=64", "training.timestep_sampler=logit_normal"]
UNET_BASE = ["model.in_channels=16", "model.channels=32", "model.multipliers=(1,2,2)", "model.factors=(2,2)",
             "model.num_blocks=(1,1)", "model.attentions=(0,1,1)", "conditioning.cond_dim=64"]

PRESETS = {
    "ci": dict(clips=24, seconds=1.5, instruments=("flute", "marimba", "organ"), vae_steps=20, vae_batch=8,
               vae_crop=8192, denoiser_steps=40, denoiser_batch=8, crop_frames=16, window_frames=32,
               text_dim=32, text_layers=1, sample_steps=10, eval_clips=3),
    "cpu": dict(clips=160, seconds=3.0, instruments=("piano", "flute", "marimba", "organ"), vae_steps=600,
                vae_batch=8, vae_crop=16384, denoiser_steps=1500, denoiser_batch=16, crop_frames=64,
                window_frames=512, text_dim=64, text_layers=2, sample_steps=50, eval_clips=12),
    "gpu": dict(clips=2000, seconds=5.0, instruments=("piano", "strings", "flute", "organ", "guitar", "choir", "brass",
                                                      "marimba"), vae_steps=20000, vae_batch=32, vae_crop=65536,
                denoiser_steps=30000, denoiser_batch=64, crop_frames=256, window_frames=1024, text_dim=128,
                text_layers=4, sample_steps=100, eval_clips=48),
    "tpu": dict(clips=2000, seconds=5.0, instruments=("piano", "strings", "flute", "organ", "guitar", "choir", "brass",
                                                      "marimba"), vae_steps=20000, vae_batch=64, vae_crop=65536,
                denoiser_steps=30000, denoiser_batch=128, crop_frames=256, window_frames=1024, text_dim=128,
                text_layers=4, sample_steps=100, eval_clips=48),
}


def get_config(arg=None):
    variant = arg or "cpu"
    if variant not in PRESETS:
        raise ValueError(f"configs/quickstart.py: unknown preset {variant!r}; expected one of {sorted(PRESETS)}")
    p = PRESETS[variant]
    config = ml_collections.ConfigDict()
    config.preset = variant
    config.seed = 0
    config.demo = ml_collections.ConfigDict(dict(clips=p["clips"], seconds=p["seconds"],
                                                 instruments=list(p["instruments"])))
    config.text = ml_collections.ConfigDict(dict(d_model=p["text_dim"], num_layers=p["text_layers"], vocab_size=256,
                                                 max_length=24))
    config.vae = ml_collections.ConfigDict(dict(
        config="vae.py:tiny", steps=p["vae_steps"],
        overrides=VAE_BASE + [f"training.batch_size={p['vae_batch']}", f"training.crop_samples={p['vae_crop']}"]))
    config.encode = ml_collections.ConfigDict(dict(window_frames=p["window_frames"], batch_size=8))
    shared = [f"training.batch_size={p['denoiser_batch']}", f"training.crop_frames={p['crop_frames']}"]
    config.dit = ml_collections.ConfigDict(dict(config="dit.py:tiny", steps=p["denoiser_steps"],
                                                overrides=DIT_BASE + shared))
    config.unet = ml_collections.ConfigDict(dict(config="unet.py:tiny", steps=p["denoiser_steps"],
                                                 overrides=UNET_BASE + shared))
    config.generate = ml_collections.ConfigDict(dict(steps=p["sample_steps"], cfg_scale=5.0, prompts=4))
    config.evaluate = ml_collections.ConfigDict(dict(clips=p["eval_clips"], steps=p["sample_steps"]))
    return config
