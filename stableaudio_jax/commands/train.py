"""``stableaudio-jax train``: train the denoiser (DiT or U-Net) on pre-encoded latents (resumable)."""
from __future__ import annotations

import argparse

from stableaudio_jax.commands import add_training_args, diffusion_run_config, setup_logging


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train the diffusion model (DiT or U-Net) on pre-encoded TFRecord latents",
                       description="Train the denoiser on the output of `stableaudio-jax encode` (or --data "
                                   "synthetic). Re-running the same command resumes from the latest checkpoint in "
                                   "--workdir; Ctrl-C saves a checkpoint and stops. A finished run (DiT or U-Net) "
                                   "exports <workdir>/model for `stableaudio-jax generate --checkpoint`.")
    add_training_args(p, "configs/dit.py:sao", "configs/dit.py:tiny, configs/unet.py:tiny",
                      "a pre-encoded latent dataset (manifest.json + TFRecord shards), or 'synthetic'",
                      "checkpoints, demos, TensorBoard logs and metrics.jsonl go here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.training.diffusion_train import train_diffusion

    setup_logging()
    config = diffusion_run_config(args, overrides)
    metrics = train_diffusion(config, args.workdir, args.data, progress=not args.no_progress,
                              max_steps=args.max_steps)
    shown = {k: round(v, 4) for k, v in metrics.items() if k in ("train/loss", "train/grad_norm")}
    print(f"done: {shown}; checkpoints in {args.workdir}/checkpoints")
    return 0
