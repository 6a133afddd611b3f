"""What the test suite's XLA:CPU flags (tests/conftest.py) buy: compile and step seconds of three small training
steps (the tiny DiT scanned and unrolled, the tiny Oobleck VAE, all with Adam) under three flag sets.

Each repeat runs every flag set once, in turn, each in its own process (XLA reads its flags once per process):
``default`` (XLA's), ``level0`` (``--xla_backend_optimization_level=0``, the suite's setting until this script)
and ``suite`` (tests/conftest.py's flags now). Compile seconds are process-CPU seconds of ``lowered.compile()``
(steadier than wall time on a shared host); step seconds are CPU seconds of 20 steps after one. Ratios are per
repeat, against ``level0``, with their median and range.

    python benchmarks/compile_flags.py --repeats 5 --out docs/results/compile_flags.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # XLA:CPU is what is measured; the aot extra's libtpu stays unloaded
from common import REPO, environment, spread, write_report  # noqa: E402

FLAG_SETS = {
    "default": [],
    "level0": ["--xla_backend_optimization_level=0"],
    "suite": ["--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false",
              "--xla_cpu_parallel_codegen_split_count=1"],
}
PROGRAMS = ("dit_scanned", "dit_unrolled", "vae")
STEPS = 20


def _train_step(apply, loss):
    import jax
    import optax
    optimizer = optax.adam(1e-3)

    def step(params, opt_state, *inputs):
        value, grads = jax.value_and_grad(lambda p: loss(apply(p, *inputs)))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value
    return optimizer, step


def _programs():
    """(name, apply, params, inputs, loss) of each program: the test suite's tiny models."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.models.autoencoder import vae_from_config
    from stableaudio_jax.models.dit import DiT
    rng = np.random.default_rng(0)
    dit_inputs = [jnp.asarray(rng.standard_normal((2, 20, 8)), jnp.float32), jnp.full((2,), 0.5),
                  jnp.asarray(rng.standard_normal((2, 7, 48)), jnp.float32),
                  jnp.asarray(rng.standard_normal((2, 96)), jnp.float32)]
    for scan in (True, False):
        dit = DiT(io_channels=8, embed_dim=64, depth=4, num_heads=2, cond_token_dim=48, global_cond_dim=96,
                  timestep_features_dim=32, scan_layers=scan)
        params = nn.unbox(dit.init(jax.random.key(0), *dit_inputs))
        yield ("dit_scanned" if scan else "dit_unrolled", dit.apply, params, dit_inputs,
               lambda y: jnp.mean(y ** 2))
    vae = vae_from_config(load_config(os.path.join(REPO, "configs/vae.py:tiny")).model)
    audio = jnp.asarray(rng.standard_normal((2, 4096, 2)), jnp.float32)
    params = nn.unbox(vae.init(jax.random.key(0), audio, sample=False))
    yield ("vae", lambda p, x: vae.apply(p, x, sample=False), params, [audio],
           lambda out: sum(jnp.mean(jnp.square(leaf)) for leaf in jax.tree_util.tree_leaves(out)))


def child() -> dict:
    """One process under the XLA_FLAGS it was started with: compile and step seconds of each program."""
    import jax
    import jax.numpy as jnp
    jax.jit(lambda x: x * 2 + 1).lower(jnp.ones(3)).compile()  # XLA's one-time set-up, outside the timings
    out = {}
    for name, apply, params, inputs, loss in _programs():
        optimizer, step = _train_step(apply, loss)
        lowered = jax.jit(step).lower(params, optimizer.init(params), *inputs)
        cpu, wall = time.process_time(), time.perf_counter()
        compiled = lowered.compile()
        compile_cpu, compile_wall = time.process_time() - cpu, time.perf_counter() - wall
        state = (params, optimizer.init(params))
        state = compiled(*state, *inputs)[:2]
        jax.block_until_ready(state)
        cpu = time.process_time()
        for _ in range(STEPS):
            state = compiled(*state, *inputs)[:2]
        jax.block_until_ready(state)
        out[name] = {"compile_cpu_s": compile_cpu, "compile_wall_s": compile_wall,
                     "step_cpu_s": (time.process_time() - cpu) / STEPS}
    return out


def _run_child(flags: list[str]) -> dict:
    env = {**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"], capture_output=True, text=True,
                          env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the child under XLA_FLAGS={flags} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(repeats: int) -> dict:
    from tqdm import tqdm
    rows = []
    for repeat in tqdm(range(repeats), desc="repeats (each: every flag set, one process each)"):
        rows.append({"repeat": repeat, **{name: _run_child(flags) for name, flags in FLAG_SETS.items()}})
    summary = {}
    for name in ("default", "suite"):
        for program in PROGRAMS:
            key = f"{name}/{program}"
            summary[key] = {
                "compile_speedup_vs_level0": spread([r["level0"][program]["compile_cpu_s"]
                                                     / r[name][program]["compile_cpu_s"] for r in rows]),
                "step_time_vs_level0": spread([r[name][program]["step_cpu_s"] / r["level0"][program]["step_cpu_s"]
                                               for r in rows])}
    totals = {name: spread([sum(r[name][p]["compile_cpu_s"] for p in PROGRAMS) for r in rows]) for name in FLAG_SETS}
    return {"flag_sets": FLAG_SETS, "programs": list(PROGRAMS), "steps_timed": STEPS, "rows": rows,
            "summary": summary, "compile_cpu_s_all_programs": totals}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds of every flag set (default 5)")
    parser.add_argument("--out", help="where to write the JSON report (also printed)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child()))
        return
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: expected a positive integer")
    write_report({"benchmark": "compile_flags", "environment": environment(with_torch=False),
                  **measure(args.repeats)}, args.out)


if __name__ == "__main__":
    main()
