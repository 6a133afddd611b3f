"""Seconds per training step of a quickstart preset's VAE and DiT, and the training time they imply.

  python benchmarks/preset_steps.py --preset cpu --preset cpu-long --out docs/results/preset_steps.json

For each preset the VAE (configs/quickstart.py's overrides on configs/vae.py:tiny) and the DiT are built as the
quickstart's train-vae and train stages build them, on this process's devices, and each step kind is timed:
the VAE's spectral warm-up step, its adversarial generator step and its discriminator step, the DiT's step. Each
kind: the first call (compile + run) and ``--repeats`` more, reported as median and min-max. The JSON's
``estimate`` multiplies the medians by the preset's step counts (warm-up steps, then generator and discriminator
steps alternating; the denoiser's steps) and adds the first calls: an estimate of the two training stages alone,
on this machine, without the data, encode, generate and evaluate stages or checkpoint writes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import REPO, environment, spread, write_report  # noqa: E402


def timed_calls(step, state, batch, repeats: int):
    """(state after the calls, seconds of the first call, seconds of each later call)."""
    import jax
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        state, _ = step(state, batch)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - start)
    return state, times[0], times[1:]


def vae_steps_of(preset, repeats: int) -> dict:
    import jax

    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.parallel.mesh import make_mesh
    from stableaudio_jax.training import vae_steps
    config = load_config(os.path.join(REPO, "configs", preset.vae.config), list(preset.vae.overrides))
    mesh = make_mesh(config.mesh)
    compiled = vae_steps.compiled(config, mesh)
    state = compiled.init(jax.random.key(0))
    t = config.training
    audio = 0.1 * np.random.default_rng(0).standard_normal(
        (t.batch_size, t.crop_samples, config.model.audio_channels)).astype(np.float32)
    rows = {}
    with jax.set_mesh(mesh):
        for kind in ("warmup", "generator", "discriminator"):
            state, first, later = timed_calls(getattr(compiled, f"{kind}_step"), state, audio, repeats)
            rows[kind] = {"first_call_s": first, "step_s": spread(later), "repeats": later}
    return rows


def dit_step_of(preset, repeats: int) -> dict:
    import jax

    from stableaudio_jax.config_loader import load_config
    from stableaudio_jax.parallel.mesh import make_mesh
    from stableaudio_jax.training import diffusion_steps
    config = load_config(os.path.join(REPO, "configs", preset.dit.config), list(preset.dit.overrides))
    mesh = make_mesh(config.mesh)
    compiled = diffusion_steps.compiled(config, mesh, preset.text.max_length, preset.text.d_model)
    state = compiled.init(jax.random.key(0))
    batch = jax.device_put(diffusion_steps.example_batch(compiled.run, config.training.batch_size),
                           diffusion_steps.batch_sharding(mesh))
    state, first, later = timed_calls(compiled.step, state, batch, repeats)
    return {"step": {"first_call_s": first, "step_s": spread(later), "repeats": later}}


def _override(overrides, key: str) -> int:
    return next(int(o.split("=", 1)[1]) for o in overrides if o.startswith(key + "="))


def estimate(preset, vae: dict, dit: dict) -> dict:
    """The training stages' seconds at the measured medians (an estimate: see the module's docstring)."""
    warmup = min(_override(preset.vae.overrides, "training.warmup_steps"), preset.vae.steps)
    adversarial = preset.vae.steps - warmup
    vae_s = (warmup * vae["warmup"]["step_s"]["median"]
             + adversarial / 2 * (vae["generator"]["step_s"]["median"] + vae["discriminator"]["step_s"]["median"])
             + sum(v["first_call_s"] for k, v in vae.items() if k == "warmup" or adversarial))
    dit_s = preset.dit.steps * dit["step"]["step_s"]["median"] + dit["step"]["first_call_s"]
    return {"train_vae_s": vae_s, "train_dit_s": dit_s, "total_s": vae_s + dit_s,
            "steps": {"vae_warmup": warmup, "vae_adversarial": adversarial, "dit": preset.dit.steps},
            "kind": "estimate: step counts x measured median step times + first calls; training stages only"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", action="append", required=True, help="a configs/quickstart.py preset (repeat)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per step kind after the first")
    parser.add_argument("--out", help="the JSON report's path")
    args = parser.parse_args()
    from configs.quickstart import get_config
    report = {"benchmark": "preset_steps", **environment(with_torch=False), "repeats": args.repeats, "presets": {}}
    for name in args.preset:
        preset = get_config(name)
        vae, dit = vae_steps_of(preset, args.repeats), dit_step_of(preset, args.repeats)
        report["presets"][name] = {"vae": vae, "dit": dit, "estimate": estimate(preset, vae, dit)}
        print(f"{name}: {report['presets'][name]['estimate']['total_s'] / 60:.1f} min of training (estimate)",
              file=sys.stderr, flush=True)
    write_report(report, args.out)


if __name__ == "__main__":
    main()
