"""``stableaudio-jax export``: a training run's checkpoint → a stored model (``generate`` / ``encode`` read it)."""
from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a training run's checkpoint as a stored model",
                       description="Export the latest (or --step) checkpoint of a `train-vae` run (a stored VAE) or "
                                   "of a `train` run (a text-to-audio model with the data's T5 and VAE, or the "
                                   "diffusion model alone when they are unknown), finished or not. Finished runs "
                                   "export <workdir>/model by themselves.")
    p.add_argument("--workdir", required=True, help="the run's --workdir")
    p.add_argument("--out", help="output directory (default: <workdir>/model)")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--merged", action="store_true",
                   help="a LoRA run: the base model with the adapter merged in (default: the adapter alone)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    from stableaudio_jax.commands import setup_logging
    from stableaudio_jax.store.builders import VAE_TYPES

    if overrides:
        raise ValueError(f"export takes no --config overrides; got {' '.join(overrides)}")
    from stableaudio_jax import paths
    setup_logging()
    config_path = paths.join(args.workdir, "config.json")
    if not paths.isfile(config_path):
        raise FileNotFoundError(f"{args.workdir}: no config.json; expected a train or train-vae --workdir")
    kind = paths.read_json(config_path).get("model", {}).get("type")
    if kind in VAE_TYPES:
        from stableaudio_jax.training.vae_train import export_vae
        path = export_vae(args.workdir, args.out, args.step)
    else:
        from stableaudio_jax.training.diffusion_train import export_from_workdir
        path = export_from_workdir(args.workdir, args.out, args.step, args.merged)
    from stableaudio_jax.store import read_info
    info = read_info(path)
    print(f"wrote {path} ({info.kind}, step {info.provenance.get('step')}, weights sha256 "
          f"{str(info.weights_sha256)[:12]}...)")
    return 0
