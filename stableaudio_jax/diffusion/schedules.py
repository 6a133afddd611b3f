"""Noise schedules.

Three parametrisations are used:
  * v-objective (Stable Audio): continuous t in [0, 1], alpha = cos(pi t / 2), sigma = sin(pi t / 2). Samplers work in
    the equivalent variance-exploding form (k-diffusion): sigma_ve = sigma / alpha = tan(pi t / 2), x_ve = x / alpha.
  * epsilon-objective (DDPM): discrete steps k = 0..T-1 with betas; alpha_bar_k = prod(1 - beta). The network sees
    t = k / T.
  * rectified flow: x_t = (1 - t) x0 + t eps, t in [0, 1].
Schedules that feed a jitted sampler are arrays built from traced scalars where that matters (sigma_min, sigma_max),
so changing them never recompiles; only the number of steps is static.
"""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np


def v_alpha_sigma(t):
    """alpha, sigma of the v-objective's cosine schedule at continuous time t."""
    return jnp.cos(t * (math.pi / 2)), jnp.sin(t * (math.pi / 2))


def sigma_to_t(sigma):
    """Variance-exploding sigma → the v-model's time input: t = (2 / pi) atan(sigma)."""
    return jnp.arctan(sigma) * (2 / math.pi)


def t_to_sigma(t):
    return jnp.tan(t * (math.pi / 2))


def loglinear_sigmas(steps: int, sigma_min, sigma_max):
    """k-diffusion's polyexponential schedule with rho = 1 (log-linear), ``steps`` values from sigma_max down to
    sigma_min, then a final 0 → ``steps + 1`` values (one model call per step)."""
    ramp = jnp.linspace(0.0, 1.0, steps)
    log_sigmas = jnp.log(sigma_max) + ramp * (jnp.log(sigma_min) - jnp.log(sigma_max))
    return jnp.concatenate([jnp.exp(log_sigmas), jnp.zeros((1,))])


def karras_sigmas(steps: int, sigma_min, sigma_max, rho: float = 7.0):
    """Karras et al. (2022) schedule, then a final 0."""
    ramp = jnp.linspace(0.0, 1.0, steps)
    min_inv, max_inv = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return jnp.concatenate([(max_inv + ramp * (min_inv - max_inv)) ** rho, jnp.zeros((1,))])


def ddpm_betas(num_steps: int = 1000, kind: str = "linear", beta_start: float = 1e-4,
               beta_end: float = 2e-2) -> np.ndarray:
    """DDPM betas: 'linear' (Ho et al.), 'scaled_linear' (linear in sqrt beta), 'cosine' (Nichol & Dhariwal)."""
    if kind == "linear":
        return np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    if kind == "scaled_linear":
        return np.linspace(beta_start ** 0.5, beta_end ** 0.5, num_steps, dtype=np.float64) ** 2
    if kind == "cosine":
        s = 0.008
        steps = np.arange(num_steps + 1, dtype=np.float64) / num_steps
        alpha_bar = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return np.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0, 0.999)
    raise ValueError(f"ddpm_betas: kind is {kind!r}; expected 'linear', 'scaled_linear' or 'cosine'")


def rectified_flow_timesteps(steps: int, t_max=1.0):
    """stable-audio-tools' ``sample_rf`` grid: t = sigmoid(-linspace(logsnr_max, 2, steps + 1)) with logsnr_max = -6
    for t_max = 1 (else log((1 - t_max) / t_max)), then t[0] = t_max and t[-1] = 0."""
    t_max = jnp.minimum(jnp.asarray(t_max, jnp.float32), 1.0)
    logsnr_max = jnp.where(t_max < 1, jnp.log((1 - t_max) / t_max + 1e-6), -6.0)
    t = 1 / (1 + jnp.exp(jnp.linspace(0.0, 1.0, steps + 1) * (2.0 - logsnr_max) + logsnr_max))
    return t.at[0].set(t_max).at[-1].set(0.0)


RF_SCHEDULES = ("stable-audio-tools", "stable-audio-3")


def logsnr_shifted_timesteps(steps: int, t_max=1.0, anchor_logsnr: float = -6.2, logsnr_end: float = 2.0,
                             rate: float = 0.0, seq_len=None, anchor_length: int = 2000):
    """Stable Audio 3's grid (``build_schedule`` with its default ``LogSNRShift``): t = linspace(t_max, 0, steps + 1)
    mapped through logsnr = end - t (end - start), t' = sigmoid(-logsnr), with start = anchor_logsnr - rate
    log2(seq_len / anchor_length) (rate 0 by default: the same grid at every length); t = 0 and t = 1 stay exact,
    and the first time is t_max."""
    t = jnp.linspace(jnp.asarray(t_max, jnp.float32), 0.0, steps + 1)
    start = anchor_logsnr - (0.0 if seq_len is None or rate == 0 else rate * jnp.log2(seq_len / anchor_length))
    shifted = 1 / (1 + jnp.exp(logsnr_end - t * (logsnr_end - start)))  # sigmoid(-logsnr)
    shifted = jnp.where(t <= 0, 0.0, jnp.where(t >= 1, 1.0, shifted))
    return shifted.at[0].set(t_max)

