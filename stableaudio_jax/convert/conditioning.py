"""Timing conditioners from stable-audio-tools (``conditioner.conditioners.*``) and diffusers
(``StableAudioProjectionModel``) checkpoints, and the conditioning section of a stable-audio-tools model config.

  ours                             stable-audio-tools (prefix stripped)   diffusers projection model
  seconds_start/fourier/weights    seconds_start.embedder.embedding.0     start_number_conditioner.T.0
  seconds_start/proj/kernel, bias  seconds_start.embedder.embedding.1     start_number_conditioner.T.1
  seconds_start/embed/embedding    seconds_start.int_embedder (SA 1.0)    -
  (T = time_positional_embedding)
  (seconds_total likewise; diffusers calls it end_number_conditioner)
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stableaudio_jax.convert.state_dict import Path, fill_params
from stableaudio_jax.models.conditioning import TimingConditioner

SAT_PREFIX = "conditioner.conditioners."
_DIFFUSERS_NAMES = {"seconds_start": "start_number_conditioner", "seconds_total": "end_number_conditioner"}
_SAT_LEAVES = {("fourier", "weights"): "embedder.embedding.0.weights",
               ("proj", "kernel"): "embedder.embedding.1.weight", ("proj", "bias"): "embedder.embedding.1.bias",
               ("embed", "embedding"): "int_embedder.weight"}


def _sat_key(path: Path) -> str:
    return f"{path[0]}.{_SAT_LEAVES[path[1:]]}"


def _diffusers_key(path: Path) -> str:
    leaf = _SAT_LEAVES[path[1:]].replace("embedder.embedding", "time_positional_embedding")
    return f"{_DIFFUSERS_NAMES[path[0]]}.{leaf}"


def _linear_to_kernel(path: Path, value: np.ndarray) -> np.ndarray:
    return value.T if path[-1] == "kernel" and value.ndim == 2 else value


def timing_params_from_state_dict(state: Mapping[str, np.ndarray], conditioner: TimingConditioner, layout: str,
                                  source: str = "state dict") -> dict:
    """``{'params': ...}`` for a :class:`TimingConditioner` from the timing tensors of a checkpoint:
    ``layout='stable-audio-tools'`` (keys with ``conditioner.conditioners.`` removed) or ``'diffusers'`` (the
    projection model's state dict)."""
    key_for = {"stable-audio-tools": _sat_key, "diffusers": _diffusers_key}.get(layout)
    if key_for is None:
        raise ValueError(f"layout is {layout!r}; expected 'stable-audio-tools' or 'diffusers'")
    seconds = jnp.zeros((1,), jnp.float32)
    abstract = jax.eval_shape(lambda s: conditioner.init(jax.random.key(0), s, s), seconds)["params"]
    return {"params": fill_params(state, abstract, key_for, _linear_to_kernel, source)}


def conditioning_config_from_stable_audio_tools(model_config: Mapping[str, Any],
                                                source: str = "model_config.json") -> ml_collections.ConfigDict:
    """Text and timing conditioning settings of a stable-audio-tools diffusion model config."""
    model = model_config.get("model", {})
    section = model.get("conditioning")
    if not section or "configs" not in section:
        raise ValueError(f"{source}: no model.conditioning.configs section")
    by_id = {c["id"]: c for c in section["configs"]}
    timing = [by_id[i] for i in ("seconds_start", "seconds_total") if i in by_id]
    styles = {c["type"] for c in timing}
    if len(styles) > 1 or (styles and styles - {"number", "int"}):
        raise ValueError(f"{source}: timing conditioners of types {sorted(styles)}; expected 'number' or 'int'")
    bounds = {(c["config"].get("min_val", 0), c["config"].get("max_val", 512)) for c in timing}
    if len(bounds) > 1:
        raise ValueError(f"{source}: seconds_start and seconds_total have different bounds {sorted(bounds)}")
    min_val, max_val = bounds.pop() if bounds else (0, 512)
    prompt = by_id.get("prompt", {})
    diffusion = model.get("diffusion", {})
    return ml_collections.ConfigDict(dict(
        text=dict(type=prompt.get("type", "none"), model_name=prompt.get("config", {}).get("t5_model_name", ""),
                  max_length=int(prompt.get("config", {}).get("max_length", 128))),
        timing=dict(style=styles.pop() if styles else "number", features=int(section.get("cond_dim", 768)),
                    min_val=float(min_val), max_val=float(max_val), ids=[c["id"] for c in timing]),
        cross_attention_ids=list(diffusion.get("cross_attention_cond_ids", [])),
        global_ids=list(diffusion.get("global_cond_ids", []))))
