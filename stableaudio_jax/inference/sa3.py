"""Stable Audio 3 generation in a JIT world: the latent length follows the requested duration, programs are
compiled per length *bucket*, and every frame past a clip's length is masked.

Lengths (the reference's ``generate``): ``n = int((max seconds + 6) * 44100)`` samples rounded up to whole latent
pairs (8192 samples: both SAME autoencoders' alignment), capped at the model's ``max_frames``; each clip's valid
frames are ``ceil(int(seconds * 44100) / 4096) + int(6 * 44100 / 4096)`` (its audio plus 6 s that teach the model
to end), capped at the length. Here the length is then rounded up to the next of a few buckets
(:data:`LENGTH_BUCKETS`), so a service compiles a handful of programs instead of one per duration; with the
DiT's ``padding='exclude'`` the extra frames change nothing in the valid ones (tests/test_sa3_generation.py).

Text-to-audio gives the DiT all-zero local conditioning; inpainting gives ``[keep mask ; latents * mask]`` (1 =
keep); audio-to-audio starts from ``(1 - s) latents + s noise`` with the grid starting at s. Guidance (when
``cfg_scale != 1``) is the reference's: one batched call on [conditional ; unconditional (zeros, or a negative
prompt)], then CFG on the denoised estimates with APG, on the valid frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.diffusion.guidance import guided_prediction
from stableaudio_jax.diffusion.samplers import sample
from stableaudio_jax.models.sa3_conditioning import inpainting_conditioning  # noqa: F401 (part of this API)

LENGTH_BUCKETS = (64, 128, 192, 256, 384, 512, 768, 1024, 1292, 2048, 3072, 4096)  # latent frames, all even


@dataclass(frozen=True)
class Lengths:
    frames: int              # the compiled latent length
    valid: np.ndarray        # [B] frames that hold each clip (its audio and the padding seconds)
    samples: np.ndarray      # [B] audio samples to keep per clip


def latent_lengths(seconds: Sequence[float], *, sample_rate: int = 44100, downsampling_ratio: int = 4096,
                   padding_seconds: float = 6.0, frame_multiple: int = 2, max_frames: int = 1292,
                   buckets: Sequence[int] | None = LENGTH_BUCKETS) -> Lengths:
    """The latent length and per-clip valid frames for clips of ``seconds`` (see the module docstring)."""
    seconds = np.asarray(seconds, np.float64).reshape(-1)
    longest = max_frames * downsampling_ratio / sample_rate
    bad = [float(s) for s in seconds if not (0 < s <= longest + 1e-9)]
    if seconds.size == 0 or bad:
        raise ValueError(f"duration {bad or 'none'} s: expected seconds in (0, {longest:.2f}] for this model "
                         f"({max_frames} latent frames of {downsampling_ratio} samples at {sample_rate} Hz)")
    align = downsampling_ratio * frame_multiple
    samples = int((seconds.max() + padding_seconds) * sample_rate)
    frames = min(-(-samples // align) * align, max_frames * downsampling_ratio) // downsampling_ratio
    if buckets:  # the smallest bucket that holds it, else the model's whole length
        frames = min([b for b in buckets if frames <= b <= max_frames], default=max_frames)
    audio = (seconds * sample_rate).astype(np.int64)
    extra = int(padding_seconds * sample_rate / downsampling_ratio)
    valid = np.minimum(-(-audio // downsampling_ratio) + extra, frames)
    return Lengths(frames=int(frames), valid=valid.astype(np.int32), samples=audio)


def padding_mask(valid: Sequence[int], frames: int) -> jax.Array:
    """``[B, frames]``, True on each clip's valid frames."""
    return jnp.arange(frames)[None] < jnp.asarray(valid)[:, None]


def keep_mask_from_seconds(regions: Sequence[tuple[float, float]], seconds_total: float, frames: int, *,
                           sample_rate: int = 44100, downsampling_ratio: int = 4096) -> np.ndarray:
    """A frame mask ``[frames]`` (1 = keep) with each ``(start, end)`` region (seconds) to generate set to 0, as the
    reference builds it: at audio rate, zero past the audio, then frame i takes sample i * ratio."""
    samples = frames * downsampling_ratio
    keep = np.ones(samples, np.float32)
    for start, end in regions:
        if not (0 <= start < end <= seconds_total):
            raise ValueError(f"inpainting region ({start}, {end}) s: expected 0 <= start < end <= the audio's "
                             f"{seconds_total:.2f} s")
        keep[int(start * sample_rate):int(end * sample_rate)] = 0
    keep[int(seconds_total * sample_rate):] = 0
    return keep[::downsampling_ratio][:frames]


def sa3_velocity(apply_fn: Callable, cross: jax.Array, global_cond: jax.Array, mask: jax.Array | None,
                 local: jax.Array | None, *, cfg_scale=1.0, apg_scale=1.0, uncond_cross: jax.Array | None = None,
                 guided: bool = False) -> Callable:
    """``model_fn(x, t)`` for the samplers: the DiT's velocity, guided as the reference when ``guided`` (static;
    ``cfg_scale`` and ``apg_scale`` may be traced)."""
    if not guided:
        return lambda x, t: apply_fn(x, t, cross, global_cond, local, mask)
    null = jnp.zeros_like(cross) if uncond_cross is None else uncond_cross
    twice = lambda a: None if a is None else jnp.concatenate([a, a])  # noqa: E731

    def model_fn(x, t):
        out = apply_fn(twice(x), twice(t), jnp.concatenate([cross, null]), twice(global_cond), twice(local),
                       twice(mask))
        cond, uncond = jnp.split(out, 2)
        return guided_prediction(x, t, cond, uncond, "rectified_flow", cfg_scale, apg_scale, padding_mask=mask)

    return model_fn


def generate_latents(apply_fn: Callable, noise: jax.Array, rng: jax.Array, cross: jax.Array, global_cond: jax.Array,
                     mask: jax.Array | None = None, *, steps: int = 8, sampler: str = "pingpong",
                     cfg_scale=1.0, apg_scale=1.0, guided: bool = False, uncond_cross: jax.Array | None = None,
                     inpaint_latents: jax.Array | None = None, keep: jax.Array | None = None,
                     init_latents: jax.Array | None = None, init_noise_level=None,
                     progress: Callable | None = None) -> jax.Array:
    """Latents ``[B, T, C]`` from standard-normal ``noise`` on Stable Audio 3's time grid (traceable: jit it).

    ``apply_fn(x, t, cross, global, local, padding_mask)`` is the bound DiT. ``inpaint_latents`` + ``keep``
    ``[B, T]`` (1 = keep): inpainting / continuation through the local conditioning (the reference does not
    paste the kept latents back; neither does this). ``init_latents`` + ``init_noise_level``: audio-to-audio."""
    local = None
    if inpaint_latents is not None:
        local = inpainting_conditioning(inpaint_latents, keep)
    elif keep is not None:
        raise ValueError("generate_latents: a keep mask needs inpaint_latents")
    model_fn = sa3_velocity(apply_fn, cross, global_cond, mask, local, cfg_scale=cfg_scale, apg_scale=apg_scale,
                            uncond_cross=uncond_cross, guided=guided)
    return sample(model_fn, noise, rng, objective="rectified_flow", sampler=sampler, steps=steps,
                  init_latents=init_latents, init_noise_level=init_noise_level, progress=progress,
                  rf_schedule="stable-audio-3")


def trim_audio(audio: Any, lengths: Lengths, downsampling_ratio: int = 4096) -> list[np.ndarray]:
    """Each clip's audio ``[samples, channels]``: zero past its valid frames (the reference multiplies by the mask),
    clipped to [-1, 1] and cut to its requested length."""
    audio = np.asarray(audio)
    out = []
    for b, (valid, samples) in enumerate(zip(lengths.valid, lengths.samples)):
        clip = np.clip(audio[b], -1.0, 1.0)
        clip[int(valid) * downsampling_ratio:] = 0
        out.append(clip[:int(samples)])
    return out

