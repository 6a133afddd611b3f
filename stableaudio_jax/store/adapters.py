"""Stored LoRA adapters (kind ``lora``): the adapters of a ``train --config.training.lora.rank=R`` run, small
enough to share on their own, applied to a base model at load time (``generate --lora PATH[:SCALE]``) or merged
into it for good (``export --merged``).

Manifest config: ``lora`` (rank, alpha, targets, dropout) and ``base`` (the base model's path, kind, model config
and weights sha256 when it was trained). The weights are ``lora/<layer path>/{a,b}`` and
``lora_scale/<layer path>/scale`` (``models/lora.py``).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Any, Sequence

import jax.numpy as jnp

from stableaudio_jax.models import lora
from stableaudio_jax.store.format import (StoreError, flatten, read_flat, read_info, staged_directory, unflatten,
                                          write_model)

logger = logging.getLogger(__name__)
KIND = "lora"


@dataclasses.dataclass
class LoraAdapter:
    spec: lora.LoraSpec
    adapters: dict              # {"lora": ..., "lora_scale": ...}
    base: dict                  # {"path", "kind", "sha256", "model"}: the model it was trained on
    source: str = ""

    @property
    def parameters(self) -> int:
        return sum(int(v.size) for v in flatten(self.adapters[lora.LORA]).values())


def save_lora(directory: str | os.PathLike, adapter: LoraAdapter, overwrite: bool = False,
              provenance: dict | None = None) -> str:
    config = {"lora": adapter.spec.as_dict(), "base": adapter.base}
    with staged_directory(directory, overwrite) as staging:
        write_model(staging, KIND, config, adapter.adapters, provenance=provenance)
    return str(directory)


def load_lora(path: str | os.PathLike, verify: bool = True) -> LoraAdapter:
    info = read_info(path, KIND)
    adapters = unflatten({k: jnp.asarray(v) for k, v in read_flat(info, verify).items()})
    if set(adapters) != set(lora.COLLECTIONS):
        raise StoreError(f"{info.directory}: a LoRA adapter holds {list(lora.COLLECTIONS)}; found {sorted(adapters)}")
    cfg = info.config
    return LoraAdapter(lora.LoraSpec.from_config(cfg.lora), adapters, cfg.base.to_dict(), info.directory)


def parse_lora_argument(text: str) -> tuple[str, float]:
    """``PATH`` or ``PATH:SCALE`` (a URL's own colon is not a scale)."""
    match = re.fullmatch(r"(.+):([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)", text)
    return (match.group(1), float(match.group(2))) if match else (text, 1.0)


def apply_adapters(denoiser: dict, adapters: Sequence[tuple[LoraAdapter, float]], base_sha256: str | None,
                   where: str) -> dict:
    """The denoiser's variables with every (adapter, scale) merged in. An adapter whose layers the model lacks
    or sizes differ is refused; one trained on other weights of the same architecture is applied with a
    warning."""
    scaled = []
    for adapter, scale in adapters:
        lora.check_fits(adapter.adapters, denoiser, f"the LoRA adapter {adapter.source}")
        if base_sha256 and adapter.base.get("sha256") not in (None, "", base_sha256):
            logger.warning("the LoRA adapter %s was trained on %s (weights %s...), not on %s; applying it anyway",
                           adapter.source, adapter.base.get("path"), str(adapter.base.get("sha256"))[:12], where)
        if scale == 0:  # the base as it is (a DoRA adapter at 0 would still renormalise: the reference skips it too)
            continue
        scaled.append(lora.apply_scale(adapter.adapters, scale))
    if any(lora.is_dora(a) for a in scaled):  # DoRA renormalises the kernel: one adapter at a time, in order
        for adapter in scaled:
            denoiser = lora.merge(denoiser, adapter)
        return denoiser
    return lora.merge(denoiser, lora.combined(scaled)) if scaled else denoiser


def base_record(path: str, sha256: str, model_config: dict) -> dict:
    """What an adapter records of its base diffusion model: where it was, its weights' hash, its model config."""
    return {"path": str(path), "kind": "diffusion", "sha256": sha256, "model": dict(model_config)}


def with_loras(model: Any, arguments: Sequence[str]) -> Any:
    """A ``TextToAudioModel`` with the adapters ``PATH`` / ``PATH:SCALE`` merged into its denoiser."""
    pairs = [(load_lora(path), scale) for path, scale in map(parse_lora_argument, arguments)]
    diffusion = model.diffusion
    denoiser = apply_adapters(diffusion.params["denoiser"], pairs, diffusion.sha256, model.source or "the model")
    merged = dataclasses.replace(diffusion, params=dict(diffusion.params, denoiser=denoiser))
    merged.__dict__.pop("sha256", None)  # the cached hash was the base's
    return dataclasses.replace(model, diffusion=merged)
