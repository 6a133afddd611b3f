"""Text-to-audio: prompt → T5 → conditioning → one jitted sampling scan with guidance → VAE decode → audio.

Any stored text-to-audio model runs here (``store.load_text_to_audio``): a DiT or a U-Net denoiser, trained with
v, eps or rectified flow, with the samplers its objective allows; the conditioning and guidance rules are the
model's own (``models.conditioned.ConditionedDenoiser``), the same that trained it.

``TextToAudioPipeline.generate`` never recompiles for a new prompt, negative prompt, guidance scale, CFG rescale,
seed, duration or sigma range: all of them are traced values. A new batch size, step count, sampler or window length
compiles once. Long windows are decoded in chunks (exact, bounded memory). With a mesh, the batch is sharded over
its ('data', 'fsdp') axes.
"""
from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from stableaudio_jax.audio.io import load_audio, match_channels, resample
from stableaudio_jax.diffusion.samplers import check_sampler, sample
from stableaudio_jax.inference.generation_inputs import (GenerationRequest, audio_to_window, mask_to_latent_frames,
                                                         parse_request)
from stableaudio_jax.inference.progress import ProgressHooks
from stableaudio_jax.models.chunked_vae import chunked_decode, decoder_receptive_field
from stableaudio_jax.models.conditioned import ConditionedDenoiser
from stableaudio_jax.store import TextToAudioModel, load_text_to_audio, save_text_to_audio

BATCH_AXES = ("data", "fsdp")


@functools.partial(jax.jit, static_argnames=("model", "objective", "sampler", "steps", "hooks", "guidance"))
def _sample_latents(model: ConditionedDenoiser, params, noise, rng, cond, negative, cfg_scale, cfg_rescale,
                    sigma_min, sigma_max, init_latents, init_level, inpaint_latents, inpaint_mask, call_id, *,
                    objective, sampler, steps, hooks, guidance=True):
    def model_fn(x, t):
        if not guidance:  # cfg_scale 1 without a negative prompt is the conditional prediction: one pass, not two
            return model.predict(params, x, t, cond)
        return model.guided(params, x, t, cond, cfg_scale, cfg_rescale, negative)

    on_step = None if hooks is None else (lambda step: jax.debug.callback(hooks, call_id, step))
    return sample(model_fn, noise, rng, objective=objective, sampler=sampler, steps=steps, sigma_min=sigma_min,
                  sigma_max=sigma_max, init_latents=init_latents, init_noise_level=init_level,
                  inpaint_latents=inpaint_latents, inpaint_mask=inpaint_mask, on_step=on_step)


@functools.partial(jax.jit, static_argnames=("model",))
def _conditioning(model: ConditionedDenoiser, params, text, text_mask, neg_text, neg_mask, start, total):
    cond = model.condition(params, text, text_mask, start, total)
    negative = None if neg_text is None else model.condition(params, neg_text, neg_mask, start, total)
    return cond, negative


@functools.partial(jax.jit, static_argnames=("vae", "chunk_size", "overlap"))
def _decode(vae, params, latents, chunk_size, overlap):
    return chunked_decode(vae, params, latents, chunk_size=chunk_size, overlap=overlap).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("vae",))
def _encode(vae, params, audio):
    # the posterior mean: deterministic (stable-audio-tools samples; the difference is within the posterior std)
    return vae.apply(params, audio, method=type(vae).encode)


class TextToAudioPipeline:
    """Prompt in, audio out, with any text-to-audio model of the store (DiT or U-Net denoiser). Build with
    :meth:`from_pretrained` (a Hugging Face Hub repo, converted once and cached), :meth:`from_checkpoint` (a stored
    model: ``convert`` / ``train`` / :meth:`save`), :meth:`from_pretrained_stable_audio` or :meth:`from_diffusers`
    (local reference checkpoints)."""

    def __init__(self, model: TextToAudioModel, mesh: Mesh | None = None):
        self.model, self.mesh = model, mesh
        self.diffusion, self.vae = model.diffusion.model, model.vae.module
        self.config = model.config
        self.objective = model.diffusion.objective
        self.sample_rate = int(model.config.audio.sample_rate)
        self.audio_channels = int(model.config.audio.channels)
        self.latent_frames = int(model.config.audio.sample_size) // self.vae.downsampling_ratio
        self.window_samples = self.latent_frames * self.vae.downsampling_ratio
        self.params = {"text": model.text.params, "diffusion": model.diffusion.params, "vae": model.vae.params}
        if mesh is not None:  # parameters replicated over the mesh; the batch is sharded in generate()
            self.params = jax.device_put(self.params, NamedSharding(mesh, PartitionSpec()))
        self.text = model.text.with_params(self.params["text"])
        self._progress = ProgressHooks()  # this pipeline's own: callbacks reach the generate() call that passed them

    @property
    def window_seconds(self) -> float:
        return self.window_samples / self.sample_rate

    def set_window_seconds(self, seconds: float) -> None:
        """Changes the generation window (the config's ``audio.sample_size`` by default: 47.55 s for SAO), rounded
        up to whole latent frames. Longer windows suit models trained on them (rotary positions extrapolate poorly).
        """
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"window seconds={seconds}; expected a positive number")
        ratio = self.vae.downsampling_ratio
        self.latent_frames = max(1, math.ceil(seconds * self.sample_rate / ratio))
        self.window_samples = self.latent_frames * ratio

    # ------------------------------------------------------------------------------------------- construction

    @classmethod
    def from_pretrained_stable_audio(cls, checkpoint: str | os.PathLike, model_config: Any,
                                     t5_directory: str | os.PathLike | None = None, dtype: Any = jnp.float32,
                                     mesh: Mesh | None = None, clap_tokenizer: str | os.PathLike | None = None
                                     ) -> "TextToAudioPipeline":
        """A stable-audio-tools checkpoint (``model.safetensors`` / ``.ckpt`` + ``model_config.json``) and its text
        encoder: for T5 models (SAO) ``t5_directory``; for CLAP models (Stable Audio 1.0 / 2.0) ``t5_directory`` is
        the CLAP checkpoint (LAION ``.pt`` or a Hugging Face CLAP folder; not needed when the model was trained
        with ``finetune: true`` and carries it) and ``clap_tokenizer`` a roberta-base tokenizer folder."""
        from stableaudio_jax.convert import load_clap, load_hf_t5, load_stable_audio_tools, text_to_audio_model
        bundle = load_stable_audio_tools(checkpoint, model_config, dtype=dtype)
        text_config = bundle.config.conditioning.text
        max_length = int(text_config.max_length)
        if text_config.type == "clap":
            source = bundle.text_state or t5_directory
            if source is None:
                raise ValueError(f"{os.fspath(checkpoint)}: a CLAP-conditioned model whose checkpoint does not carry "
                                 "CLAP's weights: give the CLAP checkpoint (--clap)")
            text = load_clap(source, clap_tokenizer, int(text_config.layer), str(text_config.output), max_length,
                             dtype=dtype)
        elif t5_directory is None:
            raise ValueError(f"{os.fspath(checkpoint)}: a T5-conditioned model: give the T5 directory (--t5)")
        else:
            text = load_hf_t5(t5_directory, max_length=max_length, dtype=dtype)
        return cls(text_to_audio_model(bundle, text, os.fspath(checkpoint)), mesh)

    @classmethod
    def from_diffusers(cls, directory: str | os.PathLike, t5_directory: str | os.PathLike | None = None,
                       max_length: int = 128, dtype: Any = jnp.float32, mesh: Mesh | None = None):
        """A diffusers ``StableAudioPipeline`` folder; T5 from its ``text_encoder/`` + ``tokenizer/spiece.model``
        unless ``t5_directory`` is given."""
        from stableaudio_jax.convert import load_diffusers, load_hf_t5, text_to_audio_model
        bundle = load_diffusers(directory, dtype=dtype)
        if t5_directory is None:
            text = load_hf_t5(os.path.join(directory, "text_encoder"), max_length, dtype,
                              tokenizer_file=os.path.join(directory, "tokenizer", "spiece.model"))
        else:
            text = load_hf_t5(t5_directory, max_length, dtype)
        return cls(text_to_audio_model(bundle, text, os.fspath(directory)), mesh)

    @classmethod
    def from_checkpoint(cls, directory: str | os.PathLike, dtype: Any = jnp.float32, mesh: Mesh | None = None,
                        loras: Sequence[str] = ()):
        """A stored text-to-audio model (``stableaudio-jax convert``, a finished ``train`` run's ``model/``,
        :meth:`save`); ``loras``: LoRA adapters (``PATH`` or ``PATH:SCALE``) merged into its denoiser."""
        model = load_text_to_audio(directory, dtype)
        if loras:
            from stableaudio_jax.store.adapters import with_loras
            model = with_loras(model, loras)
        return cls(model, mesh)

    @classmethod
    def from_pretrained(cls, repo_id: str | os.PathLike, revision: str | None = None, token: str | bool | None = None,
                        cache_dir: str | os.PathLike | None = None, dtype: Any = jnp.float32,
                        mesh: Mesh | None = None, loras: Sequence[str] = ()) -> "TextToAudioPipeline":
        """A Stable Audio model from the Hugging Face Hub (``"stabilityai/stable-audio-open-1.0"``,
        ``"hf:OWNER/NAME@REVISION"``), downloaded and converted on first use, from the local cache afterwards.

        ``revision``: branch, tag or commit (a cached commit needs no request to the Hub; a branch, one metadata
        request). ``token``: for gated repos (default: ``HF_TOKEN`` or the saved ``hf auth login``). ``cache_dir``:
        the converted models' cache (default ``$STABLEAUDIO_JAX_CACHE/hub``, else ``~/.cache/stableaudio_jax/hub``);
        the downloads themselves go to the Hugging Face cache. A stored model's directory is loaded as it is.
        Failures raise :class:`stableaudio_jax.convert.hub.HubError` naming the repo and what to do."""
        from stableaudio_jax.store import is_stored_model
        if os.path.isdir(os.fspath(repo_id)) and is_stored_model(repo_id):
            return cls.from_checkpoint(repo_id, dtype, mesh, loras)
        from stableaudio_jax.convert.pretrained import converted_model
        directory = converted_model(os.fspath(repo_id), revision, token=token, cache_dir=cache_dir)
        return cls.from_checkpoint(directory, dtype, mesh, loras)

    def save(self, directory: str | os.PathLike, overwrite: bool = False) -> str:
        """Writes the model as a stored text-to-audio model (what :meth:`from_checkpoint` reads)."""
        return save_text_to_audio(directory, self.model, overwrite)

    # ---------------------------------------------------------------------------------------------- generate

    def generate(self, prompts: str | Sequence[str], negative_prompt: str | Sequence[str] | None = None,
                 seconds_start: float | Sequence[float] = 0.0, seconds_total: float | Sequence[float] | None = None,
                 steps: int | None = None, cfg_scale: float | None = None, sampler: str | None = None,
                 sigma_min: float | None = None, sigma_max: float | None = None, cfg_rescale: float | None = None,
                 seed: int = 0, init_audio: np.ndarray | str | None = None, init_audio_sample_rate: int | None = None,
                 init_noise_level: float = 1.0, inpaint_audio: np.ndarray | str | None = None,
                 inpaint_mask: np.ndarray | None = None, inpaint_audio_sample_rate: int | None = None,
                 initial_noise: np.ndarray | None = None, progress: Callable[[int], None] | None = None,
                 return_latents: bool = False, timings: dict | None = None):
        """Audio ``[batch, samples, channels]`` float32 at the model rate, cropped to the longest ``seconds_total``
        (each prompt's samples past its own ``seconds_total`` are zero; ``None`` keeps the whole window).

        ``init_audio`` (array ``[samples, channels]`` / ``[batch, samples, channels]`` or a file path) turns on
        audio-to-audio from ``init_noise_level``; ``inpaint_audio`` + ``inpaint_mask`` (``[samples]`` or ``[batch,
        samples]``, True/1 = keep) regenerate the rest. ``initial_noise`` (``[batch, latent frames, latent dim]``,
        standard normal) replaces the seeded draw. ``progress(step)`` is called after each sampling step.
        ``timings``, a dict, receives the wall seconds of conditioning (T5 + timing), sampling and decoding.
        Guidance: ``cfg_scale`` s gives ``uncond + s * (cond - uncond)`` (s = 1: no guidance; s = 1 + w in the
        ``(1 + w) cond - w uncond`` form of the papers). Defaults come from the model's ``sampling`` config.
        """
        clock = _Clock(timings)
        s = self.config.sampling
        req = parse_request(prompts, negative_prompt, seconds_start, seconds_total, self.window_seconds,
                            steps if steps is not None else s.steps, sampler or s.sampler,
                            cfg_scale if cfg_scale is not None else s.cfg_scale,
                            sigma_min if sigma_min is not None else s.sigma_min,
                            sigma_max if sigma_max is not None else s.sigma_max,
                            cfg_rescale if cfg_rescale is not None else s.get("cfg_rescale", 0.0), init_noise_level)
        check_sampler(self.objective, req.sampler)
        batch = len(req.prompts)
        padded = self._padded_batch(batch)
        noise_key, sample_key = jax.random.split(jax.random.key(seed))
        latent_shape = (padded, self.latent_frames, self.vae.latent_dim)
        noise = self._noise(initial_noise, noise_key, latent_shape, batch)
        cond, negative = clock.lap("conditioning_s", self._conditioning(req, padded))
        init = self._init_latents(init_audio, init_audio_sample_rate, padded)
        inpaint = self._inpaint(inpaint_audio, inpaint_mask, inpaint_audio_sample_rate, padded)
        put = self._shard
        with self._progress.registered(progress) as call_id:
            latents = _sample_latents(
                self.diffusion, self.params["diffusion"], put(noise), sample_key, put(cond),
                None if negative is None else put(negative), jnp.float32(req.cfg_scale),
                jnp.float32(req.cfg_rescale), jnp.float32(req.sigma_min), jnp.float32(req.sigma_max),
                None if init is None else put(init), None if init is None else jnp.float32(req.init_noise_level),
                None if inpaint is None else put(inpaint[0]), None if inpaint is None else put(inpaint[1]),
                jnp.int32(call_id), objective=self.objective, sampler=req.sampler, steps=req.steps,
                hooks=self._progress if progress is not None else None,
                guidance=negative is not None or float(req.cfg_scale) != 1.0)
            latents = clock.lap("sampling_s", latents)
        audio = clock.lap("decode_s", self.decode(latents))[:batch]
        audio = self._crop(audio, req.seconds_total)
        return (audio, np.asarray(latents[:batch])) if return_latents else audio

    def decode(self, latents: jax.Array) -> np.ndarray:
        overlap = max(32, decoder_receptive_field(self.vae))
        return np.asarray(_decode(self.vae, self.params["vae"], latents, 128, overlap))

    # ------------------------------------------------------------------------------------------------ helpers

    def _padded_batch(self, batch: int) -> int:
        if self.mesh is None:
            return batch
        shards = math.prod(self.mesh.shape[a] for a in BATCH_AXES if a in self.mesh.shape)
        return -(-batch // shards) * shards

    def _shard(self, x):
        if self.mesh is None:
            return x
        axes = tuple(a for a in BATCH_AXES if a in self.mesh.shape)
        return jax.device_put(x, NamedSharding(self.mesh, PartitionSpec(axes)))

    def _noise(self, initial_noise, key, shape, batch):
        if initial_noise is None:
            return jax.random.normal(key, shape, jnp.float32)
        noise = np.asarray(initial_noise, np.float32)
        if noise.shape != (batch,) + shape[1:]:
            raise ValueError(f"initial_noise has shape {noise.shape}; expected {(batch,) + shape[1:]}")
        return jnp.asarray(np.concatenate([noise, np.zeros((shape[0] - batch,) + shape[1:], np.float32)]))

    def _conditioning(self, req: GenerationRequest, padded: int):
        pad = lambda seq: list(seq) + [seq[-1]] * (padded - len(seq))  # noqa: E731
        text, mask = self.text(pad(req.prompts))
        neg_text = neg_mask = None
        if req.negative_prompts is not None:
            neg_text, neg_mask = self.text(pad(req.negative_prompts))
        start = jnp.asarray(pad(req.seconds_start), jnp.float32)
        total = jnp.asarray(pad(req.seconds_total_conditioning), jnp.float32)
        return _conditioning(self.diffusion, self.params["diffusion"], text, jnp.asarray(mask), neg_text,
                             None if neg_mask is None else jnp.asarray(neg_mask), start, total)

    def _load(self, audio, rate, what):
        """→ (audio at the model rate and channel count [B, N, C], the source rate, the source sample count)."""
        if isinstance(audio, (str, os.PathLike)):
            audio, rate = load_audio(audio)
        audio = np.asarray(audio, np.float32)
        rate = self.sample_rate if rate is None else int(rate)
        if audio.ndim == 2:
            audio = audio[None]
        if audio.ndim != 3:
            raise ValueError(f"{what} has shape {audio.shape}; expected [samples, channels] or [batch, samples, "
                             "channels]")
        converted = [match_channels(resample(a, rate, self.sample_rate), self.audio_channels) for a in audio]
        return np.stack(converted), rate, audio.shape[1]

    def _batched(self, arr, padded, what):
        if arr.shape[0] == 1:
            return np.repeat(arr, padded, axis=0)
        if arr.shape[0] > padded:
            raise ValueError(f"{what} has batch {arr.shape[0]}; expected 1 or the number of prompts")
        return np.concatenate([arr, np.repeat(arr[-1:], padded - arr.shape[0], axis=0)])

    def _init_latents(self, init_audio, rate, padded):
        if init_audio is None:
            return None
        audio = self._load(init_audio, rate, "init_audio")[0]
        window = audio_to_window(audio, self.window_samples)
        return _encode(self.vae, self.params["vae"], jnp.asarray(self._batched(window, padded, "init_audio")))

    def _inpaint(self, inpaint_audio, inpaint_mask, rate, padded):
        if inpaint_audio is None and inpaint_mask is None:
            return None
        if inpaint_audio is None or inpaint_mask is None:
            raise ValueError("inpaint_audio and inpaint_mask must be given together")
        audio, source_rate, source_samples = self._load(inpaint_audio, rate, "inpaint_audio")
        frames = mask_to_latent_frames(inpaint_mask, source_samples, source_rate, self.sample_rate,
                                       self.vae.downsampling_ratio, self.latent_frames)
        latents = _encode(self.vae, self.params["vae"],
                          jnp.asarray(self._batched(audio_to_window(audio, self.window_samples), padded,
                                                    "inpaint_audio")))
        return latents, jnp.asarray(self._batched(frames, padded, "inpaint_mask"))

    def _crop(self, audio: np.ndarray, seconds_total: list[float] | None) -> np.ndarray:
        if seconds_total is None:
            return audio
        lengths = [min(round(s * self.sample_rate), audio.shape[1]) for s in seconds_total]
        audio = audio[:, : max(lengths)].copy()
        for i, n in enumerate(lengths):
            audio[i, n:] = 0.0
        return audio


class _Clock:
    """Stage timer for ``generate(timings=...)``: ``lap(name, result)`` blocks on result, records the seconds since
    the previous lap."""

    def __init__(self, timings: dict | None):
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, name, result):
        jax.block_until_ready(result)
        now = time.perf_counter()
        if self.timings is not None:
            self.timings[name] = now - self.last
        self.last = now
        return result
