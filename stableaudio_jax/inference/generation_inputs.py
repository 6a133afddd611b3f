"""Validation of a generation request and the audio/mask preparation for audio-to-audio and inpainting.

Every bad value is refused with its name, the value and what was expected.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
import numpy as np


@dataclass(frozen=True)
class GenerationRequest:
    prompts: list[str]
    negative_prompts: list[str] | None
    seconds_start: list[float]
    seconds_total: list[float] | None          # None: keep the whole window
    seconds_total_conditioning: list[float]    # what the timing conditioner sees (the window when not given)
    steps: int
    sampler: str
    cfg_scale: float
    cfg_rescale: float
    sigma_min: float
    sigma_max: float
    init_noise_level: float


def _per_prompt(value, batch: int, name: str) -> list[float]:
    values = [value] * batch if np.isscalar(value) else list(value)
    if len(values) != batch:
        raise ValueError(f"{name} has {len(values)} values for {batch} prompts; give one value or one per prompt")
    out = []
    for v in values:
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name}={v!r} is not a number") from None
        if not math.isfinite(v):
            raise ValueError(f"{name}={v} is not finite")
        out.append(v)
    return out


def _prompt_list(prompts, name: str) -> list[str]:
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError(f"{name}: no prompts given; expected a string or a non-empty list of strings")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"{name} #{i} is a {type(p).__name__} ({p!r}); expected str")
    return prompts


def parse_request(prompts, negative_prompt, seconds_start, seconds_total, window_seconds: float, steps: int,
                  sampler: str, cfg_scale: float, sigma_min: float, sigma_max: float, cfg_rescale: float,
                  init_noise_level: float) -> GenerationRequest:
    prompts = _prompt_list(prompts, "prompts")
    batch = len(prompts)
    negatives = None
    if negative_prompt is not None:
        negatives = _prompt_list([negative_prompt] * batch if isinstance(negative_prompt, str) else negative_prompt,
                                 "negative_prompt")
        if len(negatives) != batch:
            raise ValueError(f"negative_prompt has {len(negatives)} entries for {batch} prompts")
    starts = _per_prompt(seconds_start, batch, "seconds_start")
    if min(starts) < 0:
        raise ValueError(f"seconds_start={min(starts)} is negative; expected >= 0")
    totals = None if seconds_total is None else _per_prompt(seconds_total, batch, "seconds_total")
    if totals is not None:
        for t in totals:
            if t <= 0:
                raise ValueError(f"seconds_total={t} must be > 0")
            if t > window_seconds + 1e-6:
                raise ValueError(f"seconds_total={t} exceeds the model's window of {window_seconds:.2f} s "
                                 "(config.audio.sample_size)")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps={steps}; expected a positive integer")
    for name, value in (("cfg_scale", cfg_scale), ("sigma_min", sigma_min), ("sigma_max", sigma_max),
                        ("cfg_rescale", cfg_rescale), ("init_noise_level", init_noise_level)):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name}={value} is not finite")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"sigma_min={sigma_min}, sigma_max={sigma_max}; expected 0 < sigma_min < sigma_max")
    if not 0 <= cfg_rescale <= 1:
        raise ValueError(f"cfg_rescale={cfg_rescale}; expected a value in [0, 1]")
    if init_noise_level <= 0:
        raise ValueError(f"init_noise_level={init_noise_level}; expected > 0")
    return GenerationRequest(prompts, negatives, starts, totals, totals or [window_seconds] * batch, int(steps),
                             sampler, float(cfg_scale), float(cfg_rescale), float(sigma_min), float(sigma_max),
                             float(init_noise_level))


def audio_to_window(audio: np.ndarray, window: int) -> np.ndarray:
    """``[B, N, C]`` zero-padded or cropped to ``window`` samples."""
    if audio.shape[1] >= window:
        return audio[:, :window]
    return np.pad(audio, ((0, 0), (0, window - audio.shape[1]), (0, 0)))


def mask_to_latent_frames(mask, audio_samples: int, source_rate: int, target_rate: int, ratio: int,
                          frames: int) -> np.ndarray:
    """A keep-mask over the inpaint audio's samples (``[N]`` or ``[B, N]``, True/1 = keep) → ``[B, frames]`` in
    [0, 1] over latent frames (a frame straddling the boundary gets the kept fraction: a soft edge)."""
    mask = np.asarray(mask, np.float32)
    if mask.ndim == 1:
        mask = mask[None]
    if mask.ndim != 2 or mask.shape[1] != audio_samples:
        raise ValueError(f"inpaint_mask has shape {mask.shape}; expected [{audio_samples}] or [batch, "
                         f"{audio_samples}] (one value per sample of inpaint_audio)")
    if not np.all((mask >= 0) & (mask <= 1)):
        raise ValueError("inpaint_mask values must lie in [0, 1] (1 = keep the given audio)")
    if source_rate != target_rate:  # nearest-sample resampling of the mask
        length = round(audio_samples * target_rate / source_rate)
        mask = mask[:, np.minimum((np.arange(length) * source_rate / target_rate).astype(int), audio_samples - 1)]
    window = frames * ratio
    mask = mask[:, :window] if mask.shape[1] >= window else np.pad(mask, ((0, 0), (0, window - mask.shape[1])))
    return mask.reshape(mask.shape[0], frames, ratio).mean(axis=-1)


def keep_mask(spec: str, samples: int, sample_rate: int) -> np.ndarray:
    """'0:10,20:25' (seconds) → boolean mask over ``samples``."""
    mask = np.zeros(samples, bool)
    for part in filter(None, (p.strip() for p in spec.split(","))):
        try:
            start, end = (float(v) for v in part.split(":"))
        except ValueError:
            raise ValueError(f"--inpaint-keep part {part!r} is not START:END in seconds") from None
        if not 0 <= start < end:
            raise ValueError(f"--inpaint-keep part {part!r}: expected 0 <= START < END")
        mask[int(start * sample_rate):int(end * sample_rate)] = True
    if not mask.any():
        raise ValueError("--inpaint-audio needs --inpaint-keep with at least one START:END range")
    return mask
