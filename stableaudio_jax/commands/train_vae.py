"""``stableaudio-jax train-vae``: train the Oobleck VAE on a folder of audio files (resumable)."""
from __future__ import annotations

import argparse

from stableaudio_jax.commands import add_training_args, setup_logging, training_overrides


def add_parser(sub) -> None:
    p = sub.add_parser("train-vae", help="train the VAE (spectral + adversarial losses) on ingested or raw audio",
                       description="Train the Oobleck VAE. Re-running the same command resumes from the latest "
                                   "checkpoint in --workdir; Ctrl-C saves a checkpoint and stops.")
    add_training_args(p, "configs/vae.py:sao", "configs/vae.py:tiny",
                      "an ingested dataset (`stableaudio-jax ingest` output) or a folder of audio files "
                      "(wav/flac/ogg/mp3; any rate and channels)",
                      "checkpoints, TensorBoard logs and metrics.jsonl go here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.training.vae_train import train_vae

    setup_logging()
    config = load_config(args.config, training_overrides(args, overrides))
    if args.init_from:
        from stableaudio_jax.training.init_from import vae_config_from_model
        config = vae_config_from_model(config, args.init_from, overrides)
    metrics = train_vae(config, args.workdir, args.data, progress=not args.no_progress, max_steps=args.max_steps)
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("train/loss", "train/spectral"))}
    print(f"done: {shown}; checkpoints in {args.workdir}/checkpoints")
    return 0
