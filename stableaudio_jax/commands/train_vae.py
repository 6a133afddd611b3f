"""``stableaudio-jax train-vae``: train the Oobleck VAE on a folder of audio files (resumable)."""
from __future__ import annotations

import argparse
import logging


def add_parser(sub) -> None:
    p = sub.add_parser("train-vae", help="train the VAE (spectral + adversarial losses) on a folder of audio",
                       description="Train the Oobleck VAE. Re-running the same command resumes from the latest "
                                   "checkpoint in --workdir; Ctrl-C saves a checkpoint and stops.")
    p.add_argument("--config", default="configs/vae.py:sao", help="config file:variant (e.g. configs/vae.py:tiny)")
    p.add_argument("--data", required=True, help="folder of audio files (wav/flac/ogg/mp3; any rate and channels)")
    p.add_argument("--workdir", required=True, help="checkpoints, TensorBoard logs and metrics.jsonl go here")
    p.add_argument("--max-steps", type=int, help="stop after this many more steps (default: config.training.steps)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.training.vae_train import train_vae

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax's per-save INFO lines
    config = load_config(args.config, overrides)
    metrics = train_vae(config, args.workdir, args.data, progress=not args.no_progress, max_steps=args.max_steps)
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith(("train/loss", "train/spectral"))}
    print(f"done: {shown}; checkpoints in {args.workdir}/checkpoints")
    return 0
