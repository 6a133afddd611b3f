"""Stable Audio 3's guidance: classifier-free guidance applied to the *denoised* estimates, with adaptive projected
guidance (APG: only the part of the guidance orthogonal to the conditional estimate), an optional cap on the
guidance's norm, and CFG-rescale, as the reference's ``DiffusionTransformer.forward`` computes them.

Arrays are ``[B, T, C]`` (channels last); norms and projections run over a whole item (frames and channels), on
its valid frames only when a padding mask ``[B, T]`` is given. Every scale may be a traced value (one compiled
sampler serves them all); a scale of 0 or 1 gives the same numbers as the reference's special cases.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

OBJECTIVES = ("v", "rectified_flow", "rf_denoiser")


def apg_project(v0: jax.Array, v1: jax.Array, padding_mask: jax.Array | None = None):
    """(parallel, orthogonal) parts of ``v0`` with respect to ``v1``, per item, in float32."""
    dtype, v0, v1 = v0.dtype, v0.astype(jnp.float32), v1.astype(jnp.float32)
    total = lambda a: jnp.sum(a, axis=(1, 2), keepdims=True)  # noqa: E731
    if padding_mask is None:
        unit = v1 / jnp.maximum(jnp.sqrt(total(v1 * v1)), 1e-12)  # torch.nn.functional.normalize's epsilon
        parallel = total(v0 * unit) * unit
        return parallel.astype(dtype), (v0 - parallel).astype(dtype)
    mask = padding_mask[:, :, None].astype(jnp.float32)
    v1 = v1 * mask
    unit = v1 / jnp.maximum(jnp.sqrt(total(v1 * v1)), 1e-8)
    parallel = total(v0 * mask * unit) * unit
    orthogonal = (v0 - total(v0 * unit) * unit) * mask
    return parallel.astype(dtype), orthogonal.astype(dtype)


def _alpha_sigma(t: jax.Array, objective: str):
    if objective not in OBJECTIVES:
        raise ValueError(f"guidance: objective {objective!r}; expected one of {OBJECTIVES}")
    t = t.astype(jnp.float32)[:, None, None]
    if objective == "v":
        return jnp.cos(t * jnp.pi / 2), jnp.sin(t * jnp.pi / 2)
    return jnp.ones_like(t), t


def guided_prediction(x: jax.Array, t: jax.Array, cond: jax.Array, uncond: jax.Array, objective: str,
                      cfg_scale, apg_scale=1.0, cfg_norm_threshold=0.0, scale_phi=0.0,
                      padding_mask: jax.Array | None = None) -> jax.Array:
    """The guided model output (same parameterisation as ``cond``) from the conditional and unconditional ones:
    ``denoised = cond_d + (cfg_scale - 1) * g`` with ``g = apg_scale * orth(diff) + (1 - apg_scale) * diff`` and
    ``diff = cond_d - uncond_d`` (capped at norm ``cfg_norm_threshold`` when that is > 0), then back to the
    model's output, mixed by ``scale_phi`` with its rescale to the conditional output's std over channels."""
    alpha, sigma = _alpha_sigma(t, objective)
    cond_denoised, uncond_denoised = x * alpha - cond * sigma, x * alpha - uncond * sigma
    diff = cond_denoised - uncond_denoised
    masked = diff if padding_mask is None else diff * padding_mask[:, :, None]
    norm = jnp.sqrt(jnp.sum(jnp.square(masked), axis=(1, 2), keepdims=True))
    cap = jnp.minimum(1.0, cfg_norm_threshold / jnp.where(norm > 0, norm, 1.0))
    diff = diff * jnp.where(jnp.asarray(cfg_norm_threshold) > 0, cap, 1.0)
    _, orthogonal = apg_project(diff, cond_denoised, padding_mask)
    guidance = apg_scale * orthogonal + (1 - apg_scale) * diff
    output = (x * alpha - (cond_denoised + (cfg_scale - 1) * guidance)) / sigma
    cond_std = jnp.std(cond, axis=-1, ddof=1, keepdims=True)
    out_std = jnp.std(output, axis=-1, ddof=1, keepdims=True)
    return scale_phi * (output * (cond_std / out_std)) + (1 - scale_phi) * output
