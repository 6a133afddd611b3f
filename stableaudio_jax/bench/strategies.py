"""Sharding strategies: one point in the space a team searches (mesh, memory options, batch, audio length), how it
is written on the command line, and how it changes a model config.

A strategy is applied to a config as ordinary overrides, so what the benchmark compiles is exactly what
``stableaudio-jax train --config.mesh.fsdp=4 --config.model.remat=full ...`` would run.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Iterable, Sequence

import ml_collections

from stableaudio_jax.parallel.sharding import MESH_AXES
from stableaudio_jax.training.latent_source import synthetic_text_width


@dataclasses.dataclass(frozen=True)
class Strategy:
    mesh: tuple[int, int, int]    # data x fsdp x tensor
    per_device_batch: int = 1     # examples per device of the batch axes (data x fsdp)
    seconds: float | None = None  # audio per example; None: the config's training crop
    remat: str | None = None          # None: the config's
    scan_layers: bool | None = None   # None: the config's
    attention: str | None = None      # attention implementation; None: the config's
    param_dtype: str | None = None    # None: the config's
    opt_dtype: str | None = None      # AdamW's first-moment dtype; None: the config's

    @property
    def name(self) -> str:
        parts = ["x".join(map(str, self.mesh)), f"b{self.per_device_batch}"]
        parts += [f"{k}={v}" for k, v in (("remat", self.remat), ("s", self.seconds), ("scan", self.scan_layers),
                                           ("attn", self.attention), ("params", self.param_dtype),
                                           ("mu", self.opt_dtype)) if v is not None]
        return " ".join(parts)

    @property
    def batch_devices(self) -> int:
        return self.mesh[0] * self.mesh[1]

    def global_batch(self) -> int:
        return self.per_device_batch * self.batch_devices

    def as_dict(self) -> dict:
        return dict(dataclasses.asdict(self), mesh=dict(zip(MESH_AXES, self.mesh)), name=self.name,
                    global_batch=self.global_batch())


def parse_mesh(text: str, devices: int) -> tuple[int, int, int]:
    """``"4x2x1"`` (data x fsdp x tensor, one entry may be -1) → sizes whose product is ``devices``."""
    from stableaudio_jax.parallel.mesh import resolve_mesh_shape
    try:
        sizes = [int(p) for p in text.lower().split("x")]
    except ValueError:
        raise ValueError(f"mesh {text!r}: expected data x fsdp x tensor sizes such as 8x1x1 or 2x4x1") from None
    return resolve_mesh_shape(sizes, devices)


def frames_per_second(config) -> float:
    """Latent frames per second of audio for a denoiser config (its VAE's downsampling)."""
    if config.model.type == "sa3_dit":  # SAME: 4096 (tiny: 32) samples per frame, at the generation's rate
        from stableaudio_jax.config_loader import load_config
        same = load_config(config.autoencoder).model
        return float(config.generation.sample_rate) / (same.patch_size * same.stride)
    vae = config.get("vae")
    if vae is None:
        raise ValueError("the config names no VAE (config.vae); give the audio length in frames with "
                         "--config.training.crop_frames instead of --seconds")
    return float(vae.sample_rate) / math.prod(vae.strides)


def apply(config: ml_collections.ConfigDict, strategy: Strategy) -> ml_collections.ConfigDict:
    """A copy of a denoiser config that trains with ``strategy``."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.mesh = ml_collections.ConfigDict(dict(zip(MESH_AXES, strategy.mesh)))
    config.training.batch_size = strategy.global_batch()
    if strategy.seconds is not None:
        config.training.crop_frames = max(1, round(strategy.seconds * frames_per_second(config)))
    model = config.model
    options = (("remat", strategy.remat), ("scan_layers", strategy.scan_layers), ("attention_impl", strategy.attention))
    for key, value in options:  # only what the strategy sets; the rest stays as the config (and its overrides) say
        if value is not None:
            if key not in model:
                raise ValueError(f"{key}={value!r}: the {model.type} model has no {key} option")
            model[key] = value
    if strategy.param_dtype is not None:
        config.param_dtype = strategy.param_dtype
    if strategy.opt_dtype is not None:
        config.training.optimizer.mu_dtype = strategy.opt_dtype
    return config


def grid(meshes: Sequence[str], devices: int, batches: Iterable[int] = (1,), remats: Iterable[str | None] = (None,),
         seconds: Iterable[float | None] = (None,), scans: Iterable[bool | None] = (None,),
         attentions: Iterable[str | None] = (None,), param_dtypes: Iterable[str | None] = (None,),
         opt_dtypes: Iterable[str | None] = (None,)) -> list[Strategy]:
    """Every combination of the given options, meshes first (the order of the report)."""
    resolved = [parse_mesh(m, devices) for m in meshes]
    return [Strategy(mesh, b, s, r, sc, a, d, o) for mesh, b, r, s, sc, a, d, o in
            itertools.product(resolved, batches, remats, seconds, scans, attentions, param_dtypes, opt_dtypes)]


def factorisations(devices: int) -> list[tuple[int, int, int]]:
    """Every data x fsdp x tensor mesh of ``devices`` devices (tensor limited to 8: beyond one host's chips
    tensor parallelism crosses the slow links)."""
    out = []
    for tensor in (t for t in range(1, min(devices, 8) + 1) if devices % t == 0):
        rest = devices // tensor
        out += [(rest // fsdp, fsdp, tensor) for fsdp in range(1, rest + 1) if rest % fsdp == 0]
    return sorted(out, key=lambda m: (m[2], m[1]))


# cuDNN's fused attention cannot be compiled without the cuDNN library, which the AOT extra does not carry: GPU
# plans use XLA's attention, whose T x T scores make them pessimistic for long sequences (say so in reports)
TARGET_ATTENTION = {"tpu": "xla", "cuda": "xla"}


def text_shape(config) -> tuple[int, int]:
    """(tokens, width) of the text features the denoiser is trained on: the configured encoder's."""
    if config.model.type == "sa3_dit":  # T5Gemma states, unprojected
        return int(config.conditioning.max_length), int(config.conditioning.text_dim)
    text = config.conditioning.get("text") or {}
    return int(text.get("max_length") or 128), synthetic_text_width(config)


def apply_for_target(config, strategy: Strategy, target):
    """``apply`` plus what ``auto`` attention means on an ahead-of-time target ("auto" would resolve on the
    compiling host's backend, CPU here)."""
    config = apply(config, strategy)
    if not target.measured and config.model.get("attention_impl") == "auto":
        config.model.attention_impl = TARGET_ATTENTION[target.platform]
    return config
