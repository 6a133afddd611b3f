"""Periodic demo generations during diffusion training: fixed prompts → EMA denoiser → VAE decode → wav + PNG.

Like stable-audio-tools' demo callback, demos use the EMA weights, guidance on, timing (0, seconds). The sampling
loop is the pipeline's (one jitted ``lax.scan``), compiled once per run; prompts are embedded once.
Files: ``<workdir>/demos/step_<N>/<i>.wav`` and ``.png``.

On a multi-host run the weights are sharded over every host's devices, and no process can read them alone: every
process calls :class:`DemoHook`, which gathers them (a collective, as the exports do), and process 0 renders on its
own first device.
"""
from __future__ import annotations

import functools
import logging
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.audio.io import write_audio, write_spectrogram_png
from stableaudio_jax.diffusion.samplers import DEFAULT_SAMPLERS, sample
from stableaudio_jax.store.format import host_arrays
from stableaudio_jax.training import diffusion_steps
from stableaudio_jax.training.loop import LoopStep

logger = logging.getLogger(__name__)


class DemoHook:
    """A loop hook (``(training.demo.every, hook)``) that every process runs: the weights ``params_fn(state)``
    returns are gathered to the host (every process must take part when they are sharded over hosts) and
    ``writer`` (process 0's :class:`DemoWriter`; None elsewhere) renders them."""

    def __init__(self, writer: "DemoWriter | None", params_fn: Callable[[Any], dict]):
        self.writer, self.params_fn = writer, params_fn

    def __call__(self, step: LoopStep) -> list[str]:
        params = host_arrays(self.params_fn(step.state))
        return [] if self.writer is None else self.writer(step.done, params)


class DemoWriter:
    def __init__(self, run: diffusion_steps.DiffusionTraining, vae, text, config, workdir: str):
        d = config.training.demo
        self.run, self.vae, self.workdir = run, vae, workdir
        self.prompts = list(d.prompts)
        self.steps, self.cfg_scale = int(d.steps), float(d.cfg_scale)
        self.objective = config.diffusion.objective
        ratio, rate = vae.module.downsampling_ratio, vae.module.sample_rate
        frames = (math.ceil(d.seconds * rate / ratio) if d.seconds else config.training.crop_frames)
        self.frames, self.sample_rate, self.seconds = frames, rate, frames * ratio / rate
        embeddings, mask = text(self.prompts)
        if embeddings.shape[1:] != (run.text_length, run.text_dim):
            raise ValueError(f"demo text encoder {text.source} gives [{embeddings.shape[1]}, {embeddings.shape[2]}] "
                             f"embeddings; the training data has [{run.text_length}, {run.text_dim}]")
        count = len(self.prompts)
        self.batch = {"text_embeddings": jnp.asarray(embeddings), "text_mask": jnp.asarray(mask, bool),
                      "seconds_start": jnp.zeros((count,), jnp.float32),
                      "seconds_total": jnp.full((count,), self.seconds, jnp.float32)}
        # one compile per run (the run's modules and config are closed over, not hashed)
        self._sample = jax.jit(functools.partial(_sample, run, self.objective, DEFAULT_SAMPLERS[self.objective],
                                                 self.steps))

    def __call__(self, step: int, params: dict, seed: int = 0) -> list[str]:
        """Demo clips of the model with ``params`` (the run's averaged weights: ``lora_runs.sampling_params``) as
        host arrays (``host_arrays``: sharded weights are gathered by every process first, see :class:`DemoHook`),
        sampled on this process's first device."""
        params = jax.device_put(params, jax.local_devices()[0])
        noise = jax.random.normal(jax.random.key(seed), (len(self.prompts), self.frames, self.run.latent_channels))
        latents = self._sample(params, self.batch, noise, jax.random.key(seed + 1), self.cfg_scale)
        audio = np.asarray(_decode(self.vae.module, self.vae.params, latents))
        folder = os.path.join(self.workdir, "demos", f"step_{step}")  # a local folder or a bucket URL
        written = []
        for i, clip in enumerate(audio):
            base = os.path.join(folder, f"{i}")
            written.append(write_audio(base + ".wav", clip, self.sample_rate))
            write_spectrogram_png(base + ".png", clip, self.sample_rate)
        logger.info("demos for step %d: %s (peak %.3f)", step, folder, float(np.abs(audio).max()))
        return written


def _sample(run, objective, sampler, steps, params, batch, noise, rng, cfg_scale):
    cond = diffusion_steps.condition(run, params, batch)
    rescale = float(run.config.get("guidance", {}).get("scale_phi", 0.0))
    model_fn = lambda x, t: run.model.guided(params, x, t, cond, cfg_scale, rescale)  # noqa: E731
    return sample(model_fn, noise, rng, objective=objective, sampler=sampler, steps=steps)


@functools.partial(jax.jit, static_argnames=("vae",))
def _decode(vae, params: Any, latents):
    return vae.apply(params, latents, method=type(vae).decode).astype(jnp.float32)
