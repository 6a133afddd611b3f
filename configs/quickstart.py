"""``stableaudio-jax quickstart`` presets: the whole job (demo data → VAE → latents → denoiser → audio →
evaluation) sized for a machine.

Variants:
  cpu       a 2-core laptop in about 15 minutes: 4 instruments, 1.5-3 s clips at 16 kHz mono, a small VAE (256x
            down, 8x fewer floats per second), a small DiT
  cpu-long  a 2-core machine for about 3 hours (sized so; its training stages are an estimated 2 hours from
            measured step times, see below; the other stages at this size are not measured yet): all 8
            instruments, 2,000 clips (200 held out: 25 per instrument), a VAE 3x the cpu one's parameters with
            the reference's adversarial + feature-matching phase after a spectral warm-up, 512x down to 16
            channels (32x fewer floats per second), and a DiT 5.5x the cpu one's; quickstart resumes stage by
            stage, so it may be stopped and rerun. Its first run (docs/learning.md) failed: the VAE did not learn
            at the cpu preset's 2e-3; at 5e-4 (the preset since) the second run learns, its VAE the ceiling
  gpu       one GPU: all 8 instruments, 5 s clips at 44.1 kHz stereo, SAO's VAE structure at half width (39 M
            parameters, 2048x down to 64 channels: SAO's 64x fewer floats per second, 32x per audio channel) and a
            12 x 512 DiT, both with the reference's hyper-parameters (stable-audio-tools' SAO VAE and DiT training
            sections)
  tpu       a TPU VM host: as gpu, larger batches
  ci        the test suite's size: minutes on 2 cores, three very distinct instruments
Every stage's settings are overridable (``--config.dit.steps=2000``); the VAE and denoiser sections hold overrides
applied to configs/vae.py:tiny and configs/dit.py:tiny (or configs/unet.py:tiny with ``--denoiser unet``).

The text encoder is a small T5 with frozen random weights over a sentencepiece vocabulary trained on the demo
captions: nothing is downloaded, and the denoiser learns what the caption tokens mean (the captions are
attribute lists, which a random frozen encoder keeps apart).
"""
import ml_collections

VAE_BASE = ["model.channels=16", "model.c_mults=(1,2,4,4)", "model.strides=(2,4,4,8)",
            "training.spectral.fft_sizes=(1024,512,256,128,64)", "training.spectral.hop_sizes=(256,128,64,32,16)",
            "training.discriminator.n_ffts=(1024,512,256)", "training.discriminator.hops=(256,128,64)",
            "training.discriminator.filters=16"]
DIT_BASE = ["model.embed_dim=128", "model.depth=4", "model.num_heads=4",
            "model.cond_embed_dim=None", "conditioning.cond_dim=64", "training.timestep_sampler=logit_normal"]
UNET_BASE = ["model.channels=32", "model.multipliers=(1,2,2)", "model.factors=(2,2)",
             "model.num_blocks=(1,1)", "model.attentions=(0,1,1)", "conditioning.cond_dim=64"]

# sample_rate / channels: the model's audio (the demo clips are 44.1 kHz stereo; ingest converts them); CPU presets
# train at 16 kHz mono, a third of the work of 44.1 kHz stereo per second of audio. vae_warmup: batches of
# spectral-only VAE training before the adversarial recipe starts (all of them on CPU: it converges much faster).
# On CPU the VAE also decodes the posterior mean while it trains (vae_sample=False) and has 32 latent channels
# (8x compression of 16 kHz mono): with only 800 steps, decoding noisy posterior samples of a 16-channel latent left
# its reconstructions so smeared that the instrument classifier recognised 44% of them (56% decoding the mean, 62%
# with 32 channels and lr 2e-3; 16 held-out clips; docs/learning.md). The cpu-long preset's 5e-4 left this 800-step
# VAE further from converged (mel distance 2.64 vs 2.52, SI-SDR 17-18 dB lower: benchmarks/cpu_preset_vae_lr.py,
# docs/results/cpu_preset_vae_lr.json), so the cpu preset keeps 2e-3. gpu / tpu keep the reference's recipe.
ALL_INSTRUMENTS = ("piano", "strings", "flute", "organ", "guitar", "choir", "brass", "marimba")
# min_seconds: clip lengths vary from it to `seconds` (shorter than the window: what teaches seconds_total).
# timing_prompts: the evaluation's timing-control generations (lengths spread over the window): 8 in the 15-minute
# cpu run, whose budget has no room for more; 48 where there is time
PRESETS = {
    "ci": dict(clips=24, seconds=1.5, min_seconds=None, instruments=("flute", "marimba", "organ"),
               sample_rate=16000, channels=1, vae_steps=20, vae_warmup=20, vae_batch=8, vae_crop=4096, latent_dim=16,
               vae_lr=2e-3, vae_sample=False, denoiser_steps=40, denoiser_batch=8, crop_frames=32, window_frames=96,
               text_dim=32, text_layers=1, sample_steps=10, eval_clips=3, timing_prompts=6,
               # half the VAE's blocks (the same 256x in two strides) and half the DiT's layers, two of the
               # spectral loss' resolutions: the same code at a fraction of the compile time
               vae_extra=["model.channels=8", "model.c_mults=(1,2)", "model.strides=(8,32)",
                          "training.spectral.fft_sizes=(512,128)", "training.spectral.hop_sizes=(128,32)"],
               dit_extra=["model.depth=2"]),
    "cpu": dict(clips=160, seconds=3.0, min_seconds=1.5, instruments=("piano", "flute", "marimba", "organ"),
                sample_rate=16000, channels=1, vae_steps=800, vae_warmup=800, vae_batch=8, vae_crop=4096,
                latent_dim=32, vae_lr=2e-3, vae_sample=False, denoiser_steps=1000, denoiser_batch=8, crop_frames=192,
                window_frames=192, text_dim=64, text_layers=2, sample_steps=50, eval_clips=12, timing_prompts=8),
    "gpu": dict(clips=2000, seconds=5.0, min_seconds=2.5, instruments=ALL_INSTRUMENTS, sample_rate=44100,
                channels=2, vae_steps=20000, vae_warmup=5000, vae_batch=32, vae_crop=65536, latent_dim=32,
                vae_lr=1e-3, vae_sample=True, denoiser_steps=30000, denoiser_batch=64, crop_frames=256,
                window_frames=1024, text_dim=128, text_layers=4, sample_steps=100, eval_clips=48, timing_prompts=48),
}
# cpu-long: sized from step times measured on the 2-core machine (benchmarks/preset_steps.py,
# docs/results/preset_steps.json): a generator + discriminator pair of adversarial steps costs ~3 warm-up steps, so
# more than half of the VAE's steps are spectral (the cpu preset's 16-filter discriminator and 4096-sample crops: a
# wider discriminator or longer crops did not fit the budget). The VAE is the SAO structure at CPU size: 4 blocks of
# 24-192 channels, 512x down, 16 channels. Its first run (2e-3, the cpu preset's VAE rate) did not learn; 400-step
# runs of this VAE (docs/results/vae_lr_probe.json) moved its latents in time 52 % of their spread at 5e-4, 23 % at
# 2e-3, and 8 % at 2e-3 on 4x longer crops: the second run takes 5e-4. The DiT's rate stays 1e-3 (set for a few
# thousand steps; the reference's 5e-5 is set for runs of a million), now with gradients clipped at norm 1 (the
# first run's loss jumped from 0.011 to 0.59 at step 1,875).
CPU_LONG_VAE = ["model.channels=24", "model.c_mults=(1,2,4,8)", "model.strides=(2,4,8,8)"]
PRESETS["cpu-long"] = dict(
    clips=2000, seconds=3.0, min_seconds=1.5, instruments=ALL_INSTRUMENTS, sample_rate=16000, channels=1,
    vae_steps=3600, vae_warmup=2000, vae_batch=8, vae_crop=4096, latent_dim=16, vae_lr=5e-4, vae_sample=False,
    denoiser_steps=5000, denoiser_batch=8, crop_frames=96, window_frames=96, text_dim=128, text_layers=2,
    sample_steps=50, eval_clips=200, timing_prompts=48, vae_extra=CPU_LONG_VAE,
    dit_extra=["model.embed_dim=256", "model.depth=6", "model.num_heads=4", "training.optimizer.grad_clip=1.0"])
# gpu / tpu: the reference's recipes (stable-audio-tools' SAO VAE and DiT training sections) on bigger models: SAO's
# VAE structure at half width, no spectral warm-up, posterior samples decoded, 7 spectral resolutions, the 5-scale
# discriminator at 64 filters, both optimisers' lrs and InverseLR schedules; the DiT's AdamW 5e-5 with InverseLR
# (1e6, 0.5, 0.99) and uniform (stratified) timesteps. 5 s clips are 108 latent frames at 2048x: a 128-frame window.
REFERENCE_VAE = ["model.channels=64", "model.c_mults=(1,2,4,8,16)", "model.strides=(2,4,4,8,8)",
                 "training.disc_optimizer.lr=3e-4",
                 *(f"training.{o}_optimizer.schedule.{k}" for o in ("gen", "disc")
                   for k in ("inv_gamma=200000", "warmup=0.999")),
                 "training.spectral.fft_sizes=(2048,1024,512,256,128,64,32)",
                 "training.spectral.hop_sizes=(512,256,128,64,32,16,8)",
                 "training.discriminator.n_ffts=(2048,1024,512,256,128)",
                 "training.discriminator.hops=(512,256,128,64,32)", "training.discriminator.filters=64"]
REFERENCE_DIT = ["model.embed_dim=512", "model.depth=12", "model.num_heads=8", "training.optimizer.lr=5e-5",
                 "training.optimizer.schedule.inv_gamma=1000000", "training.optimizer.schedule.warmup=0.99",
                 "training.timestep_sampler=low_discrepancy"]
PRESETS["gpu"].update(vae_warmup=0, vae_lr=1.5e-4, latent_dim=64, crop_frames=128, window_frames=128,
                      vae_extra=REFERENCE_VAE, dit_extra=REFERENCE_DIT)
PRESETS["tpu"] = dict(PRESETS["gpu"], vae_batch=64, denoiser_batch=128)  # a TPU VM host: larger batches


def get_config(arg=None):
    variant = arg or "cpu"
    if variant not in PRESETS:
        raise ValueError(f"configs/quickstart.py: unknown preset {variant!r}; expected one of {sorted(PRESETS)}")
    p = PRESETS[variant]
    config = ml_collections.ConfigDict()
    config.preset = variant
    config.seed = 0
    config.demo = ml_collections.ConfigDict(dict(clips=p["clips"], seconds=p["seconds"], min_seconds=p["min_seconds"],
                                                 instruments=list(p["instruments"])))
    config.audio = ml_collections.ConfigDict(dict(sample_rate=p["sample_rate"], channels=p["channels"]))
    config.text = ml_collections.ConfigDict(dict(d_model=p["text_dim"], num_layers=p["text_layers"], vocab_size=256,
                                                 max_length=48))  # captions are ~35 pieces
    config.vae = ml_collections.ConfigDict(dict(
        config="vae.py:tiny", steps=p["vae_steps"],
        overrides=VAE_BASE + [f"training.batch_size={p['vae_batch']}", f"training.crop_samples={p['vae_crop']}",
                              f"training.warmup_steps={p['vae_warmup']}", f"model.sample_rate={p['sample_rate']}",
                              f"model.audio_channels={p['channels']}", f"model.latent_dim={p['latent_dim']}",
                              f"training.gen_optimizer.lr={p['vae_lr']}",
                              f"training.sample_posterior={p['vae_sample']}", *p.get("vae_extra", [])]))
    config.encode = ml_collections.ConfigDict(dict(window_frames=p["window_frames"], batch_size=8))
    shared = [f"training.batch_size={p['denoiser_batch']}", f"training.crop_frames={p['crop_frames']}"]
    dit = [*DIT_BASE, *shared, f"model.io_channels={p['latent_dim']}", *p.get("dit_extra", [])]
    unet = [*UNET_BASE, *shared, f"model.in_channels={p['latent_dim']}"]
    config.dit = ml_collections.ConfigDict(dict(config="dit.py:tiny", steps=p["denoiser_steps"], overrides=dit))
    config.unet = ml_collections.ConfigDict(dict(config="unet.py:tiny", steps=p["denoiser_steps"], overrides=unet))
    config.generate = ml_collections.ConfigDict(dict(steps=p["sample_steps"], cfg_scale=5.0, prompts=4))
    config.evaluate = ml_collections.ConfigDict(dict(clips=p["eval_clips"], steps=p["sample_steps"],
                                                     timing_prompts=p["timing_prompts"]))
    return config
