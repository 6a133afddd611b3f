"""Samplers: the whole reverse process as one ``lax.scan`` over precomputed schedule arrays.

``sample(model_fn, noise, rng, objective=..., sampler=..., steps=...)`` is traceable: wrap it (and the model call
inside ``model_fn``) in one ``jax.jit``. Only ``objective``, ``sampler``, ``steps`` and which optional inputs are
given are static; sigma_min / sigma_max, the noise level, guidance scale and conditioning are traced values, so one
compile serves them all.

v-objective samplers work on the variance-exploding form (k-diffusion): the v-model is wrapped as the reference's
``VDenoiser`` (c_skip = 1 / (s^2 + 1), c_out = -s / sqrt(s^2 + 1), c_in = 1 / sqrt(s^2 + 1), model time
t = (2 / pi) atan(s)) and the loop starts from x = sigma_max * noise:

  ddim           first-order DPM-Solver++ (DDIM in VE form): x' = (s'/s) x + (1 - s'/s) D
  dpmpp-2m       DPM-Solver++(2M), k-diffusion's ``sample_dpmpp_2m``
  dpmpp-2m-sde   DPM-Solver++(2M) SDE, eta 1, midpoint (``sample_dpmpp_2m_sde``)
  dpmpp-3m-sde   DPM-Solver++(3M) SDE, eta 1 (``sample_dpmpp_3m_sde``; SAO: 100 steps, sigma 0.3 → 500)
The SDE samplers draw Gaussian increments from a JAX key per step (the reference uses a Brownian tree: same
distribution, not the same numbers).

eps-objective (DDPM, discrete schedule): ``ddpm`` (ancestral, posterior variance) and ``ddim`` (eta 0) over
``steps`` respaced steps. Rectified flow, on stable-audio-tools' logSNR-spaced grid: ``euler`` (the ODE), or
``pingpong`` (few-step models after adversarial post-training, stable-audio-tools' ``sample_flow_pingpong``): each
step denoises in one jump, x0 = x - t v(x, t), then re-noises to the next time with fresh noise,
x' = (1 - t') x0 + t' z; the last step returns x0. 1-8 steps, no CFG.

Audio-to-audio starts from the encoded init latents noised to ``init_noise_level`` (a VE sigma for v, a flow time
<= 1 for rectified flow). Inpainting re-noises the known latents to the current noise level after every step and
mixes them in by ``inpaint_mask`` (1 = keep, fractional values give soft edges): RePaint-style, any model.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from stableaudio_jax.diffusion.objectives import ddpm_alphas_cumprod
from stableaudio_jax.diffusion.schedules import (RF_SCHEDULES, loglinear_sigmas, logsnr_shifted_timesteps,
                                                 rectified_flow_timesteps, sigma_to_t)

SAMPLERS = {"v": ("dpmpp-3m-sde", "dpmpp-2m-sde", "dpmpp-2m", "ddim"), "eps": ("ddpm", "ddim"),
            "rectified_flow": ("euler", "pingpong")}
DEFAULT_SAMPLERS = {"v": "dpmpp-3m-sde", "eps": "ddim", "rectified_flow": "euler"}
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]


def default_sampling(objective: str, cfg_rescale: float = 0.0) -> dict:
    """Generation defaults for a model trained with ``objective`` (stored with every exported model)."""
    check_sampler(objective, DEFAULT_SAMPLERS.get(objective, ""))
    return dict(sampler=DEFAULT_SAMPLERS[objective], steps=100, cfg_scale=7.0, cfg_rescale=float(cfg_rescale),
                sigma_min=0.3, sigma_max=500.0)


def check_sampler(objective: str, sampler: str) -> None:
    if objective not in SAMPLERS:
        raise ValueError(f"objective {objective!r}; expected one of {sorted(SAMPLERS)}")
    if sampler not in SAMPLERS[objective]:
        raise ValueError(f"sampler {sampler!r} is not available for the {objective!r} objective; expected one of "
                         f"{list(SAMPLERS[objective])}")


def v_denoiser(model_fn: ModelFn) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """The v-model as a VE denoiser D(x, sigma) (k-diffusion's ``VDenoiser`` with sigma_data = 1)."""

    def denoise(x, sigma):
        scale = 1.0 / jnp.sqrt(sigma ** 2 + 1)
        v = model_fn(x * scale, jnp.full((x.shape[0],), sigma_to_t(sigma), jnp.float32))
        return x / (sigma ** 2 + 1) - sigma * scale * v

    return denoise


def _mix_known(x, sigma_next, z, inpaint):
    """Replaces the known region by the known latents noised to the next level: x0 + sigma' z (VE form)."""
    if inpaint is None:
        return x
    known, mask = inpaint
    return mask * (known + sigma_next * z) + (1 - mask) * x


def _ve_step(sampler: str, x, denoised, s, s_next, hist, z):
    """One VE update. ``hist`` = (D_1, D_2, h_1, h_2, i) from the previous steps."""
    d1, d2, h1, h2, i = hist
    ratio = s_next / s
    h = jnp.log(s) - jnp.log(s_next)  # inf on the final step to sigma 0
    if sampler == "ddim":
        return ratio * x + (1 - ratio) * denoised
    if sampler == "dpmpp-2m":
        first = ratio * x - jnp.expm1(-h) * denoised
        half_inv_r = h / (2 * h1)
        second = ratio * x - jnp.expm1(-h) * ((1 + half_inv_r) * denoised - half_inv_r * d1)
        return jnp.where((i > 0) & (s_next > 0), second, first)
    decay = -jnp.expm1(-2 * h)  # 1 - exp(-2h): the eta = 1 SDE weight of the denoised estimate
    noise = z * s_next * jnp.sqrt(decay)
    if sampler == "dpmpp-2m-sde":
        x_new = ratio * jnp.exp(-h) * x + decay * denoised
        x_new = x_new + jnp.where(i > 0, 0.5 * decay * (h / h1) * (denoised - d1), 0.0)
    else:  # dpmpp-3m-sde
        h_eta = 2 * h
        phi2 = jnp.expm1(-h_eta) / h_eta + 1
        phi3 = phi2 / h_eta - 0.5
        x_new = jnp.exp(-h_eta) * x + decay * denoised
        r0, r1 = h1 / h, h2 / h
        d1_0, d1_1 = (denoised - d1) / r0, (d1 - d2) / r1
        third = phi2 * (d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)) - phi3 * (d1_0 - d1_1) / (r0 + r1)
        x_new = x_new + jnp.where(i > 1, third, jnp.where(i > 0, phi2 * d1_0, 0.0))
    return jnp.where(s_next > 0, x_new + noise, denoised)


def _scan(step, carry, xs, on_step):
    def body(c, inputs):
        c = step(c, inputs)
        if on_step is not None:
            on_step(inputs[-1])
        return c, None

    return jax.lax.scan(body, carry, xs)[0]


def sample_v(model_fn, noise, rng, sampler, sigmas, x_start, inpaint=None, on_step=None):
    """k-diffusion-style samplers for a v-model over ``sigmas`` (decreasing, ending in 0)."""
    denoise = v_denoiser(model_fn)
    steps = sigmas.shape[0] - 1

    def step(carry, inputs):
        x, d1, d2, h1, h2, key = carry
        s, s_next, i = inputs
        key, z_key, k_key = jax.random.split(key, 3)
        denoised = denoise(x, s)
        z = jax.random.normal(z_key, x.shape, x.dtype) if sampler.endswith("-sde") else None
        x_new = _ve_step(sampler, x, denoised, s, s_next, (d1, d2, h1, h2, i), z)
        x_new = _mix_known(x_new, s_next, jax.random.normal(k_key, x.shape, x.dtype), inpaint)
        h = jnp.log(s) - jnp.log(s_next)
        return (x_new, denoised, d1, h, h1, key)

    zeros = jnp.zeros_like(x_start)
    carry = (x_start, zeros, zeros, jnp.float32(1.0), jnp.float32(1.0), rng)
    return _scan(step, carry, (sigmas[:-1], sigmas[1:], jnp.arange(steps)), on_step)[0]


def sample_eps(model_fn, noise, rng, sampler, steps, alphas_cumprod, start_level, init=None, inpaint=None,
               on_step=None):
    """DDPM ancestral / DDIM for an epsilon model on ``steps`` respaced discrete steps, from VE-equivalent noise
    level ``start_level`` (<= the schedule's largest) down to 0."""
    abar_all = jnp.asarray(alphas_cumprod, jnp.float32)
    total = abar_all.shape[0]
    sigma_ve = jnp.sqrt((1 - abar_all) / abar_all)
    k0 = jnp.where(start_level >= sigma_ve[-1], total - 1, jnp.argmin(jnp.abs(sigma_ve - start_level)))
    ks = jnp.round(jnp.linspace(1.0, 0.0, steps) * k0).astype(jnp.int32)
    abar = abar_all[ks]
    abar_prev = jnp.concatenate([abar[1:], jnp.ones((1,))])
    x_start = noise if init is None else jnp.sqrt(abar[0]) * init + jnp.sqrt(1 - abar[0]) * noise

    def step(carry, inputs):
        x, key = carry
        ab, ab_prev, k, i = inputs
        key, z_key, k_key = jax.random.split(key, 3)
        eps = model_fn(x, jnp.full((x.shape[0],), k / total, jnp.float32))
        x0 = (x - jnp.sqrt(1 - ab) * eps) / jnp.sqrt(ab)
        if sampler == "ddim":
            x_new = jnp.sqrt(ab_prev) * x0 + jnp.sqrt(1 - ab_prev) * eps
        else:  # ancestral: the DDPM posterior q(x_{k'} | x_k, x0) on the respaced grid
            beta = 1 - ab / ab_prev
            mean = (jnp.sqrt(ab_prev) * beta * x0 + jnp.sqrt(1 - beta) * (1 - ab_prev) * x) / (1 - ab)
            var = beta * (1 - ab_prev) / (1 - ab)
            x_new = mean + jnp.sqrt(var) * jax.random.normal(z_key, x.shape, x.dtype)
        if inpaint is not None:
            known, mask = inpaint
            noisy = jnp.sqrt(ab_prev) * known + jnp.sqrt(1 - ab_prev) * jax.random.normal(k_key, x.shape, x.dtype)
            x_new = mask * noisy + (1 - mask) * x_new
        return (x_new, key)

    return _scan(step, (x_start, rng), (abar, abar_prev, ks.astype(jnp.float32), jnp.arange(steps)), on_step)[0]


def sample_rectified_flow(model_fn, noise, rng, steps, t_max, init=None, inpaint=None, on_step=None,
                          sampler: str = "euler", schedule: str = "stable-audio-tools"):
    """Euler on the flow ODE dx/dt = v(x, t) from t_max to 0 (stable-audio-tools' ``sample_rf``, 'euler'), or
    ping-pong: denoise to x0 in one jump, re-noise to the next time (``sample_flow_pingpong``). ``schedule``: the
    time grid of stable-audio-tools (logSNR -6 to 2) or Stable Audio 3 (its logSNR shift, -6.2 to 2)."""
    if schedule not in RF_SCHEDULES:
        raise ValueError(f"rectified-flow schedule {schedule!r}; expected one of {RF_SCHEDULES}")
    ts = (rectified_flow_timesteps(steps, t_max) if schedule == "stable-audio-tools"
          else logsnr_shifted_timesteps(steps, t_max))
    x_start = noise if init is None else init * (1 - ts[0]) + noise * ts[0]

    def step(carry, inputs):
        x, key = carry
        t, t_next, i = inputs
        key, k_key = jax.random.split(key)
        v = model_fn(x, jnp.full((x.shape[0],), t, jnp.float32))
        if sampler == "pingpong":
            z = jax.random.normal(jax.random.fold_in(k_key, 1), x.shape, x.dtype)
            x_new = (1 - t_next) * (x - t * v) + t_next * z
        else:
            x_new = x + (t_next - t) * v
        if inpaint is not None:
            known, mask = inpaint
            noisy = (1 - t_next) * known + t_next * jax.random.normal(k_key, x.shape, x.dtype)
            x_new = mask * noisy + (1 - mask) * x_new
        return (x_new, key)

    return _scan(step, (x_start, rng), (ts[:-1], ts[1:], jnp.arange(steps)), on_step)[0]


def _chain(first: Callable | None, second: Callable) -> Callable:
    return second if first is None else (lambda i: (first(i), second(i)))


def sample(model_fn: ModelFn, noise: jax.Array, rng: jax.Array, *, objective: str = "v",
           sampler: str = "dpmpp-3m-sde", steps: int = 100, sigma_min=0.3, sigma_max=500.0, init_latents=None,
           init_noise_level=None, inpaint_latents=None, inpaint_mask=None, alphas_cumprod=None,
           progress: Callable | None = None, on_step: Callable | None = None,
           rf_schedule: str = "stable-audio-tools") -> jax.Array:
    """Runs the reverse process and returns clean latents, the shape of ``noise`` (standard normal).

    ``model_fn(x, t)`` returns the network output for the objective (v, eps, or flow velocity) and already includes
    conditioning and guidance. ``init_latents`` + ``init_noise_level``: audio-to-audio. ``inpaint_latents`` +
    ``inpaint_mask`` (``[B, T]`` or broadcastable, 1 = keep): inpainting / continuation. ``progress(i)`` is called
    on the host after each step. ``rf_schedule``: rectified flow's time grid (``'stable-audio-3'`` for SA3 models).
    """
    check_sampler(objective, sampler)
    if progress is not None:
        on_step = _chain(on_step, lambda i: jax.debug.callback(progress, i))
    if steps < 1:
        raise ValueError(f"steps is {steps}; expected >= 1")
    if (init_latents is None) != (init_noise_level is None):
        raise ValueError("init_latents and init_noise_level must be given together")
    inpaint = None
    if inpaint_latents is not None:
        mask = jnp.asarray(inpaint_mask, noise.dtype)
        mask = mask[..., None] if mask.ndim == noise.ndim - 1 else mask
        inpaint = (inpaint_latents.astype(noise.dtype), jnp.broadcast_to(mask, noise.shape))
    if objective == "v":
        top = sigma_max if init_noise_level is None else init_noise_level
        sigmas = loglinear_sigmas(steps, jnp.minimum(sigma_min, top), top)
        x_start = noise * sigmas[0] + (0 if init_latents is None else init_latents)
        return sample_v(model_fn, noise, rng, sampler, sigmas, x_start, inpaint, on_step)
    if objective == "eps":
        abar = ddpm_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod
        level = jnp.inf if init_noise_level is None else init_noise_level
        return sample_eps(model_fn, noise, rng, sampler, steps, abar, level, init_latents, inpaint, on_step)
    t_max = 1.0 if init_noise_level is None else init_noise_level
    return sample_rectified_flow(model_fn, noise, rng, steps, t_max, init_latents, inpaint, on_step, sampler,
                                 rf_schedule)
