"""Conditioners from stable-audio-tools (``conditioner.conditioners.*``) and diffusers (``StableAudioProjectionModel``)
checkpoints: the timing embedders and the text projection, and the conditioning section of a stable-audio-tools
model config.

  ours                             stable-audio-tools (prefix stripped)   diffusers projection model
  seconds_start/fourier/weights    seconds_start.embedder.embedding.0     start_number_conditioner.T.0
  seconds_start/proj/kernel, bias  seconds_start.embedder.embedding.1     start_number_conditioner.T.1
  seconds_start/embed/embedding    seconds_start.int_embedder (SA 1.0)    -
  (T = time_positional_embedding)
  (seconds_total likewise; diffusers calls it end_number_conditioner)
  text_projection/proj/kernel, bias prompt.proj_out.weight, bias          text_projection.weight, bias

The text projection exists when the model's ``cond_dim`` differs from the text encoder's width (or the prompt
conditioner sets ``project_out``): stable-audio-tools' ``Conditioner.proj_out``, applied before padded positions
are zeroed. The text encoder's own weights are not in these checkpoints (T5 is loaded from its own directory).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stableaudio_jax.convert.state_dict import CheckpointMismatchError, Path, fill_params
from stableaudio_jax.models.conditioning import TimingConditioner

SAT_PREFIX = "conditioner.conditioners."
TEXT_CONDITIONERS = ("t5", "clap_text")  # prompt conditioner types we convert
CLAP_PREFIX = "prompt.model."  # a fine-tuned CLAP's weights (``finetune: true``) inside the model checkpoint
PROJECTION_KEYS = {"stable-audio-tools": ("prompt.proj_out.weight", "prompt.proj_out.bias"),
                   "diffusers": ("text_projection.weight", "text_projection.bias")}
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


def text_projection_params_from_state_dict(state: Mapping[str, np.ndarray], layout: str,
                                           source: str = "state dict") -> dict | None:
    """``{'params': ...}`` for the text projection (``None`` when the checkpoint has none): stable-audio-tools'
    ``prompt.proj_out`` (prefix stripped) or diffusers' projection-model ``text_projection``."""
    weight_key, bias_key = PROJECTION_KEYS[layout]
    if weight_key not in state and bias_key not in state:
        return None
    if weight_key not in state or bias_key not in state:
        raise CheckpointMismatchError(source, [k for k in (weight_key, bias_key) if k not in state], [], [])
    weight, bias = np.asarray(state[weight_key]), np.asarray(state[bias_key])
    if weight.ndim != 2 or bias.shape != weight.shape[:1]:
        raise CheckpointMismatchError(source, [], [], [f"{weight_key} {tuple(weight.shape)} / {bias_key} "
                                                       f"{tuple(bias.shape)}: expected [cond_dim, width] / [cond_dim]"])
    # TextProjection's layout: kernel [width, cond_dim] (PyTorch's [out, in] transposed), bias [cond_dim]
    return {"params": {"proj": {"kernel": weight.T.astype(np.float32), "bias": bias.astype(np.float32)}}}


def split_conditioner_state(state: Mapping[str, np.ndarray], layout: str) -> tuple[dict, dict]:
    """(timing tensors, text-projection tensors) of a conditioner state dict (a fine-tuned CLAP's own weights,
    ``prompt.model.*``, are neither: :func:`split_text_encoder_state` takes them out first)."""
    keys = set(PROJECTION_KEYS[layout])
    return ({k: v for k, v in state.items() if k not in keys}, {k: v for k, v in state.items() if k in keys})


def split_text_encoder_state(state: Mapping[str, np.ndarray]) -> tuple[dict, dict]:
    """(the rest, the text encoder's own tensors under their full stable-audio-tools names) of a conditioner state
    dict with ``conditioner.conditioners.`` removed."""
    text = {SAT_PREFIX + k: v for k, v in state.items() if k.startswith(CLAP_PREFIX)}
    return {k: v for k, v in state.items() if not k.startswith(CLAP_PREFIX)}, text


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
    if prompt.get("type") not in TEXT_CONDITIONERS:
        raise ValueError(f"{source}: the 'prompt' conditioner is of type {prompt.get('type')!r}; this converter "
                         f"knows {list(TEXT_CONDITIONERS)}")
    diffusion = model.get("diffusion", {})
    return ml_collections.ConfigDict(dict(
        cond_dim=int(section.get("cond_dim", 768)), text=_text_section(prompt),
        timing=dict(style=styles.pop() if styles else "number", features=int(section.get("cond_dim", 768)),
                    min_val=float(min_val), max_val=float(max_val), ids=[c["id"] for c in timing]),
        cross_attention_ids=list(diffusion.get("cross_attention_cond_ids", [])),
        global_ids=list(diffusion.get("global_cond_ids", []))))


def _text_section(prompt: Mapping[str, Any]) -> dict:
    """Our ``conditioning.text`` for the reference's prompt conditioner (T5, or CLAP: its text branch's
    ``feature_layer_ix`` hidden states, 77 tokens, or its pooled 512-d embedding, one token)."""
    cfg = prompt.get("config", {})
    if prompt["type"] == "t5":
        return dict(type="t5", model_name=cfg.get("t5_model_name", "t5-base"), width=None,
                    max_length=int(cfg.get("max_length", 128)), project_out=bool(cfg.get("project_out", False)))
    features = bool(cfg.get("use_text_features", False))
    return dict(type="clap", model_name=cfg.get("audio_model_type", "HTSAT-base"), width=None,
                max_length=77, project_out=bool(cfg.get("project_out", False)),
                layer=int(cfg.get("feature_layer_ix", -1)), output="features" if features else "embedding",
                finetune=bool(cfg.get("finetune", False)))
