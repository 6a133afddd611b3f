"""The diffusion trainer's settings, shared by configs/dit.py and configs/unet.py.

``sao``/``sa1`` follow stable-audio-tools' recipes (SAO ``training`` section: AdamW 5e-5, betas (0.9, 0.999),
weight decay 1e-3, InverseLR inv_gamma 1e6 / power 0.5 / warmup 0.99, EMA 0.9999 power 3/4 on the denoiser only,
CFG dropout 0.1, uniform (Sobol) timesteps, no padding mask in the loss, demos every 2000 steps with 250 steps);
``tiny`` keeps the shape at toy size with a learning rate that shows learning within a test's few hundred steps.
"""
import ml_collections

DEMO_PROMPTS = ("Amen break 174 BPM", "A beautiful piano arpeggio grows to a full beautiful orchestral piece",
                "Birds singing in the forest", "Soft rain on a tin roof, distant thunder")


def training_config(full_size: bool, crop_frames: int, lr: float | None = None):
    schedule = (dict(type="inverse_lr", inv_gamma=1_000_000, power=0.5, warmup=0.99) if full_size else
                dict(type="inverse_lr", inv_gamma=10_000, power=0.5, warmup=0.9))
    return ml_collections.ConfigDict(dict(
        batch_size=256 if full_size else 8,    # global, over all hosts and devices
        crop_frames=crop_frames,               # latent frames per example (SAO: 1024 = 47.55 s)
        steps=1_000_000 if full_size else 300,
        accumulation=1,
        optimizer=dict(lr=lr or (5e-5 if full_size else 1e-3), betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-3,
                       grad_clip=0.0, schedule=schedule, mu_dtype=None),
        ema=dict(beta=0.9999, power=0.75, inv_gamma=1.0, update_after_step=1,
                 place="device"),  # "host": in pinned host memory; "off": none (training/optim.py)
        # LoRA (rank > 0, with --init-from): adapters on the attention (or "attention+mlp", or regexes of layer
        # paths) of a frozen base; alpha / rank scales them; kind "dora-rows" / "dora-cols": DoRA (models/lora.py)
        lora=dict(rank=0, alpha=16.0, targets="attention", dropout=0.0, kind="lora", base_sha256=""),
        # train-arc (training/arc_steps.py): the discriminator is the generator's first disc_blocks blocks + a
        # small head; its own AdamW; the export samples ping-pong with export_steps steps and no CFG
        arc=dict(disc_blocks=12 if full_size else 1, head_hidden=256 if full_size else 32, contrastive_weight=1.0,
                 export_steps=8, disc_optimizer=dict(lr=lr or (5e-5 if full_size else 1e-3), betas=(0.9, 0.999),
                                                     eps=1e-8, weight_decay=0.0, grad_clip=0.0,
                                                     schedule=dict(type="constant"), mu_dtype=None)),
        timestep_sampler="low_discrepancy",    # stratified uniform: the role of the reference's scrambled Sobol
        cfg_dropout=0.1,
        mask_padding=False,                    # the reference trains the model to output the padding silence
        data=dict(shuffle_buffer=256 if full_size else 16, on_corrupt="raise", encoder_config_hash="",
                  synthetic_text_length=128),  # encoder_config_hash: set from the data by the first run
        demo=dict(every=2000 if full_size else 0, prompts=list(DEMO_PROMPTS[:3] if full_size else DEMO_PROMPTS[:1]),
                  seconds=30.0 if full_size else 0.0, steps=250 if full_size else 20, cfg_scale=6.0,
                  vae="", text_encoder=""),    # "" = the sources recorded by `stableaudio-jax encode`
        log_every=100 if full_size else 10,
        checkpoint_every=10_000 if full_size else 100,
        keep_checkpoints=3,
        profile_steps=0,                      # > 0: a JAX profiler trace of that many steps after the first
        # before the first step: refuse a compiled step that needs more memory per device than a device has
        # (training/memory_fit.py); `--force` sets check_memory False; None = the device's (host's) own figure
        check_memory=True,
        device_memory_gib=None,
    ))
