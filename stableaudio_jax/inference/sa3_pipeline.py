"""Stable Audio 3 text-to-audio, audio-to-audio and inpainting from a stored SA3 model (``store.sa3``).

  pipe = SA3Pipeline(load_sa3("models/sa3-small"))
  clips = pipe(["warm analog synth pad"], seconds=[30.0], seed=0)         # [samples, channels] per prompt

Per call: the prompts are tokenised and encoded (T5Gemma), conditioned with their durations, the latent length is
rounded up to a length bucket (``inference.sa3``), the whole reverse process runs as one jitted program per
(bucket, steps, sampler, guidance, input kinds), the SAME decoder turns latents to audio, and each clip is cut to
its duration. Defaults (steps, sampler, guidance) come from the model's ``generation`` config.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.inference import sa3
from stableaudio_jax.models.sa3_conditioning import negative_cross


class SA3Pipeline:
    def __init__(self, model: Any, buckets: Sequence[int] | None = sa3.LENGTH_BUCKETS):
        self.model, self.buckets = model, buckets
        self.generation = model.config.generation
        self.vae = model.vae.module
        self.sample_rate = int(self.generation.sample_rate)

    def lengths(self, seconds: Sequence[float]) -> sa3.Lengths:
        g = self.generation
        return sa3.latent_lengths(seconds, sample_rate=self.sample_rate, downsampling_ratio=self.vae.downsampling_ratio,
                                  padding_seconds=float(g.duration_padding_seconds),
                                  frame_multiple=int(g.frame_multiple), max_frames=int(g.max_frames),
                                  buckets=self.buckets)

    def encode_audio(self, audio: np.ndarray, frames: int) -> jax.Array:
        """Audio ``[B, samples, channels]`` at the model's rate → latents ``[B, frames, C]`` (padded or cut)."""
        samples = frames * self.vae.downsampling_ratio
        audio = np.asarray(audio, np.float32)[:, :samples]
        audio = np.pad(audio, ((0, 0), (0, samples - audio.shape[1]), (0, 0)))
        latents = _encode(self.vae, self.model.vae.params, jnp.asarray(audio))
        return latents[:, :frames]

    def __call__(self, prompts: Sequence[str], seconds: Sequence[float], *, seed: int = 0, steps: int | None = None,
                 sampler: str | None = None, cfg_scale: float | None = None, apg_scale: float | None = None,
                 negative_prompt: str | None = None, init_audio: np.ndarray | None = None,
                 init_noise_level: float | None = None, inpaint_audio: np.ndarray | None = None,
                 inpaint_regions: Sequence[tuple[float, float]] | None = None) -> list[np.ndarray]:
        g = self.generation
        prompts, seconds = list(prompts), [float(s) for s in np.broadcast_to(seconds, (len(prompts),))]
        steps, sampler = int(steps or g.steps), str(sampler or g.sampler)
        cfg = float(g.cfg_scale if cfg_scale is None else cfg_scale)
        apg = float(g.apg_scale if apg_scale is None else apg_scale)
        lengths = self.lengths(seconds)
        cross, global_cond = self._condition(prompts, seconds)
        uncond = None
        if negative_prompt is not None:
            uncond, _ = self._condition([negative_prompt] * len(prompts), seconds, negative=True)
        keys = jax.random.split(jax.random.key(seed))
        noise = jax.random.normal(keys[0], (len(prompts), lengths.frames, self.model.denoiser.latent_channels))
        extra = self._edit_inputs(lengths, seconds, init_audio, init_noise_level, inpaint_audio, inpaint_regions)
        latents = _sample(self.model.denoiser, steps, sampler, cfg != 1.0, self.model.params, noise, keys[1], cross,
                          global_cond, sa3.padding_mask(lengths.valid, lengths.frames), cfg, apg, uncond, **extra)
        audio = _decode(self.vae, self.model.vae.params, latents)
        return sa3.trim_audio(audio, lengths, self.vae.downsampling_ratio)

    def _condition(self, prompts, seconds, negative: bool = False):
        text = self.model.text
        ids, mask = text.tokenize(prompts)
        states = text.encode(ids, mask)
        cross, global_cond = _conditioning(self.model.denoiser, self.model.params, states, jnp.asarray(mask),
                                           jnp.asarray(seconds, jnp.float32))
        return (negative_cross(cross, jnp.asarray(mask)) if negative else cross), global_cond

    def _edit_inputs(self, lengths, seconds, init_audio, init_noise_level, inpaint_audio, regions) -> dict:
        extra = {}
        if init_audio is not None:
            if init_noise_level is None or not 0 < init_noise_level <= 1:
                raise ValueError(f"init_noise_level is {init_noise_level}; audio-to-audio needs a level in (0, 1]")
            extra.update(init_latents=self.encode_audio(init_audio, lengths.frames),
                         init_noise_level=float(init_noise_level))
        if inpaint_audio is not None:
            if not regions:
                raise ValueError("inpaint_audio needs inpaint_regions: (start, end) seconds to generate")
            audio_seconds = np.asarray(inpaint_audio).shape[1] / self.sample_rate
            keep = [sa3.keep_mask_from_seconds(regions, min(s, audio_seconds), lengths.frames,
                                               sample_rate=self.sample_rate,
                                               downsampling_ratio=self.vae.downsampling_ratio) for s in seconds]
            extra.update(inpaint_latents=self.encode_audio(inpaint_audio, lengths.frames), keep=jnp.asarray(keep))
        return extra


@functools.partial(jax.jit, static_argnums=0)
def _conditioning(denoiser, params, states, mask, seconds):
    return denoiser.apply(params, states, mask, seconds, method="condition")


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _sample(denoiser, steps, sampler, guided, params, noise, rng, cross, global_cond, mask, cfg, apg, uncond,
            init_latents=None, init_noise_level=None, inpaint_latents=None, keep=None):
    def apply_fn(x, t, c, g, local, m):
        return denoiser.apply(params, x, t, c, g, local, m, method="velocity")
    return sa3.generate_latents(apply_fn, noise, rng, cross, global_cond, mask, steps=steps, sampler=sampler,
                                cfg_scale=cfg, apg_scale=apg, guided=guided, uncond_cross=uncond,
                                inpaint_latents=inpaint_latents, keep=keep, init_latents=init_latents,
                                init_noise_level=init_noise_level)


@functools.partial(jax.jit, static_argnums=0)
def _encode(vae, params, audio):
    return vae.apply(params, audio, method="encode")


@functools.partial(jax.jit, static_argnums=0)
def _decode(vae, params, latents):
    return vae.apply(params, latents, method="decode").astype(jnp.float32)
