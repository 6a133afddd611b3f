"""Training objectives: noise a clean latent, and the target the denoiser must predict.

  v (Stable Audio)   x_t = alpha x0 + sigma eps (cosine schedule, t in [0, 1]); target v = alpha eps - sigma x0
  eps (DDPM)         x_k = sqrt(alpha_bar_k) x0 + sqrt(1 - alpha_bar_k) eps (discrete k); target eps
  rectified_flow     x_t = (1 - t) x0 + t eps; target eps - x0
The loss is the mean squared error between prediction and target (optionally only over valid latent frames).
``noisy_example`` draws timesteps and noise and returns (model input, model time, target) for a trainer.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.diffusion.schedules import ddpm_betas, v_alpha_sigma

OBJECTIVES = ("v", "eps", "rectified_flow")
TIMESTEP_SAMPLERS = ("uniform", "low_discrepancy", "logit_normal", "log_snr")


def sample_timesteps(rng: jax.Array, batch: int, kind: str = "low_discrepancy") -> jax.Array:
    """Training times in [0, 1).

    'uniform' draws i.i.d.; 'low_discrepancy' stratifies the batch ((u + i / B) mod 1, Kingma et al.'s VDM sampler),
    the same purpose as stable-audio-tools' scrambled-Sobol default; 'logit_normal' is sigmoid(N(0, 1)) (SD3);
    'log_snr' draws logSNR ~ N(-1.2, 2^2) and maps t = sigmoid(-logSNR), clipped to [1e-4, 1 - 1e-4].
    """
    if kind == "uniform":
        return jax.random.uniform(rng, (batch,))
    if kind == "low_discrepancy":
        return jnp.mod(jax.random.uniform(rng, ()) + jnp.arange(batch) / batch, 1.0)
    if kind == "logit_normal":
        return jax.nn.sigmoid(jax.random.normal(rng, (batch,)))
    if kind == "log_snr":
        logsnr = -1.2 + 2.0 * jax.random.normal(rng, (batch,))
        return jnp.clip(jax.nn.sigmoid(-logsnr), 1e-4, 1 - 1e-4)
    raise ValueError(f"timestep sampler {kind!r}; expected one of {TIMESTEP_SAMPLERS}")


def _bcast(t, x):
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def v_noising(x0, eps, t):
    alpha, sigma = v_alpha_sigma(_bcast(t, x0))
    return alpha * x0 + sigma * eps, alpha * eps - sigma * x0


def rectified_flow_noising(x0, eps, t):
    t = _bcast(t, x0)
    return (1 - t) * x0 + t * eps, eps - x0


def eps_noising(x0, eps, step, alphas_cumprod):
    alpha_bar = _bcast(jnp.asarray(alphas_cumprod)[step], x0)
    return jnp.sqrt(alpha_bar) * x0 + jnp.sqrt(1 - alpha_bar) * eps, eps


def ddpm_alphas_cumprod(num_steps: int = 1000, kind: str = "linear") -> np.ndarray:
    return np.cumprod(1.0 - ddpm_betas(num_steps, kind))


class NoisyExample(NamedTuple):
    x_t: jax.Array     # model input
    t: jax.Array       # model time input [B], in [0, 1]
    target: jax.Array  # what the model should output


def noisy_example(rng: jax.Array, x0: jax.Array, objective: str = "v", timestep_sampler: str = "low_discrepancy",
                  alphas_cumprod=None) -> NoisyExample:
    """One training example per batch row: timesteps, Gaussian noise, the noised latent and the target."""
    t_rng, eps_rng = jax.random.split(rng)
    eps = jax.random.normal(eps_rng, x0.shape, x0.dtype)
    t = sample_timesteps(t_rng, x0.shape[0], timestep_sampler)
    if objective == "v":
        x_t, target = v_noising(x0, eps, t)
        return NoisyExample(x_t, t, target)
    if objective == "rectified_flow":
        x_t, target = rectified_flow_noising(x0, eps, t)
        return NoisyExample(x_t, t, target)
    if objective == "eps":
        alphas_cumprod = ddpm_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        num_steps = len(alphas_cumprod)
        step = jnp.minimum((t * num_steps).astype(jnp.int32), num_steps - 1)
        x_t, target = eps_noising(x0, eps, step, alphas_cumprod)
        return NoisyExample(x_t, step.astype(jnp.float32) / num_steps, target)
    raise ValueError(f"objective {objective!r}; expected one of {OBJECTIVES}")


def diffusion_loss(prediction: jax.Array, target: jax.Array, frame_mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error in float32; with ``frame_mask [B, T]`` only valid frames count (all channels)."""
    err = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32))
    if frame_mask is None:
        return jnp.mean(err)
    weights = frame_mask.astype(jnp.float32)[..., None] * jnp.ones_like(err)
    return jnp.sum(err * weights) / jnp.maximum(jnp.sum(weights), 1.0)
