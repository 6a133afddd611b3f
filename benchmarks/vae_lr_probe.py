"""Short runs of the cpu-long preset's VAE that test why its first 3-hour run did not learn: 400 spectral warm-up
steps per variant (learning rate, crop length), then how much its latents move in time on held-out clips
(``learning_record.latent_motion``: std over frames / std overall; the failed run's VAE: 0.18) and its spectral
loss curve. Writes docs/results/vae_lr_probe.json.

  stableaudio-jax quickstart --workdir runs/long --preset cpu-long   # (its data stages are enough)
  python benchmarks/vae_lr_probe.py --data runs/long/audio --demo-data runs/long/demo_data --workdir runs/vae_exp

A variant whose exported model is already in ``--workdir`` is measured without training again.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

STEPS = 400
VARIANTS = {"A_crop4096_lr2e-3": (4096, 8, 2e-3), "B_crop16384_lr2e-3": (16384, 2, 2e-3),
            "C_crop4096_lr5e-4": (4096, 8, 5e-4)}  # name: (crop samples, batch, learning rate); same audio per step
REPLACED = ("training.crop_samples", "training.batch_size", "training.gen_optimizer.lr", "training.warmup_steps")


def base_overrides() -> list[str]:
    import quickstart
    vae = quickstart.get_config("cpu-long").vae
    return [f"--config.{o}" for o in vae.overrides if not o.startswith(REPLACED)]


def train(workdir: str, data: str, crop: int, batch: int, lr: float) -> None:
    command = ["stableaudio-jax", "train-vae", "--config", "configs/vae.py:tiny", *base_overrides(),
               f"--config.training.crop_samples={crop}", f"--config.training.batch_size={batch}",
               f"--config.training.gen_optimizer.lr={lr}", f"--config.training.warmup_steps={STEPS}",
               f"--config.training.steps={STEPS}", "--config.training.log_every=50",
               f"--config.training.checkpoint_every={STEPS}", "--config.seed=0", "--data", data,
               "--workdir", os.path.join(workdir, "vae"), "--no-progress"]
    subprocess.run(command, check=True)


def curve(workdir: str) -> list[list[float]]:
    with open(os.path.join(workdir, "vae", "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [[r["step"], round(r["train/spectral_loss"], 4), round(r["train/latent_std"], 4)]
            for r in rows if "train/spectral_loss" in r]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the cpu-long run's ingested audio (<workdir>/audio)")
    parser.add_argument("--demo-data", required=True, help="its demo data (<workdir>/demo_data): the held-out clips")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", default="docs/results/vae_lr_probe.json")
    args = parser.parse_args(argv)
    from learning_record import latent_motion
    results = {}
    for name, (crop, batch, lr) in VARIANTS.items():
        run = os.path.join(args.workdir, name)
        if not os.path.isdir(os.path.join(run, "vae", "model")):
            train(run, args.data, crop, batch, lr)
        link = os.path.join(run, "demo_data")
        if not os.path.exists(link):
            os.symlink(os.path.abspath(args.demo_data), link)
        results[name] = {"crop_samples": crop, "batch_size": batch, "learning_rate": lr, "steps": STEPS,
                         "latent_motion": latent_motion(run), "spectral_loss_curve": curve(run)}
        print(name, results[name]["latent_motion"]["ratio"], flush=True)
    out = {"script": "benchmarks/vae_lr_probe.py", "date": time.strftime("%Y-%m-%d"),
           "curve_columns": ["step", "spectral_loss", "latent_std"], "variants": results,
           "note": "one seed, 400 steps each: a probe of the first cpu-long run's failure, not a tuned recipe"}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
