"""Optimisers, the reference's learning-rate schedule, and parameter EMA.

``inverse_lr`` is stable-audio-tools' (k-diffusion's) ``InverseLR``, stepped once per optimiser step:
    lr(n) = (1 - warmup^(n + 1)) * max(final_lr, base_lr * (1 + n / inv_gamma)^(-power))
SAO VAE: base 1.5e-4 (discriminator 3e-4), inv_gamma 200,000, power 0.5, warmup 0.999; SAO DiT: 5e-5, 1e6, 0.5, 0.99.

The EMA follows ema_pytorch (0.2.3) as stable-audio-tools uses it, updated once per optimiser step *before* that
step, with ``n`` = 1, 2, ... counting updates: the first ``update_after_step + 2`` updates copy the online weights,
then ``decay(n) = clip(1 - (1 + (n - update_after_step - 1) / inv_gamma)^(-power), min_value, beta)``
(SAO: beta 0.9999, power 3/4, update_after_step 1 → decay(4) = 1 - 3^(-3/4) = 0.5613).

Where the EMA lives (``training.ema.place``): ``device`` (the reference: one more copy of the weights in
accelerator memory, 4.2 GB for SAO's DiT), ``host`` (pinned host memory, sharded like the weights: each step reads
it to the device, updates it and writes it back, so it costs transfers instead of HBM) or ``off`` (no EMA; exports
and demos use the online weights).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def inverse_lr(base_lr: float, inv_gamma: float = 1.0, power: float = 1.0, warmup: float = 0.0,
               final_lr: float = 0.0) -> optax.Schedule:
    def schedule(count):
        n = jnp.asarray(count, jnp.float32)
        decay = jnp.maximum(final_lr, base_lr * (1 + n / inv_gamma) ** (-power))
        return (1 - warmup ** (n + 1)) * decay

    return schedule


def make_schedule(cfg: Any) -> optax.Schedule:
    """``cfg``: {type: 'inverse_lr'|'constant'|'cosine', lr, ...}."""
    cfg = dict(cfg)
    kind, lr = cfg.get("type", "inverse_lr"), cfg["lr"]
    if kind == "inverse_lr":
        return inverse_lr(lr, cfg.get("inv_gamma", 1.0), cfg.get("power", 1.0), cfg.get("warmup", 0.0),
                          cfg.get("final_lr", 0.0))
    if kind == "constant":
        return optax.constant_schedule(lr)
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, cfg.get("warmup_steps", 0), cfg["decay_steps"],
                                                  cfg.get("final_lr", 0.0))
    raise ValueError(f"optimizer schedule type {kind!r}; expected 'inverse_lr', 'constant' or 'cosine'")


def make_optimizer(cfg: Any) -> optax.GradientTransformation:
    """AdamW (the reference's optimiser) with the configured schedule and optional global-norm clipping.

    ``cfg``: {lr, betas, eps, weight_decay, grad_clip (0 = off), schedule: {...}, mu_dtype (optional: the first
    moment's dtype, e.g. "bfloat16" to save a quarter of AdamW's state; the second moment stays float32)}.
    """
    schedule = make_schedule(dict(cfg.get("schedule", {}), lr=cfg.lr))
    b1, b2 = cfg.get("betas", (0.9, 0.999))
    adamw = optax.adamw(schedule, b1=b1, b2=b2, eps=cfg.get("eps", 1e-8), weight_decay=cfg.get("weight_decay", 0.0),
                        mu_dtype=cfg.get("mu_dtype") or None)
    clip = cfg.get("grad_clip", 0.0)
    return optax.chain(optax.clip_by_global_norm(clip), adamw) if clip else adamw


def learning_rate(cfg: Any, step) -> jax.Array:
    return make_schedule(dict(cfg.get("schedule", {}), lr=cfg.lr))(step)


def ema_decay(n, beta: float = 0.9999, power: float = 0.75, inv_gamma: float = 1.0, min_value: float = 0.0,
              update_after_step: int = 1) -> jax.Array:
    """The decay of the ``n``-th EMA update (1-based); 0 means "copy the online weights"."""
    epoch = jnp.asarray(n, jnp.float32) - update_after_step - 1
    value = jnp.clip(1 - (1 + jnp.maximum(epoch, 0.0) / inv_gamma) ** (-power), min_value, beta)
    return jnp.where(epoch <= 1, 0.0, value)


EMA_PLACES = ("device", "host", "off")
HOST_MEMORY = "pinned_host"


def ema_place(ema_cfg: Any) -> str:
    place = ema_cfg.get("place", "device")
    if place not in EMA_PLACES:
        raise ValueError(f"training.ema.place={place!r}: expected one of {EMA_PLACES}")
    return place


def ema_start(params: Any, place: str) -> Any:
    """The EMA's initial value (the weights), or None when the run keeps no EMA."""
    return None if place == "off" else params


def ema_step(ema: Any, params: Any, decay, place: str) -> Any:
    """One EMA update wherever the EMA lives (a host-memory EMA is updated on the device, leaf by leaf)."""
    if ema is None:
        return None
    if place != "host":
        return ema_update(ema, params, decay)
    to = jax.memory.Space
    return jax.tree_util.tree_map(
        lambda e, p: jax.device_put(ema_update(jax.device_put(e, to.Device), p, decay), to.Host), ema, params)


def ema_shardings(shardings: Any, place: str) -> Any:
    """The EMA's shardings: the weights' own, in host memory when ``place`` is ``host``."""
    if place != "host":
        return shardings
    return jax.tree_util.tree_map(lambda s: s.with_memory_kind(HOST_MEMORY), shardings)


def averaged(ema: Any, params: Any) -> Any:
    """The weights to export or sample with: the EMA, or the online weights of a run without one."""
    return params if ema is None else ema


def ema_update(ema_params: Any, params: Any, decay) -> Any:
    return jax.tree_util.tree_map(lambda e, p: (decay * e + (1 - decay) * p.astype(e.dtype)).astype(e.dtype),
                                  ema_params, params)
