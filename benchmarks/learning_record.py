"""The learning record of a quickstart run: curves, metrics against training steps, spectrograms, one JSON.

  python benchmarks/learning_record.py --workdir runs/quick --out docs/learning \\
      --results docs/results/learning_cpu.json

For every denoiser trained in the workdir (``dit/``, ``unet/``) every kept checkpoint is exported and evaluated on
the held-out test split (the quickstart's classifier, same clips, same seed), so the record shows what each stretch
of training bought; the final step also gets the reference rows (real held-out audio, untrained model). PNGs: the
VAE's and the denoisers' loss curves, instrument accuracy and Fréchet distance against steps, and spectrograms of
generated against real clips for held-out captions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import environment, write_report  # noqa: E402

DENOISERS = ("dit", "unet")


def checkpoint_steps(run_dir: str) -> list[int]:
    folder = os.path.join(run_dir, "checkpoints")
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit()) if os.path.isdir(folder) else []


def evaluate_steps(workdir: str, denoiser: str, clips: int, steps: int, seed: int,
                   timing_prompts: int = 48) -> list[dict]:
    from stableaudio_jax.evaluation.run import run_evaluation
    from stableaudio_jax.training.diffusion_train import export_from_workdir
    run_dir = os.path.join(workdir, denoiser)
    classifier = os.path.join(workdir, "evaluation", "classifier.npz")  # the quickstart's, shared by denoisers
    rows, kept = [], checkpoint_steps(run_dir)
    for step in kept:
        with tempfile.TemporaryDirectory() as tmp:
            model = export_from_workdir(run_dir, os.path.join(tmp, "model"), step)
            result = run_evaluation(os.path.join(workdir, "demo_data"), os.path.join(tmp, "eval"), model=model,
                                    clips=clips, steps=steps, classifier=classifier, seed=seed,
                                    baselines=step == kept[-1], timing_prompts=timing_prompts)
        rows.append({"step": step, **result["sections"]["prompt adherence"]["trained model"],
                     "tail_energy_db": result["sections"]["timing control"]["trained model"]["tail_energy_db"],
                     "final": result if step == kept[-1] else None})
    return rows


def losses(run_dir: str, key: str) -> list[tuple[int, float]]:
    from stableaudio_jax.training.metrics import read_metrics
    return [(m["step"], m[key]) for m in read_metrics(run_dir) if key in m]


def plot_curves(workdir: str, denoisers: list[str], out: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    runs = [("vae", "train/spectral_loss")] + [(d, "train/loss") for d in denoisers]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3))
    for ax, (run, key) in zip(np.atleast_1d(axes), runs):
        points = losses(os.path.join(workdir, run), key)
        ax.plot(*zip(*points))
        ax.set(title=f"{run}: {key.split('/')[1]}", xlabel="step")
    fig.tight_layout()
    path = os.path.join(out, "loss_curves.png")
    fig.savefig(path, dpi=110)
    return path


def plot_metrics(records: dict[str, list[dict]], out: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for denoiser, rows in records.items():
        steps = [r["step"] for r in rows]
        axes[0].plot(steps, [r["instrument_accuracy"] for r in rows], marker="o", label=denoiser)
        axes[1].plot(steps, [r["frechet_distance"] for r in rows], marker="o", label=denoiser)
    axes[0].set(title="instrument accuracy (held-out captions)", xlabel="step", ylim=(0, 1.05))
    axes[1].set(title="Fréchet distance to real clips", xlabel="step")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    path = os.path.join(out, "metrics_vs_step.png")
    fig.savefig(path, dpi=110)
    return path


def plot_spectrograms(workdir: str, denoisers: list[str], out: str) -> str:
    """One row per held-out caption: each denoiser's generation, then the real clip (the quickstart's samples)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    indexes = {d: json.load(open(os.path.join(workdir, "samples", d, "index.json")))["samples"] for d in denoisers}
    rows = indexes[denoisers[0]]
    columns = [(d, "generated") for d in denoisers] + [(denoisers[0], "real")]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(4.5 * len(columns), 1.9 * len(rows)), squeeze=False)
    for i, (row_axes, sample) in enumerate(zip(axes, rows)):
        for ax, (denoiser, key) in zip(row_axes, columns):
            name = indexes[denoiser][i][key].replace(".wav", ".png")
            ax.imshow(Image.open(os.path.join(workdir, "samples", denoiser, name)), aspect="auto")
            ax.set_title(f"{denoiser if key == 'generated' else 'real'}: {sample['caption']}", fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    path = os.path.join(out, "spectrograms.png")
    fig.savefig(path, dpi=110)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a finished `stableaudio-jax quickstart` workdir")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--results", help="JSON file for the numbers")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--steps", type=int, default=50, help="sampling steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-prompts", type=int, default=48,
                        help="timing-control generations per checkpoint, lengths spread over the window")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    denoisers = [d for d in DENOISERS if checkpoint_steps(os.path.join(args.workdir, d))]
    records = {d: evaluate_steps(args.workdir, d, args.clips, args.steps, args.seed, args.timing_prompts) for d in denoisers}
    settings = json.load(open(os.path.join(args.workdir, "quickstart.json")))
    report = {"benchmark": "learning_record", **environment(False), "workdir": os.path.abspath(args.workdir),
              "quickstart": settings, "clips": args.clips, "sampling_steps": args.steps,
              "vae_final": records[denoisers[0]][-1]["final"]["sections"]["autoencoder reconstruction"],
              "denoisers": {d: [{k: v for k, v in r.items() if k != "final"} for r in rows]
                            for d, rows in records.items()},
              "final": {d: rows[-1]["final"]["sections"] for d, rows in records.items()},
              "plots": [plot_curves(args.workdir, denoisers, args.out), plot_metrics(records, args.out),
                        plot_spectrograms(args.workdir, denoisers, args.out)]}
    write_report(report, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
