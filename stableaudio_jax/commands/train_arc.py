"""``stableaudio-jax train-arc``: adversarial post-training of a rectified-flow DiT into a few-step generator."""
from __future__ import annotations

import argparse

from stableaudio_jax.commands import add_training_args, diffusion_run_config, setup_logging


def add_parser(sub) -> None:
    p = sub.add_parser("train-arc", help="ARC post-training: a rectified-flow DiT → a few-step generator (no CFG)",
                       description="Adversarial Relativistic-Contrastive post-training (arXiv 2505.08175) of the "
                                   "rectified-flow model given by --init-from, on the output of `stableaudio-jax "
                                   "encode`. The discriminator is the model's first training.arc.disc_blocks blocks "
                                   "plus a small head. A finished run exports <workdir>/model, sampled with "
                                   "ping-pong in training.arc.export_steps steps without CFG. Resumable.")
    add_training_args(p, "configs/dit.py:sao", "configs/dit.py:tiny",
                      "a pre-encoded latent dataset (manifest.json + TFRecord shards), or 'synthetic'",
                      "checkpoints, TensorBoard logs and metrics.jsonl go here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.training.arc_train import train_arc

    setup_logging()
    if not args.init_from:
        raise ValueError("train-arc needs --init-from MODEL: a pre-trained rectified-flow DiT (train one, or "
                         "fine-tune SAO with --init-from and --config.diffusion.objective=rectified_flow)")
    config = diffusion_run_config(args, overrides)
    metrics = train_arc(config, args.workdir, args.data, progress=not args.no_progress, max_steps=args.max_steps)
    shown = {k: round(v, 4) for k, v in metrics.items()
             if k in ("train/generator_loss", "train/discriminator_loss", "train/disc_accuracy")}
    print(f"done: {shown}; checkpoints in {args.workdir}/checkpoints")
    return 0
