"""Few-step generation measured: quality against sampler steps for a rectified-flow model sampled the usual way
(Euler, CFG) and for the same model after ARC post-training (ping-pong, no CFG), and their speed, in one run.

Data: a latent dataset with a known answer. Four prompts (random text embeddings), each with its own latent
pattern (a sinusoid over frames with a prompt-specific frequency, channel phases and amplitude); a random phase
and noise per example. Pipeline: `train` (rectified flow, tiny DiT) → `train-arc --init-from` it → sample both.

Quality, on generated latents of every prompt (no VAE involved):
- spectral distance: L2 between the mean magnitude spectrum (over frames, per channel) of the generated latents
  and of the real ones of the same prompt, relative to the real spectrum's norm (0 = identical);
- prompt accuracy: how often a generated latent's spectrum is nearest to its own prompt's real spectrum.
Speed: seconds per generation call (batch of 32, after a warm-up), model passes per second and latent frames
per second (x the VAE's 2,048 samples per frame / 44.1 kHz = seconds of audio per second for SAO's VAE).

    python benchmarks/few_step_bench.py --out docs/results/few_step_cpu.json --plot docs/results/few_step_cpu.png
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


def references(count: int = 64) -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.stack([spectrum(np.stack([pattern(p, rng.uniform(0, 2 * np.pi), rng) for _ in range(count)]))
                     .mean(0) for p in range(PROMPTS)])


def quality(generated: np.ndarray, prompts: np.ndarray, refs: np.ndarray) -> dict:
    spectra = spectrum(generated)
    distance = [np.linalg.norm(spectra[prompts == p].mean(0) - refs[p]) / np.linalg.norm(refs[p])
                for p in range(PROMPTS)]
    nearest = np.argmin([[np.linalg.norm(s - r) for r in refs] for s in spectra], axis=1)
    return {"spectral_distance": float(np.mean(distance)), "prompt_accuracy": float(np.mean(nearest == prompts))}


def sampler_fn(model, params, texts, prompts, objective_sampler, steps, cfg_scale):
    """A jitted call generating one latent per prompt index (batch), timed separately."""
    from stableaudio_jax.diffusion.samplers import sample
    text = jnp.asarray(texts[prompts])
    mask = jnp.ones(text.shape[:2], bool)
    seconds = jnp.full((len(prompts),), FRAMES * SAO_SECONDS_PER_FRAME)
    cond = model.condition(params, text, mask, jnp.zeros_like(seconds), seconds)

    @jax.jit
    def run(key):
        noise_key, sample_key = jax.random.split(key)
        noise = jax.random.normal(noise_key, (len(prompts), FRAMES, CHANNELS))
        if cfg_scale == 1.0:
            fn = lambda x, t: model.predict(params, x, t, cond)  # noqa: E731
        else:
            fn = lambda x, t: model.guided(params, x, t, cond, cfg_scale)  # noqa: E731
        return sample(fn, noise, sample_key, objective="rectified_flow", sampler=objective_sampler, steps=steps)
    return run


def evaluate(name, model, params, texts, refs, sampler, steps_list, cfg_scale, batch):
    prompts = np.arange(batch) % PROMPTS
    rows = []
    for steps in steps_list:
        run = sampler_fn(model, params, texts, prompts, sampler, steps, cfg_scale)
        latents = np.asarray(run(jax.random.key(0)))  # compile + warm-up
        started = time.perf_counter()
        latents = np.asarray(jax.block_until_ready(run(jax.random.key(1))))
        seconds = time.perf_counter() - started
        passes = steps * (1 if cfg_scale == 1.0 else 2)
        row = dict(model=name, sampler=sampler, steps=steps, cfg_scale=cfg_scale, batch=batch,
                   seconds_per_call=seconds, model_passes_per_s=passes / seconds,
                   latent_frames_per_s=batch * FRAMES / seconds,
                   sao_audio_seconds_per_s=batch * FRAMES * SAO_SECONDS_PER_FRAME / seconds,
                   **quality(latents, prompts, refs))
        print(json.dumps(row))
        rows.append(row)
    return rows


def plot(rows: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label in sorted({(r["model"], r["sampler"], r["cfg_scale"]) for r in rows}):
        part = [r for r in rows if (r["model"], r["sampler"], r["cfg_scale"]) == label]
        steps = [r["steps"] for r in part]
        name = f"{label[0]} ({label[1]}, cfg {label[2]:g})"
        axes[0].plot(steps, [r["spectral_distance"] for r in part], "o-", label=name)
        axes[1].plot(steps, [r["seconds_per_call"] for r in part], "o-", label=name)
    for ax, title in zip(axes, ("spectral distance to real (lower is better)", "seconds per call (batch 32)")):
        ax.set_xscale("log")
        ax.set_xlabel("sampler steps")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher-steps", type=int, default=600)
    parser.add_argument("--arc-steps", type=int, default=300)
    parser.add_argument("--arc-lr", type=float, default=1e-4, help="generator and discriminator learning rate")
    parser.add_argument("--arc-dir", default="arc", help="the ARC run's folder in --workdir")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workdir", help="default: a temporary folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--plot")
    args = parser.parse_args()

    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.store import load_diffusion
    from stableaudio_jax.training.arc_train import train_arc
    from stableaudio_jax.training.diffusion_train import train_diffusion
    from stableaudio_jax.training.init_from import diffusion_config_from_model

    root = args.workdir or tempfile.mkdtemp(prefix="few_step_")
    data, texts = write_dataset(os.path.join(root, "latents"))  # deterministic: rewriting it changes nothing
    loop = [f"training.crop_frames={FRAMES}", "training.log_every=50", "training.checkpoint_every=100000"]
    # both runs resume (or are already finished) when --workdir holds them: re-time without retraining
    started = time.perf_counter()
    train_diffusion(load_config("configs/dit.py:tiny", loop + ["diffusion.objective=rectified_flow",
                                                               f"training.steps={args.teacher_steps}"]),
                    os.path.join(root, "rf"), data, progress=True)
    teacher_seconds = time.perf_counter() - started
    config = diffusion_config_from_model(load_config("configs/dit.py:tiny", loop + [
        f"training.steps={args.arc_steps}", f"training.optimizer.lr={args.arc_lr}",
        f"training.arc.disc_optimizer.lr={args.arc_lr}"]), os.path.join(root, "rf", "model"))
    started = time.perf_counter()
    train_arc(config, os.path.join(root, args.arc_dir), data, progress=True)
    arc_seconds = time.perf_counter() - started

    refs = references()
    teacher, arc = (load_diffusion(os.path.join(root, name, "model")) for name in ("rf", args.arc_dir))
    rows = evaluate("rectified flow", teacher.model, teacher.params, texts, refs, "euler",
                    [1, 2, 4, 8, 16, 32, 100], 7.0, args.batch)
    rows += evaluate("rectified flow", teacher.model, teacher.params, texts, refs, "pingpong", [1, 2, 4, 8], 1.0,
                     args.batch)
    rows += evaluate("ARC", arc.model, arc.params, texts, refs, "pingpong", [1, 2, 4, 8], 1.0, args.batch)
    real = np.stack([pattern(p % PROMPTS, 0.3 * p, np.random.default_rng(p)) for p in range(args.batch)])
    result = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "teacher_steps": args.teacher_steps,
              "arc_steps": args.arc_steps, "arc_lr": args.arc_lr, "teacher_train_seconds": teacher_seconds, "arc_train_seconds": arc_seconds,
              "real_data": quality(real, np.arange(args.batch) % PROMPTS, refs), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    if args.plot:
        plot(rows, args.plot)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
