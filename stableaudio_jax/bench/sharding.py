"""``stableaudio-jax bench sharding``: the denoiser's full training step (AdamW, EMA, CFG dropout) compiled for
each sharding strategy on the local devices, with what the compiler plans (per-device memory, FLOPs, collectives)
and what a run measures (median step time after warm-up, achieved FLOP/s).

Rows are JSON lines; a markdown table and a PNG (memory and time per strategy) summarise them. The compiled
figures are per device and come from XLA (``bench/compiled.py``); the step time is measured on the devices the
process sees (on a CPU host, simulated devices share its cores: compare strategies with each other there, not
with accelerators).
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.bench import compiled as analysis
from stableaudio_jax.bench.strategies import Strategy, apply

logger = logging.getLogger(__name__)
WORKLOADS = ("train",)


def text_shape(config) -> tuple[int, int]:
    """(tokens, width) of the text features the denoiser is trained on: the configured encoder's."""
    from stableaudio_jax.training.diffusion_train import synthetic_text_width
    text = config.conditioning.get("text") or {}
    return int(text.get("max_length") or 128), synthetic_text_width(config)


def analytic_train_flops(run, global_batch: int) -> float | None:
    """Model FLOPs of one DiT training step (forward + backward = 3 forwards): 2 FLOPs per multiply-add of every
    weight, for each latent frame (blocks, in/out projections), each text token (cross-attention keys/values, the
    token projection) or once per example (timestep and global embeddings), plus self-attention (QK^T and AV:
    4 T^2 D per layer) and cross-attention (4 T L D) — the convention behind MFU figures. ``None`` for the U-Net
    (convolutions at several rates: use the compiled count)."""
    config = run.config
    if config.model.type != "dit":
        return None
    frames, tokens = int(config.training.crop_frames), int(run.text_length) + 2  # prompt + the 2 timing tokens
    width, depth = int(config.model.embed_dim), int(config.model.depth)
    weights = _kernel_sizes(run)
    forward = (2 * (weights["frame"] * frames + weights["token"] * tokens + weights["example"])
               + depth * (4 * frames ** 2 * width + 4 * frames * tokens * width))
    return float(3 * forward * global_batch)


PER_TOKEN = ("cross_attn/kv", "to_cond_embed")
PER_EXAMPLE = ("to_global_embed", "to_timestep_embed")


def _kernel_sizes(run) -> dict[str, int]:
    """Weights of the DiT's kernels by how often they apply: per latent frame, per text token, per example."""
    import flax.linen as nn
    from stableaudio_jax.training.diffusion_steps import example_batch
    batch = example_batch(run)
    params = jax.eval_shape(lambda: run.model.init(jax.random.key(0), batch["latents"], batch["text_embeddings"],
                                                   batch["text_mask"]))
    sizes = {"frame": 0, "token": 0, "example": 0}
    for path, leaf in jax.tree_util.tree_leaves_with_path(nn.unbox(params["denoiser"])):
        name = "/".join(str(getattr(p, "key", p)) for p in path)
        if name.endswith("kernel"):
            kind = ("token" if any(k in name for k in PER_TOKEN) else
                    "example" if any(k in name for k in PER_EXAMPLE) else "frame")
            sizes[kind] += int(np.prod(leaf.shape))
    return sizes


def run_strategy(config, strategy: Strategy, workload: str = "train", measure: bool = True, repeats: int = 5,
                 devices: Sequence[jax.Device] | None = None) -> dict[str, Any]:
    """One row: the strategy compiled (and, with ``measure``, run) on ``devices`` (default: all local ones)."""
    from stableaudio_jax.parallel.mesh import make_mesh
    from stableaudio_jax.training import diffusion_steps
    if workload not in WORKLOADS:
        raise ValueError(f"workload {workload!r}: expected one of {list(WORKLOADS)}")
    config = apply(config, strategy)
    mesh = make_mesh(strategy.mesh, devices=devices)
    length, width = text_shape(config)
    steps = diffusion_steps.compiled(config, mesh, length, width)
    global_batch = strategy.global_batch()
    started = time.perf_counter()
    executable = steps.lower(global_batch).compile()
    row = {"workload": workload, "strategy": strategy.as_dict(), "devices": mesh.size,
           "device_kind": mesh.devices.flat[0].device_kind, "frames": int(config.training.crop_frames),
           "compile_seconds": round(time.perf_counter() - started, 2), **analysis.describe(executable),
           "analytic_flops": analytic_train_flops(steps.run, global_batch)}
    if measure:
        row["step_seconds"] = _measure(steps, executable, mesh, config.seed, global_batch, repeats)
        flops = row["analytic_flops"] or (row["cost"]["flops"] or 0) * mesh.size
        row["achieved_tflops"] = flops / row["step_seconds"] / 1e12 if flops else None
    return row


def _measure(steps, executable, mesh, seed: int, global_batch: int, repeats: int) -> float:
    """Median seconds of the compiled step after one warm-up call, on a fresh state and a random batch."""
    from stableaudio_jax.training.diffusion_steps import batch_sharding, example_batch
    state = steps.init(jax.random.key(seed))
    rng = np.random.default_rng(0)
    batch = {k: (rng.standard_normal(v.shape).astype(v.dtype) if v.dtype == jnp.float32 else np.asarray(v))
             for k, v in example_batch(steps.run, global_batch).items()}
    batch = jax.device_put(batch, batch_sharding(mesh))
    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        state, metrics = executable(state, batch)
        jax.block_until_ready(metrics)
        if i:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_bench(config, strategies: Sequence[Strategy], workload: str = "train", measure: bool = True,
              repeats: int = 5, out: str | None = None, progress: bool = True) -> list[dict]:
    """Every strategy in turn; each row is appended to ``out`` (JSON lines) as soon as it is known."""
    from tqdm import tqdm
    rows = []
    for strategy in tqdm(strategies, desc="strategies", unit="strategy", disable=not progress):
        row = run_strategy(config, strategy, workload, measure, repeats)
        rows.append(row)
        logger.info("%s: %.1f MiB per device%s", strategy.name, row["memory"]["total"] / 2 ** 20,
                    f", {row['step_seconds'] * 1e3:.1f} ms per step" if "step_seconds" in row else "")
        if out:
            with open(out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """One line per strategy: per-device memory, compiled FLOPs, collectives, measured time."""
    lines = ["| strategy | global batch | memory / device (MiB): args, temp, total | GFLOP / device | collectives "
             "(count, MiB) | step (ms) | examples / s |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        m, c = row["memory"], row["cost"]
        moved = {k: v for k, v in row["collectives"].items() if v["count"]}
        coll = ", ".join(f"{k} {v['count']} ({v['bytes'] / 2 ** 20:.1f})" for k, v in moved.items()) or "none"
        batch = row["strategy"]["global_batch"]
        step = f"{row['step_seconds'] * 1e3:.1f}" if row.get("step_seconds") else "-"
        rate = f"{batch / row['step_seconds']:.1f}" if row.get("step_seconds") else "-"
        flops = f"{c['flops'] / 1e9:.2f}" if c["flops"] is not None else "-"
        lines.append(f"| {row['strategy']['name']} | {batch} | {m['arguments'] / 2 ** 20:.1f}, "
                     f"{m['temporaries'] / 2 ** 20:.1f}, **{m['total'] / 2 ** 20:.1f}** | {flops} | {coll} | {step} "
                     f"| {rate} |")
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict], path: str) -> str:
    """Per-device memory (stacked: arguments, outputs, temporaries) and measured throughput per strategy
    (examples per second: strategies with other global batches compare fairly)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) is untouched
    names = [r["strategy"]["name"] for r in rows]
    x = np.arange(len(rows))
    timed = all(r.get("step_seconds") for r in rows)
    panels = 2 if timed else 1
    fig = Figure(figsize=((3 + 0.6 * len(rows)) * panels, 3.8))
    axes = fig.subplots(1, panels, squeeze=False)
    bottom = np.zeros(len(rows))
    for part in ("arguments", "outputs", "temporaries"):
        values = np.array([r["memory"][part] - (r["memory"]["aliased"] if part == "outputs" else 0)
                           for r in rows]) / 2 ** 20
        axes[0, 0].bar(x, values, bottom=bottom, label=part if part != "outputs" else "outputs (not donated)")
        bottom += values
    axes[0, 0].set(ylabel="MiB per device", title="compiled memory per device")
    axes[0, 0].legend(fontsize=7)
    if timed:
        axes[0, 1].bar(x, [r["strategy"]["global_batch"] / r["step_seconds"] for r in rows], color="tab:gray")
        axes[0, 1].set(ylabel="examples / s", title="measured throughput (median step)")
    for ax in axes[0]:
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
