"""Few-step generation measured fairly: quality against sampler steps for a rectified-flow model (Euler with CFG,
ping-pong with and without CFG) and for the same model after ARC post-training (ping-pong, no CFG), over several
training seeds, with the ARC learning rate chosen on a validation split and every figure reported on a test split.

Data: a latent dataset with a known answer. Four prompts (random text embeddings), each with its own latent
pattern (a sinusoid over frames with a prompt-specific frequency, channel phases and amplitude); a random phase
and noise per example. Per seed: `train` (rectified flow, tiny DiT) → `train-arc --init-from` it.

Quality, on generated latents of every prompt (no VAE involved):
- spectral distance: L2 between the mean magnitude spectrum (over frames, per channel) of the generated latents
  and of real ones of the same prompt, relative to the real spectrum's norm (0 = identical);
- prompt accuracy: how often a generated latent's spectrum is nearest to its own prompt's real spectrum.
The validation and test splits each have their own real examples and their own sampling noise. Speed: seconds
per generation call (batch of 32) over --calls timed calls after a warm-up, model passes per second and seconds
of SAO audio per second (2,048 samples per latent frame at 44.1 kHz).

    python benchmarks/few_step_bench.py --workdir /tmp/fs --out docs/results/few_step_cpu.json \
        --plot docs/results/few_step_cpu.png
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

PROMPTS, TEXT_LENGTH, TEXT_DIM, FRAMES, CHANNELS = 4, 8, 32, 64, 4
SAO_SECONDS_PER_FRAME = 2048 / 44100


def pattern(prompt: int, phase: float, rng) -> np.ndarray:
    t = np.arange(FRAMES)[:, None]
    freq = (prompt + 1) * 2 / FRAMES
    amp = 0.6 + 0.2 * prompt
    x = amp * np.sin(2 * np.pi * freq * t + phase + np.arange(CHANNELS) * (prompt + 1) * 0.7)
    return (x + 0.05 * rng.standard_normal((FRAMES, CHANNELS))).astype(np.float32)


def write_dataset(directory: str, per_prompt: int = 64) -> tuple[str, np.ndarray]:
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.data.latent_records import LatentRecord, write_manifest
    from stableaudio_jax.data.tfrecord import TFRecordWriter
    rng = np.random.default_rng(0)
    texts = rng.standard_normal((PROMPTS, TEXT_LENGTH, TEXT_DIM)).astype(np.float16)
    shards = []
    os.makedirs(directory, exist_ok=True)
    for p in range(PROMPTS):
        name = f"latents-{p:05d}-of-{PROMPTS:05d}.tfrecord"
        with TFRecordWriter(os.path.join(directory, name)) as writer:
            for i in range(per_prompt):
                record = LatentRecord(latents=pattern(p, rng.uniform(0, 2 * np.pi), rng), latent_length=FRAMES,
                                      seconds_start=0.0, seconds_total=FRAMES * SAO_SECONDS_PER_FRAME,
                                      text_mask=np.ones(TEXT_LENGTH, bool), caption=f"prompt {p}",
                                      source_id=f"{p}-{i}", window_index=0, text_embeddings=texts[p])
                writer.write(record.to_bytes())
        shards.append({"file": name, "records": per_prompt})
    write_manifest(directory, {
        "format": "stableaudio-jax/latents", "version": 1, "encoder_config_hash": "f3a1b2c3d4e5f607",
        "latent_channels": CHANNELS, "latent_frames": FRAMES, "sample_rate": 44100, "downsampling_ratio": 2048,
        "text": "embeddings", "text_length": TEXT_LENGTH, "text_dim": TEXT_DIM, "shards": shards,
        "records": PROMPTS * per_prompt, "encoder_config": {"vae": load_config("configs/vae.py:tiny").model.to_dict()}})
    return directory, texts.astype(np.float32)


def spectrum(latents: np.ndarray) -> np.ndarray:
    """Mean magnitude spectrum over frames, per channel: [N, F, C] → [N, F//2 + 1, C]."""
    return np.abs(np.fft.rfft(latents - latents.mean(axis=1, keepdims=True), axis=1))


def references(seed: int, count: int = 64) -> np.ndarray:
    """Mean real spectrum per prompt from ``count`` fresh examples each: one draw per evaluation split."""
    rng = np.random.default_rng(seed)
    return np.stack([spectrum(np.stack([pattern(p, rng.uniform(0, 2 * np.pi), rng) for _ in range(count)]))
                     .mean(0) for p in range(PROMPTS)])


def quality(generated: np.ndarray, prompts: np.ndarray, refs: np.ndarray) -> dict:
    spectra = spectrum(generated)
    distance = [np.linalg.norm(spectra[prompts == p].mean(0) - refs[p]) / np.linalg.norm(refs[p])
                for p in range(PROMPTS)]
    nearest = np.argmin([[np.linalg.norm(s - r) for r in refs] for s in spectra], axis=1)
    return {"spectral_distance": float(np.mean(distance)), "prompt_accuracy": float(np.mean(nearest == prompts))}


# Each split has its own real examples (for the reference spectra) and its own sampling noise, so a setting chosen
# on validation has never seen the test draws.
SPLITS = {"validation": {"reference_seed": 101, "noise_seed": 1001},
          "test": {"reference_seed": 202, "noise_seed": 2002}}


def make_sampler(model, texts, batch: int, sampler: str, steps: int, cfg_scale: float):
    """One jitted generation call ``run(params, key)`` for a batch cycling through the prompts. The weights are an
    argument, not a constant, so every seed's model and the ARC model reuse one compiled program per setting."""
    from stableaudio_jax.diffusion.samplers import sample
    prompts = np.arange(batch) % PROMPTS
    text = jnp.asarray(texts[prompts])
    mask = jnp.ones(text.shape[:2], bool)
    seconds = jnp.full((batch,), FRAMES * SAO_SECONDS_PER_FRAME)

    @jax.jit
    def run(params, key):
        cond = model.condition(params, text, mask, jnp.zeros_like(seconds), seconds)
        noise_key, sample_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, (batch, FRAMES, CHANNELS))
        if cfg_scale == 1.0:
            fn = lambda x, t: model.predict(params, x, t, cond)  # noqa: E731
        else:
            fn = lambda x, t: model.guided(params, x, t, cond, cfg_scale)  # noqa: E731
        return sample(fn, noise, sample_key, objective="rectified_flow", sampler=sampler, steps=steps)
    return run, prompts


def spread(values) -> dict:
    return {"median": float(np.median(values)), "min": float(np.min(values)), "max": float(np.max(values))}


def score(run, prompts, params, split: str) -> dict:
    """Quality of one model on one split: its own noise draw, compared with that split's real spectra."""
    seeds = SPLITS[split]
    latents = np.asarray(run(params, jax.random.key(seeds["noise_seed"])))
    return quality(latents, prompts, references(seeds["reference_seed"]))


def time_calls(run, params, calls: int) -> list[float]:
    """Seconds of ``calls`` generation calls after a warm-up call (compile, allocator)."""
    jax.block_until_ready(run(params, jax.random.key(0)))
    times = []
    for i in range(calls):
        started = time.perf_counter()
        jax.block_until_ready(run(params, jax.random.key(i + 1)))
        times.append(time.perf_counter() - started)
    return times


def setting_row(name: str, model, per_seed_params: list, texts, setting: tuple, batch: int, calls: int) -> dict:
    """One table row: the setting's test-split quality for every seed's model (median and range over seeds) and
    its speed as ``calls`` timed calls (median and range)."""
    sampler, steps, cfg_scale = setting
    run, prompts = make_sampler(model, texts, batch, sampler, steps, cfg_scale)
    seconds = time_calls(run, per_seed_params[0], calls)
    per_seed = [score(run, prompts, params, "test") for params in per_seed_params]
    call = float(np.median(seconds))
    row = dict(model=name, sampler=sampler, steps=steps, cfg_scale=cfg_scale, batch=batch,
               seconds_per_call=spread(seconds), call_seconds=seconds, seeds=len(per_seed), per_seed=per_seed,
               spectral_distance=spread([q["spectral_distance"] for q in per_seed]),
               prompt_accuracy=spread([q["prompt_accuracy"] for q in per_seed]),
               model_passes_per_s=steps * (1 if cfg_scale == 1.0 else 2) / call,
               sao_audio_seconds_per_s=batch * FRAMES * SAO_SECONDS_PER_FRAME / call)
    print(json.dumps({k: v for k, v in row.items() if k not in ("per_seed", "call_seconds")}))
    return row


def plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label in sorted({(r["model"], r["sampler"], r["cfg_scale"]) for r in rows}):
        part = [r for r in rows if (r["model"], r["sampler"], r["cfg_scale"]) == label]
        steps = [r["steps"] for r in part]
        name = f"{label[0]} ({label[1]}, cfg {label[2]:g})"
        for ax, key in zip(axes, ("spectral_distance", "seconds_per_call")):
            mid = np.array([r[key]["median"] for r in part])
            span = np.array([[m - r[key]["min"], r[key]["max"] - m] for m, r in zip(mid, part)]).T
            ax.errorbar(steps, mid, yerr=span, fmt="o-", capsize=3, label=name)
    titles = ("spectral distance to real, test split (median, min-max over seeds)",
              "seconds per call (median, min-max over calls)")
    axes[1].set_yscale("log")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log")
        ax.set_xlabel("sampler steps")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _span(d: dict, fmt: str) -> str:
    return f"{d['median']:{fmt}} ({d['min']:{fmt}}–{d['max']:{fmt}})"


def markdown_table(result: dict) -> str:
    """docs/benchmarks.md's table, every figure from ``result``: quality as the median (min–max) over seeds on
    the test split, seconds per call as the median (min–max) over the timed calls."""
    lines = ["| model | sampler | CFG | steps | spectral distance | prompt accuracy | s / call | SAO audio s / s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['sampler']} | {r['cfg_scale']:g} | {r['steps']} | "
                     f"{_span(r['spectral_distance'], '.3f')} | {_span(r['prompt_accuracy'], '.2f')} | "
                     f"{_span(r['seconds_per_call'], '.2f')} | {r['sao_audio_seconds_per_s']:.1f} |")
    return "\n".join(lines)


def train_runs(root: str, data: str, seed: int, args, arc_lr: float | None) -> dict:
    """The seed's rectified-flow model and, with ``arc_lr``, its ARC post-training; a finished run in ``root``
    is reused (training resumes at its end), so reruns re-time without retraining."""
    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.training.arc_train import train_arc
    from stableaudio_jax.training.diffusion_train import train_diffusion
    from stableaudio_jax.training.init_from import diffusion_config_from_model
    loop = [f"training.crop_frames={FRAMES}", "training.log_every=50", "training.checkpoint_every=100000",
            f"seed={seed}"]
    rf = os.path.join(root, f"rf_seed{seed}")
    started = time.perf_counter()
    train_diffusion(load_config("configs/dit.py:tiny", loop + ["diffusion.objective=rectified_flow",
                                                               f"training.steps={args.teacher_steps}"]),
                    rf, data, progress=not args.no_progress)
    runs = {"rf": rf, "rf_train_seconds": time.perf_counter() - started}
    if arc_lr is not None:
        arc = os.path.join(root, f"arc_lr{arc_lr:g}_seed{seed}")
        config = diffusion_config_from_model(load_config("configs/dit.py:tiny", loop + [
            f"training.steps={args.arc_steps}", f"training.optimizer.lr={arc_lr}",
            f"training.arc.disc_optimizer.lr={arc_lr}"]), os.path.join(rf, "model"))
        started = time.perf_counter()
        train_arc(config, arc, data, progress=not args.no_progress)
        runs.update(arc=arc, arc_train_seconds=time.perf_counter() - started)
    return runs


def choose_arc_lr(root: str, data: str, texts, args) -> tuple[float, list[dict]]:
    """The ARC learning rate, chosen on the validation split only (seed 0, ping-pong 8 steps without CFG: the
    setting the export samples with). Prompt accuracy first, spectral distance breaks ties."""
    from stableaudio_jax.store import load_diffusion
    tried = []
    for lr in args.arc_lrs:
        arc = load_diffusion(os.path.join(train_runs(root, data, 0, args, lr)["arc"], "model"))
        run, prompts = make_sampler(arc.model, texts, args.batch, "pingpong", 8, 1.0)
        tried.append({"arc_lr": lr, **score(run, prompts, arc.params, "validation")})
        print(json.dumps({"validation": tried[-1]}))
    best = min(tried, key=lambda r: (-r["prompt_accuracy"], r["spectral_distance"]))
    return best["arc_lr"], tried


RF_SETTINGS = [("euler", n, 7.0) for n in (1, 2, 4, 8, 16, 32, 100)] + [
    ("pingpong", n, cfg) for cfg in (1.0, 7.0) for n in (1, 2, 4, 8)]
ARC_SETTINGS = [("pingpong", n, 1.0) for n in (1, 2, 4, 8)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher-steps", type=int, default=600)
    parser.add_argument("--arc-steps", type=int, default=300)
    parser.add_argument("--arc-lrs", type=lambda s: [float(x) for x in s.split(",")], default=[3e-4, 1e-4, 3e-5],
                        help="ARC learning rates tried on the validation split (comma-separated)")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds (0..N-1); spread is over these")
    parser.add_argument("--calls", type=int, default=5, help="timed generation calls per setting")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workdir", help="default: a temporary folder")
    parser.add_argument("--no-progress", action="store_true", help="no training progress bars")
    parser.add_argument("--out", required=True)
    parser.add_argument("--plot")
    parser.add_argument("--table", action="store_true", help="print the markdown table of an existing --out and exit")
    args = parser.parse_args(argv)
    if args.table:
        with open(args.out) as f:
            print(markdown_table(json.load(f)))
        return
    if args.seeds < 1 or args.calls < 1:
        parser.error(f"--seeds and --calls must be >= 1, got {args.seeds} and {args.calls}")

    from stableaudio_jax.store import load_diffusion
    root = args.workdir or tempfile.mkdtemp(prefix="few_step_")
    data, texts = write_dataset(os.path.join(root, "latents"))  # deterministic: rewriting it changes nothing
    arc_lr, validation = choose_arc_lr(root, data, texts, args)
    runs = [train_runs(root, data, seed, args, arc_lr) for seed in range(args.seeds)]
    rf = [load_diffusion(os.path.join(r["rf"], "model")) for r in runs]
    arc = [load_diffusion(os.path.join(r["arc"], "model")) for r in runs]
    rows = [setting_row("rectified flow", rf[0].model, [m.params for m in rf], texts, s, args.batch, args.calls)
            for s in RF_SETTINGS]
    rows += [setting_row("ARC", arc[0].model, [m.params for m in arc], texts, s, args.batch, args.calls)
             for s in ARC_SETTINGS]
    prompts = np.arange(args.batch) % PROMPTS
    real = {split: quality(np.stack([pattern(p, 0.3 * i, np.random.default_rng(i)) for i, p in enumerate(prompts)]),
                           prompts, references(seeds["reference_seed"])) for split, seeds in SPLITS.items()}
    result = {"benchmark": "few_step", "device": jax.devices()[0].device_kind, "jax": jax.__version__,
              "teacher_steps": args.teacher_steps, "arc_steps": args.arc_steps, "seeds": args.seeds,
              "calls": args.calls, "splits": SPLITS, "arc_lr_validation": validation, "arc_lr": arc_lr,
              "train_seconds": runs, "real_data": real, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
