"""The ``vae-train`` workload of ``bench sharding``: the Oobleck VAE's adversarial training, which alternates a
generator step (spectral + KL + adversarial + feature-matching losses, AdamW, EMA) and a discriminator step, as
stable-audio-tools does. Both are compiled for the strategy; a row reports the larger per-device memory (the
state is shared, the temporaries are not live at once) and the cost of one generator + one discriminator step.
The VAE has no scanned layers, so the compiled cost is whole.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from stableaudio_jax.bench import compiled as analysis
from stableaudio_jax.bench import targets
from stableaudio_jax.bench.strategies import Strategy
from stableaudio_jax.bench.targets import Target


def apply_vae(config: ml_collections.ConfigDict, strategy: Strategy) -> ml_collections.ConfigDict:
    """A copy of a VAE config that trains with ``strategy`` (mesh, batch, seconds, parameter dtype)."""
    from stableaudio_jax.parallel.sharding import MESH_AXES
    for key in ("remat", "scan_layers", "attention"):
        if getattr(strategy, key) is not None:
            raise ValueError(f"{key}={getattr(strategy, key)!r}: the VAE has no such option (DiT only)")
    config = ml_collections.ConfigDict(config.to_dict())
    config.mesh = ml_collections.ConfigDict(dict(zip(MESH_AXES, strategy.mesh)))
    config.training.batch_size = strategy.global_batch()
    if strategy.seconds is not None:
        ratio = math.prod(config.model.strides)  # whole latent frames
        samples = round(strategy.seconds * float(config.model.sample_rate))
        config.training.crop_samples = max(ratio, samples // ratio * ratio)
    if strategy.param_dtype is not None:
        config.param_dtype = strategy.param_dtype
    if strategy.opt_dtype is not None:
        config.training.gen_optimizer.mu_dtype = config.training.disc_optimizer.mu_dtype = strategy.opt_dtype
    return config


def run_vae_train(config, strategy: Strategy, target: Target) -> dict[str, Any]:
    """One row: the generator and discriminator steps compiled for ``target``."""
    from stableaudio_jax.parallel.mesh import resolve_mesh_shape
    from stableaudio_jax.parallel.sharding import normalize_rules
    from stableaudio_jax.training import vae_steps
    from stableaudio_jax.training.loop import abstract_with_shardings
    config = apply_vae(config, strategy)
    mesh = targets.mesh(resolve_mesh_shape(strategy.mesh, target.device_count), target)
    rules, t = normalize_rules(config.sharding_rules), config.training
    crop, channels = int(t.crop_samples), int(config.model.audio_channels)
    run = vae_steps.build(config)
    shardings = vae_steps.state_shardings(run, mesh, rules, crop, channels)
    state = abstract_with_shardings(vae_steps.abstract_state(run, crop, channels), shardings)
    audio = jax.ShapeDtypeStruct((strategy.global_batch(), crop, channels), jnp.float32,
                                 sharding=vae_steps.batch_sharding(mesh))
    generator, discriminator, _ = vae_steps.make_steps(run, shardings, mesh, rules)
    caching = contextlib.nullcontext() if target.measured else analysis.without_persistent_cache()
    with caching, jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        steps = {name: analysis.describe(step.lower(state, audio).compile(), mesh)
                 for name, step in (("generator", generator), ("discriminator", discriminator))}
    cost = {key: None if any(s["cost"][key] is None for s in steps.values())
            else sum(s["cost"][key] for s in steps.values()) for key in steps["generator"]["cost"]}
    collectives = {kind: {f: sum(s["collectives"][kind][f] for s in steps.values()) for f in ("count", "bytes", "moved")}
                   for kind in steps["generator"]["collectives"]}
    traffic = {axes: {f: sum(s["traffic"].get(axes, {}).get(f, 0) for s in steps.values()) for f in ("count", "moved")}
               for axes in sorted({a for s in steps.values() for a in s["traffic"]})}
    traffic = targets.with_bandwidth(traffic, mesh, target)
    memory = dict(max((s["memory"] for s in steps.values()), key=lambda m: m["total"]),
                  parts={name: s["memory"] for name, s in steps.items()})
    return {"workload": "vae-train", "strategy": strategy.as_dict(), "target": target.as_dict(),
            "devices": target.device_count, "device_kind": target.devices[0].device_kind,
            "audio_seconds": crop / float(config.model.sample_rate), "memory": memory,
            "fits": targets.fits(memory["total"], target), "cost": cost, "collectives": collectives,
            "traffic": traffic,
            "cost_method": "compiled: one generator + one discriminator step",
            "bound_seconds": targets.roofline_seconds(cost, traffic, target),
            "xla_optimal_seconds": cost["optimal_seconds"] if (cost["optimal_seconds"] or -1) >= 0 else None,
            "mfu_at_bound": None}
