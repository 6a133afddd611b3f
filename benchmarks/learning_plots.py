"""The learning record's pictures (``learning_record.py``): loss curves, metrics against steps with their 95 %
intervals, and per instrument a generated clip's log-mel spectrogram beside the real clip of the same caption."""
from __future__ import annotations

import os

import numpy as np

# the VAE's logged terms: the spectral loss throughout, the adversarial ones once the adversarial phase starts
VAE_TERMS = ("train/spectral_loss", "train/feature_matching_loss", "train/loss_adv", "train/discriminator_loss")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def losses(run_dir: str, key: str) -> list[tuple[int, float]]:
    from stableaudio_jax.training.metrics import read_metrics
    return [(m["step"], m[key]) for m in read_metrics(run_dir) if key in m]


def plot_curves(workdir: str, denoisers: list[str], out: str) -> str:
    """The VAE's loss terms (one panel) and each denoiser's training loss (one panel each)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 1 + len(denoisers), figsize=(4.4 * (1 + len(denoisers)), 3))
    axes = np.atleast_1d(axes)
    for key in VAE_TERMS:
        points = losses(os.path.join(workdir, "vae"), key)
        if points:
            axes[0].plot(*zip(*points), label=key.split("/")[1], linewidth=0.9)
    axes[0].set(title="vae: loss terms", xlabel="step", yscale="log")
    axes[0].legend(fontsize=7)
    for ax, denoiser in zip(axes[1:], denoisers):
        ax.plot(*zip(*losses(os.path.join(workdir, denoiser), "train/loss")), linewidth=0.9)
        ax.set(title=f"{denoiser}: loss", xlabel="step")
    fig.tight_layout()
    path = os.path.join(out, "loss_curves.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _with_interval(ax, rows: list[dict], key: str, label: str) -> None:
    steps = [r["step"] for r in rows]
    values = np.asarray([r[key] for r in rows], float)
    intervals = [r.get(f"{key}_ci95") for r in rows]
    if all(intervals):
        low, high = np.asarray(intervals, float).T
        ax.errorbar(steps, values, yerr=[values - low, high - values], marker="o", capsize=3, label=label)
    else:
        ax.plot(steps, values, marker="o", label=label)


def plot_metrics(records: dict[str, list[dict]], out: str) -> str:
    """Instrument accuracy (both judges), Fréchet distance and energy after ``seconds_total`` against steps."""
    plt = _pyplot()
    panels = (("instrument_accuracy", "instrument accuracy (both judges)"),
              ("frechet_distance", "Fréchet distance to real clips"),
              ("tail_energy_db", "energy after seconds_total (dB)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3))
    for ax, (key, title) in zip(axes, panels):
        for denoiser, rows in records.items():
            _with_interval(ax, rows, key, denoiser)
        ax.set(title=title, xlabel="step")
        ax.legend(fontsize=7)
    axes[0].set_ylim(0, 1.05)
    fig.tight_layout()
    path = os.path.join(out, "metrics_vs_step.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_examples(examples: dict[str, list[dict]], out: str) -> str:
    """One row per instrument: each denoiser's generation, then the real clip of the same held-out caption."""
    plt = _pyplot()
    denoisers = list(examples)
    rows = examples[denoisers[0]]
    columns = [(d, "generated") for d in denoisers] + [(denoisers[0], "real")]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(3.6 * len(columns), 1.25 * len(rows)), squeeze=False)
    for i, row_axes in enumerate(axes):
        for ax, (denoiser, kind) in zip(row_axes, columns):
            entry = examples[denoiser][i]
            ax.imshow(entry[f"{kind}_mel_db"], origin="lower", aspect="auto", vmin=-80, vmax=0, cmap="magma")
            name = denoiser if kind == "generated" else "real"
            ax.set_title(f"{entry['instrument']}: {name}", fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    path = os.path.join(out, "spectrograms.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
