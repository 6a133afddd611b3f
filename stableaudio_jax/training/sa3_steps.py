"""Stable Audio 3's training objective as pure functions: rectified flow on variable-length clips with padding
masks, the reference's random inpainting masks, its length-dependent timestep shift and masked loss
(``training/diffusion.py`` and ``models/inpainting.py`` of the reference).

Per batch of latents ``x0 [B, T, C]`` whose first ``valid[b]`` frames are the clip:
  t        sampled (``diffusion.objectives.sample_timesteps``), then shifted by the clip's length L (clamped to
           [256, 4096]): t' = t / (t + e^mu (1 - t)), mu = -(0.5 + 0.65 (L - 256) / 3840) (the "full" shift)
  x_t      (1 - t) x0 + t noise; the target is noise - x0
  keep     a random inpainting mask (1 = given): 80 % none given, 10 % random segments, 10 % a given prefix;
           zero past the clip; the DiT's local conditioning is [keep ; x0 * keep]
  guidance the whole cross-attention input (prompt and duration tokens) zeroed for 10 % of the examples
  loss     per example, the squared error summed over the valid frames that are not given, over (their count x C);
           the batch mean; optionally plus a weight times the same over the given frames (``context_weight``). Frames past the clip are masked in attention and never reach the loss.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from stableaudio_jax.diffusion.objectives import sample_timesteps
from stableaudio_jax.models.sa3_conditioning import inpainting_conditioning

INPAINT_KINDS = ("segments", "none_given", "prefix")  # the reference's mask types 0, 1 (FULL_MASK), 2 (CAUSAL)


def length_shift(t: jax.Array, length: jax.Array, base: float = 0.5, top: float = 1.15, shortest: int = 256,
                 longest: int = 4096) -> jax.Array:
    """The reference's ``DistributionShift`` (training): longer clips are trained at noisier times."""
    length = jnp.clip(length.astype(jnp.float32), shortest, longest)
    mu = -(base + (top - base) * (length - shortest) / (longest - shortest))
    return t / (t + jnp.exp(mu) * (1 - t))


def random_inpaint_mask(rng: jax.Array, valid: jax.Array, frames: int, probabilities=(0.1, 0.8, 0.1),
                        max_segments: int = 10) -> jax.Array:
    """``keep [B, frames]`` (1 = given to the model, 0 = to generate), zero past each clip (``mask_padding``)."""
    kind_key, count_key, length_key, start_key, prefix_key = jax.random.split(rng, 5)
    batch = valid.shape[0]
    kinds = jax.random.choice(kind_key, 3, (batch,), p=jnp.asarray(probabilities))
    positions = jnp.arange(frames)[None]
    real = valid[:, None].astype(jnp.int32)
    # segments: n in 1..max_segments, each of length 1..max(1, real // n) at a start in 0..real - length
    count = jax.random.randint(count_key, (batch, 1), 1, max_segments + 1)
    lengths = jax.random.randint(length_key, (batch, max_segments), 1, jnp.maximum(1, real // count) + 1)
    starts = jax.random.randint(start_key, (batch, max_segments), 0, jnp.maximum(real - lengths, 0) + 1)
    active = (jnp.arange(max_segments)[None] < count) & (lengths <= real)
    inside = ((positions[:, None] >= starts[..., None]) & (positions[:, None] < (starts + lengths)[..., None])
              & active[..., None])
    segments = ~jnp.any(inside, axis=1)
    prefix = positions < jax.random.randint(prefix_key, (batch, 1), 0, real + 1)
    keep = jnp.where(kinds[:, None] == 0, segments, jnp.where(kinds[:, None] == 2, prefix, False))
    return (keep & (positions < real)).astype(jnp.float32)


def masked_loss(prediction: jax.Array, target: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """The reference's ``compute_masked_loss`` with attention masking: per example, squared error over the masked
    frames / (frames x channels), then the batch mean."""
    error = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32))
    mask = loss_mask.astype(jnp.float32)
    per_example = jnp.sum(error * mask[..., None], axis=(1, 2)) / (jnp.sum(mask, axis=1) * error.shape[-1] + 1e-8)
    return jnp.mean(per_example)


def sa3_loss(velocity_fn: Callable, condition_fn: Callable, batch: dict, rng: jax.Array, *,
             timestep_sampler: str = "logit_normal", cfg_dropout: float = 0.1, inpaint_probabilities=(0.1, 0.8, 0.1),
             shift: bool = True, context_weight: float = 0.0) -> tuple[jax.Array, dict]:
    """The loss of one batch: ``batch`` has ``latents [B, T, C]``, ``valid [B]`` (frames of each clip),
    ``text [B, S, D]``, ``text_mask [B, S]``, ``seconds [B]``. ``condition_fn(text, text_mask, seconds)`` →
    (cross, global); ``velocity_fn(x, t, cross, global, local, padding_mask)`` → v. ``context_weight`` > 0 adds
    the given frames' loss times it (the reference's ``mask_loss_weight`` with attention masking): without it the
    model is never asked what to output where the latents are given, and inpainting does not paste them back."""
    x0, valid = batch["latents"], batch["valid"]
    batch_size, frames = x0.shape[:2]
    t_key, noise_key, mask_key, drop_key = jax.random.split(rng, 4)
    t = sample_timesteps(t_key, batch_size, timestep_sampler)
    if shift:
        t = length_shift(t, valid)
    noise = jax.random.normal(noise_key, x0.shape, jnp.float32)
    x_t = (1 - t[:, None, None]) * x0 + t[:, None, None] * noise
    padding = jnp.arange(frames)[None] < valid[:, None]
    keep = random_inpaint_mask(mask_key, valid, frames, inpaint_probabilities)
    cross, global_cond = condition_fn(batch["text"], batch["text_mask"], batch["seconds"])
    dropped = jax.random.uniform(drop_key, (batch_size, 1, 1)) < cfg_dropout
    cross = jnp.where(dropped, 0.0, cross)
    v = velocity_fn(x_t, t, cross, global_cond, inpainting_conditioning(x0, keep), padding)
    loss_mask = padding & (keep == 0)
    loss = masked_loss(v, noise - x0, loss_mask)
    metrics = {"generated_fraction": jnp.mean(jnp.sum(loss_mask, 1) / jnp.maximum(valid, 1))}
    if context_weight:
        context = masked_loss(v, noise - x0, padding & (keep > 0))
        loss, metrics = loss + context_weight * context, dict(metrics, context_loss=context)
    return loss, dict(metrics, loss=loss)


def bound_loss(denoiser: Any, **options) -> Callable:
    """``loss(params, batch, rng) -> (loss, metrics)`` for an :class:`~stableaudio_jax.models.sa3_conditioning.
    SA3Denoiser` (differentiable in ``params``)."""
    def loss(params, batch, rng):
        condition = lambda *a: denoiser.apply(params, *a, method="condition")  # noqa: E731
        velocity = lambda *a: denoiser.apply(params, *a, method="velocity")  # noqa: E731
        return sa3_loss(velocity, condition, batch, rng, **options)
    return loss


def trainer_loss(model: Any, params: dict, batch: dict, rng: jax.Array, training: Any,
                 rngs: dict | None = None) -> tuple[jax.Array, dict]:
    """:func:`sa3_loss` of a latent-reader batch (``train``): ``model`` is a
    :class:`~stableaudio_jax.models.sa3_conditioning.SA3Conditioned`, ``params`` its ``{"denoiser",
    "conditioner"}``; each record's ``padding_mask`` (a prefix of valid frames) gives the clip's length and its
    ``seconds_total`` the duration token; ``training`` is ``config.training`` (sampler, CFG dropout, ``sa3``)."""
    valid = jnp.sum(batch["padding_mask"].astype(jnp.int32), axis=1)
    sa3_batch = {"latents": batch["latents"].astype(jnp.float32), "valid": valid, "text": batch["text_embeddings"],
                 "text_mask": batch["text_mask"], "seconds": batch["seconds_total"]}

    def condition(text, text_mask, seconds):
        cond = model.condition(params, text, text_mask, None, seconds)
        return cond["cross_attn_cond"], cond["global_cond"]

    def velocity(x, t, cross, global_cond, local, padding):
        return model.denoiser.apply(params["denoiser"], x, t, cross, global_cond, local, padding, rngs=rngs)
    options = training.sa3
    return sa3_loss(velocity, condition, sa3_batch, rng, timestep_sampler=training.timestep_sampler,
                    cfg_dropout=float(training.cfg_dropout),
                    inpaint_probabilities=tuple(options.inpaint_probabilities), shift=bool(options.length_shift),
                    context_weight=float(options.get("context_loss_weight", 0.0)))
