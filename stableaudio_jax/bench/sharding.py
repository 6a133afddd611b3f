"""``stableaudio-jax bench sharding``: the denoiser's full training step (AdamW, EMA, CFG dropout) compiled for
each sharding strategy on a target — the local devices, or a TPU slice / GPU node compiled ahead of time — with
what the compiler plans (per-device memory and whether it fits, FLOPs, collectives and their traffic per mesh axis,
two lower bounds on the step time: the roofline of the compiled counts over each axis's links and, on TPU, XLA's
own ``optimal_seconds``; the MFU the roofline implies, a ceiling) and, on local devices, what a run measures
(median step time after warm-up, MFU).

Rows are JSON lines; a markdown table and a PNG (memory and time per strategy) summarise them. Compiled figures
are per device and come from XLA (``bench/compiled.py``). A scanned layer stack is costed by compiling the same
step unrolled at depth 1 and 2 and extrapolating (``unrolled_cost``): XLA counts a scan body once. Measured step
times come only from devices this process owns (on a CPU host, simulated devices share its cores: compare
strategies with each other there, not with accelerators).
"""
from __future__ import annotations

import contextlib
import io
import dataclasses
import json
import logging
import os
import re
import statistics
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.bench import compiled as analysis
from stableaudio_jax.bench import targets
from stableaudio_jax.bench.strategies import Strategy, apply, apply_for_target, text_shape
from stableaudio_jax.bench.targets import Target
from stableaudio_jax.training.flops import analytic_train_flops

logger = logging.getLogger(__name__)
TRAFFIC = ("count", "moved")
WORKLOADS = ("train", "generate", "vae-train")


def prepare(config, strategy: Strategy, target: Target):
    """The config a strategy trains with on ``target``, its mesh over the target's devices (topology-aware order)
    and the compiled-step builder."""
    from stableaudio_jax.parallel.mesh import resolve_mesh_shape
    from stableaudio_jax.training import diffusion_steps
    config = apply_for_target(config, strategy, target)
    mesh = targets.mesh(resolve_mesh_shape(strategy.mesh, target.device_count), target)
    length, width = text_shape(config)
    return config, mesh, diffusion_steps.compiled(config, mesh, length, width)


def compile_strategy(config, strategy: Strategy, target: Target):
    """(config, mesh, compiled-step builder, executable, seconds it took to compile)."""
    config, mesh, steps = prepare(config, strategy, target)
    started = time.perf_counter()
    with contextlib.nullcontext() if target.measured else analysis.without_persistent_cache():
        executable = steps.lower(strategy.global_batch()).compile()
    return config, mesh, steps, executable, time.perf_counter() - started


def scanned_layers(config) -> int | None:
    """The DiT's (or SA3 DiT's) depth when its blocks are a ``lax.scan`` (whose body XLA's cost analysis counts
    once)."""
    model = config.model
    return int(model.depth) if model.type in ("dit", "sa3_dit") and model.get("scan_layers") else None


def unrolled_cost(config, strategy: Strategy, target: Target, quick: bool = False) -> dict[str, Any]:
    """Whole-step cost, collectives and (an estimate of) memory of a scanned DiT: the same strategy compiled
    unrolled at depth 1 and 2, extrapolated linearly to the real depth (every layer is the same program). Checked
    against a full unrolled compile of SAO on v5p-8: FLOPs and collective bytes agree to <1 %, bytes accessed
    within ~10 % (an unrolled stack fuses a little across layer boundaries). The memory is the unrolled stack's,
    an estimate only: a scan keeps other temporaries (the planner confirms fits with the real compile).
    ``quick``: one compile at depth 1, scaled by the depth (what is outside the layers counted depth times:
    a slight over-estimate, used to screen candidates)."""
    depth = scanned_layers(apply(config, strategy))
    analytic = analytic_train_flops(prepare(config, strategy, target)[2].run, strategy.global_batch())
    twins = []
    for layers in (1,) if quick else (1, 2):
        twin = apply(config, strategy)
        twin.model.depth, twin.model.scan_layers = layers, False
        _, mesh, _, executable, _ = compile_strategy(twin, dataclasses.replace(strategy, scan_layers=False), target)
        twins.append(analysis.describe(executable, mesh))
    first, second = twins[0], twins[-1]

    def grow(a, b):
        if a is None or b is None or a < 0 or b < 0:  # XLA's optimal_seconds: negative means unknown
            return None
        return a * depth if quick else a + (depth - 1) * (b - a)

    def grow_all(name, fields):  # per collective kind or per mesh axes: union of both twins' keys
        a, b, zero = first[name], second[name], dict.fromkeys(fields, 0)
        return {k: {f: int(grow(a.get(k, zero)[f], b.get(k, zero)[f])) for f in fields} for k in sorted({*a, *b})}

    return {"cost": {key: grow(first["cost"][key], second["cost"][key]) for key in first["cost"]},
            "collectives": grow_all("collectives", ("count", "bytes", "moved")),
            "traffic": targets.with_bandwidth(grow_all("traffic", TRAFFIC), mesh, target),
            "memory": {key: int(grow(first["memory"][key], second["memory"][key])) for key in first["memory"]},
            "analytic_flops": analytic}


_OOM_UNITS = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
_OOM = (re.compile(r"RESOURCE_EXHAUSTED: .*?required for (?P<what>[\w ]+?) \((?P<need>[\d.]+)(?P<u>[KMGT])\)"),
        re.compile(r"RESOURCE_EXHAUSTED: .*?Used (?P<need>[\d.]+)(?P<u>[KMGT]) of [\d.]+[KMGT] hbm"))


def out_of_memory(message: str) -> int | None:
    """Bytes a program needs according to the TPU compiler's out-of-memory error (a lower bound when the
    error counts temporaries only); None if ``message`` is not one."""
    for pattern in _OOM:
        if match := pattern.search(message):
            return int(float(match.group("need")) * _OOM_UNITS[match.group("u")])
    return None


def out_of_memory_row(workload: str, strategy: Strategy, target: Target, required: int, message: str) -> dict:
    """A strategy the compiler refused for want of memory: what it needs, nothing else."""
    return {"workload": workload, "strategy": strategy.as_dict(), "target": target.as_dict(),
            "devices": target.device_count, "device_kind": target.devices[0].device_kind,
            "memory": {"arguments": None, "outputs": None, "aliased": None, "temporaries": None, "total": required},
            "fits": False, "out_of_memory": message.splitlines()[0][:300],
            "cost": {"flops": None, "bytes_accessed": None, "optimal_seconds": None}, "collectives": {},
            "traffic": {}, "bound_seconds": None, "xla_optimal_seconds": None, "mfu_at_bound": None}


def bound(cost: dict, traffic: dict, target: Target) -> float | None:
    """The roofline lower bound of a whole-step cost (``targets.roofline_seconds``)."""
    return targets.roofline_seconds(cost, traffic, target)


def xla_lower_bound(seconds: float | None) -> float | None:
    """XLA's ``optimal_seconds`` (TPU only) where it is known: negative means unknown."""
    return seconds if seconds is not None and seconds >= 0 else None


def finish_bounds(row: dict, target: Target) -> dict:
    """The step-time lower bounds of a row whose cost is whole-step: XLA's ``optimal_seconds`` where it gives one
    (TPU; negative = unknown) and the roofline of the compiled counts over each axis's links
    (``targets.roofline_seconds``, what strategies are ranked by), with the MFU the roofline implies: a ceiling,
    since the bound is."""
    whole = "counted once" not in row["cost_method"]
    row["xla_optimal_seconds"] = xla_lower_bound(row["cost"]["optimal_seconds"]) if whole else None
    row["bound_seconds"] = bound(row["cost"], row["traffic"], target) if whole else None
    row["mfu_at_bound"] = targets.mfu(row["analytic_flops"], row["bound_seconds"], target)
    return row


def run_strategy(config, strategy: Strategy, workload: str = "train", measure: bool = True, repeats: int = 5,
                 target: Target | None = None, unroll_cost: bool = True, steps: int = 100) -> dict[str, Any]:
    """One row: the strategy compiled for ``target`` (default: the local devices) and, where the devices are this
    process's and ``measure`` is set, run. ``generate``: ``bench/generation.py`` (``steps`` sampler steps);
    ``vae-train``: ``bench/vae_workload.py`` (compiled, not run)."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload {workload!r}: expected one of {list(WORKLOADS)}")
    target = target or targets.local_target()
    if workload == "generate":
        from stableaudio_jax.bench.generation import run_generation
        return run_generation(config, strategy, target, steps)
    if workload == "vae-train":
        from stableaudio_jax.bench.vae_workload import run_vae_train
        return run_vae_train(config, strategy, target)
    try:
        config, mesh, steps, executable, seconds = compile_strategy(config, strategy, target)
    except Exception as error:  # the TPU compiler refuses a program that does not fit its HBM
        required = out_of_memory(str(error))
        if required is None:
            raise
        return out_of_memory_row(workload, strategy, target, required, str(error))
    global_batch = strategy.global_batch()
    row = {"workload": workload, "strategy": strategy.as_dict(), "target": target.as_dict(), "devices": mesh.size,
           "device_kind": mesh.devices.flat[0].device_kind, "frames": int(config.training.crop_frames),
           "attention": config.model.get("attention_impl"), "compile_seconds": round(seconds, 2),
           "cost_method": "compiled", **analysis.describe(executable, mesh),
           "analytic_flops": analytic_train_flops(steps.run, global_batch)}
    row["traffic"] = targets.with_bandwidth(row["traffic"], mesh, target)
    row["fits"] = targets.fits(row["memory"]["total"], target)
    if scanned_layers(config) and unroll_cost:
        unrolled = unrolled_cost(config, strategy, target)
        row.update(cost=unrolled["cost"], collectives=unrolled["collectives"], traffic=unrolled["traffic"],
                   cost_method="unrolled at depth 1 and 2, extrapolated")
    elif scanned_layers(config):
        row["cost_method"] = "compiled (the scanned layer counted once)"
    if "cost_note" in row:
        row["cost_method"] = row.pop("cost_note")
    finish_bounds(row, target)
    if measure and target.measured:
        row["step_seconds"] = _measure(steps, executable, mesh, config.seed, global_batch, repeats)
        flops = row["analytic_flops"] or (row["cost"]["flops"] or 0) * mesh.size
        row["achieved_tflops"] = flops / row["step_seconds"] / 1e12 if flops else None
        row["mfu"] = targets.mfu(flops, row["step_seconds"], target)
    return row


def _measure(steps, executable, mesh, seed: int, global_batch: int, repeats: int) -> float:
    """Median seconds of the compiled step after one warm-up call, on a fresh state and a random batch."""
    from stableaudio_jax.training.diffusion_steps import batch_sharding, example_batch
    state = steps.init(jax.random.key(seed))
    rng = np.random.default_rng(0)
    batch = {k: (rng.standard_normal(v.shape).astype(v.dtype) if v.dtype == jnp.float32 else np.asarray(v))
             for k, v in example_batch(steps.run, global_batch).items()}
    batch = jax.device_put(batch, batch_sharding(mesh))
    base = () if steps.abstract_base is None else (jax.tree_util.tree_map(  # a LoRA run's frozen weights
        lambda a, s: jax.device_put(np.zeros(a.shape, a.dtype), s), steps.abstract_base, steps.base_shardings),)
    times = []
    for i in range(repeats + 1):
        started = time.perf_counter()
        state, metrics = executable(state, batch, *base)
        jax.block_until_ready(metrics)
        if i:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def run_bench(config, strategies: Sequence[Strategy], workload: str = "train", measure: bool = True,
              repeats: int = 5, out: str | None = None, progress: bool = True, target: Target | None = None,
              unroll_cost: bool = True, steps: int = 100) -> list[dict]:
    """Every strategy in turn; each row is appended to ``out`` (JSON lines) as soon as it is known."""
    from tqdm import tqdm
    rows = []
    for strategy in tqdm(strategies, desc="strategies", unit="strategy", disable=not progress):
        row = run_strategy(config, strategy, workload, measure, repeats, target, unroll_cost, steps)
        rows.append(row)
        logger.info("%s: %.1f MiB per device%s", strategy.name, row["memory"]["total"] / 2 ** 20,
                    f", {row['step_seconds'] * 1e3:.1f} ms per step" if "step_seconds" in row else "")
        if out:
            paths.append_text(out, json.dumps(row) + "\n")
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """One line per strategy: per-device memory and fit, compiled FLOPs, collectives, the two lower bounds on the
    step time (the roofline; XLA's own on TPU) and the MFU the roofline implies (at best), measured time and MFU
    (where measured)."""
    unit, scale = ("GiB", 2 ** 30) if max(r["memory"]["total"] for r in rows) > 4 * 2 ** 30 else ("MiB", 2 ** 20)
    lines = [f"| strategy | global batch | memory / device ({unit}): args, temp, **total** | fits | TFLOP / device "
             "| collectives (count, MiB sent) | per mesh axis: MiB sent at GB/s | roofline lower bound (ms) "
             "| MFU at best | XLA lower bound (ms) | step (ms) | examples / s | MFU |", "|---" * 13 + "|"]
    fmt = lambda value, f: "-" if value is None else f.format(value)  # noqa: E731
    for row in rows:
        m, c = row["memory"], row["cost"]
        moved = {k: v for k, v in row["collectives"].items() if v["count"]}
        coll = ", ".join(f"{k} {v['count']} ({v.get('moved', v['bytes']) / 2 ** 20:.1f})"
                         for k, v in moved.items()) or "none"
        batch, step = row["strategy"]["global_batch"], row.get("step_seconds")
        fits = {True: "yes", False: "**no**", None: "-"}[row.get("fits")]
        bound = row.get("bound_seconds")
        parts = (f"{m['arguments'] / scale:.2f}, {m['temporaries'] / scale:.2f}, **{m['total'] / scale:.2f}**"
                 if m["arguments"] is not None else f"needs > {m['total'] / scale:.2f} (compiler out of memory)")
        lines.append(
            f"| {row['strategy']['name']} | {batch} | {parts} | {fits} "
            f"| {fmt(c['flops'] and c['flops'] / 1e12, '{:.3f}')} | {coll} | {traffic_cell(row)} "
            f"| {fmt(bound and bound * 1e3, '{:.1f}')} | {fmt(row.get('mfu_at_bound'), '{:.0%}')} "
            f"| {xla_cell(row)} "
            f"| {fmt(step and step * 1e3, '{:.1f}')} | {fmt(step and batch / step, '{:.1f}')} "
            f"| {fmt(row.get('mfu'), '{:.1%}')} |")
    return "\n".join(lines) + "\n"


def traffic_cell(row: dict) -> str:
    """What each device sends per set of mesh axes and the one-way link bandwidth it is charged to."""
    parts = [f"{axes} {t['moved'] / 2 ** 20:.1f}" + (f" at {t['bandwidth'] / 1e9:.0f}" if t.get("bandwidth") else "")
             for axes, t in (row.get("traffic") or {}).items() if t["moved"]]
    return ", ".join(parts) or "none"


def xla_cell(row: dict) -> str:
    """XLA's lower bound in ms; "unknown" where XLA gave a negative one (TPU), "-" where it gives none (GPU, CPU)."""
    if row.get("xla_optimal_seconds") is not None:
        return f"{row['xla_optimal_seconds'] * 1e3:.1f}"
    known = row.get("cost", {}).get("optimal_seconds") is not None
    return "unknown" if known else "-"


def plot(rows: Sequence[dict], path: str) -> str:
    """Per-device memory (stacked: arguments, outputs, temporaries; the target's HBM as a line) and throughput per
    strategy in examples per second (strategies with other global batches compare fairly): measured where every
    row was run, else the compiler's bound."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (a notebook's inline one) is untouched
    names = [r["strategy"]["name"] for r in rows]
    x = np.arange(len(rows))
    timed = all(r.get("step_seconds") for r in rows)
    seconds = [r.get("step_seconds") if timed else r.get("bound_seconds") for r in rows]
    panels = 2 if all(seconds) else 1
    fig = Figure(figsize=((3 + 0.6 * len(rows)) * panels, 3.8))
    axes = fig.subplots(1, panels, squeeze=False)
    bottom = np.zeros(len(rows))
    for part in ("arguments", "outputs", "temporaries"):
        values = np.array([(r["memory"][part] or 0) - (r["memory"]["aliased"] or 0 if part == "outputs" else 0)
                           if r["memory"]["arguments"] is not None else (r["memory"]["total"] if part == "temporaries"
                                                                         else 0) for r in rows]) / 2 ** 30
        axes[0, 0].bar(x, values, bottom=bottom, label=part if part != "outputs" else "outputs (not donated)")
        bottom += values
    hbm = rows[0].get("target", {}).get("hbm_bytes")
    if hbm:
        axes[0, 0].axhline(hbm / 2 ** 30, color="tab:red", linestyle="--", label=f"HBM ({hbm / 2 ** 30:.0f} GiB)")
    axes[0, 0].set(ylabel="GiB per device", title="compiled memory per device")
    axes[0, 0].legend(fontsize=7)
    if panels == 2:
        axes[0, 1].bar(x, [r["strategy"]["global_batch"] / t for r, t in zip(rows, seconds)], color="tab:gray")
        axes[0, 1].set(ylabel="examples / s", title="measured throughput (median step)" if timed
                       else "roofline lower bound from the compiled counts")
    for ax in axes[0]:
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    fig.tight_layout()
    path = paths.absolute(path)
    paths.makedirs(os.path.dirname(path))
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    paths.write_bytes_atomic(path, buffer.getvalue())
    return path
