"""Modules from configs, for every model kind, and the widths that follow from one value.

Kinds and the config section that builds them (``type`` picks the architecture):

  vae          ``{"type": "oobleck_vae", ...}``                 configs/vae.py ``model``
  denoiser     ``{"type": "dit" | "unet1d", ...}``              configs/dit.py, configs/unet.py ``model``
  text encoder ``{"type": "t5", "model": {...}, "max_length"}`` configs/t5.py
               ``{"type": "multi", "order": [ids], "parts": {id: ...}}``: several, their features in sequence
  diffusion    the denoiser + its conditioners: ``model``, ``conditioning`` and ``diffusion`` sections

New architectures (Stable Audio 1.0's DAC VAE, the CLAP text encoder) register a builder in the tables below.

**One conditioning width.** ``conditioning.cond_dim`` (stable-audio-tools' ``cond_dim``; ``None`` = the text
encoder's width) is the width of every conditioning token. :func:`resolve_conditioning` derives from it the timing
embedders' ``features``, the DiT's ``cond_token_dim`` and ``global_cond_dim`` (= cond_dim x the number of global
ids), the U-Net's ``context_features`` (and ``context_max_length`` = text tokens + timing tokens), and adds a text
projection when the text encoder's width differs (or ``conditioning.text.project_out``). A value set by hand that
disagrees is an error naming both keys.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from stableaudio_jax.models.conditioned import ConditionedDenoiser, TextPart, abstract_params
from stableaudio_jax.models.conditioning import TextProjection, TimingConditioner
from stableaudio_jax.models.t5 import T5Encoder
from stableaudio_jax.store.multi_text import MULTI_TEXT, ordered_parts  # conditioning.text of several encoders

Dtype = Any


def _oobleck(cfg, dtype, param_dtype):
    from stableaudio_jax.models.autoencoder import vae_from_config
    return vae_from_config(cfg, dtype=dtype, param_dtype=param_dtype)


def _dac(cfg, dtype, param_dtype):
    from stableaudio_jax.models.dac_vae import dac_vae_from_config
    return dac_vae_from_config(cfg, dtype=dtype, param_dtype=param_dtype)


def _same(cfg, dtype, param_dtype):
    from stableaudio_jax.models.same import same_from_config
    return same_from_config(cfg, dtype=dtype, param_dtype=param_dtype)


def _dit(cfg, dtype, param_dtype):
    from stableaudio_jax.models.dit import dit_from_config
    return dit_from_config(cfg, dtype=dtype, param_dtype=param_dtype)


def _unet(cfg, dtype, param_dtype):
    from stableaudio_jax.models.unet import unet_from_config
    return unet_from_config(cfg, dtype=dtype, param_dtype=param_dtype)


def _t5(cfg, dtype, param_dtype):
    return T5Encoder(**dict(cfg), dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))


VAE_TYPES: dict[str, Callable] = {"oobleck_vae": _oobleck, "dac_vae": _dac, "same": _same}
DENOISER_TYPES: dict[str, Callable] = {"dit": _dit, "unet1d": _unet}
def _clap(cfg, dtype, param_dtype):
    from stableaudio_jax.models.clap import ClapTextEncoder
    return ClapTextEncoder(**dict(cfg), dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))


def _t5gemma(cfg, dtype, param_dtype):
    from stableaudio_jax.models.t5gemma import t5gemma_from_config
    return t5gemma_from_config(cfg, dtype=dtype, param_dtype=param_dtype)


TEXT_ENCODER_TYPES: dict[str, Callable] = {"t5": _t5, "clap": _clap, "t5gemma": _t5gemma}


def _build(table: dict, what: str, cfg: Any, dtype: Dtype, param_dtype: Dtype):
    kind = dict(cfg).get("type")
    if kind not in table:
        raise ValueError(f"{what} type {kind!r} is not known; expected one of {sorted(table)}")
    return table[kind](cfg, jnp.dtype(dtype), jnp.dtype(param_dtype))


def vae_from_config(model_config: Any, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> nn.Module:
    return _build(VAE_TYPES, "VAE", model_config, dtype, param_dtype)


def denoiser_from_config(model_config: Any, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32):
    return _build(DENOISER_TYPES, "denoiser (config.model)", model_config, dtype, param_dtype)


def text_encoder_from_config(text_config: Any, dtype: Dtype = jnp.float32,
                             param_dtype: Dtype = jnp.float32) -> nn.Module:
    """``{"type": "t5" | "clap", "model": {...}}`` → the encoder module."""
    kind = text_config.get("type", "t5")
    if kind not in TEXT_ENCODER_TYPES:
        raise ValueError(f"text encoder type {kind!r} is not known; expected one of {sorted(TEXT_ENCODER_TYPES)}")
    return TEXT_ENCODER_TYPES[kind](text_config["model"], jnp.dtype(dtype), jnp.dtype(param_dtype))


# ------------------------------------------------------------------------------------------- abstract params


def abstract_vae_params(vae: nn.Module) -> Any:
    audio = jax.ShapeDtypeStruct((1, vae.downsampling_ratio, vae.audio_channels), jnp.float32)
    return nn.unbox(jax.eval_shape(lambda a: vae.init(jax.random.key(0), a, sample=False), audio))


def abstract_text_encoder_params(module: nn.Module) -> Any:
    ids = jax.ShapeDtypeStruct((1, 2), jnp.int32)
    return nn.unbox(jax.eval_shape(lambda i: module.init(jax.random.key(0), i, jnp.ones(i.shape, bool)), ids))


def abstract_diffusion_params(model: ConditionedDenoiser, config: Any) -> Any:
    text = config.conditioning.text
    frames = _frame_multiple(model)
    return abstract_params(model, frames, int(text.get("max_length") or 4), int(text.width))


def _frame_multiple(model: ConditionedDenoiser) -> int:
    import math
    return math.prod(model.denoiser.factors) if model.is_unet else 2


# ---------------------------------------------------------------------------------------- conditioning widths


def _derive(section: ml_collections.ConfigDict, key: str, value: int, where: str, source: str) -> None:
    current = section.get(key)
    if current is not None and int(current) != int(value):
        raise ValueError(f"config.{where}.{key}={current} disagrees with {source}={value}; leave it unset (None) "
                         "to derive it")
    section[key] = int(value)


def resolve_conditioning(config: Any, text_width: int | None = None,
                         text_length: int | None = None) -> ml_collections.ConfigDict:
    """A copy of ``config`` (with ``model``, ``conditioning`` sections) whose dependent widths are filled in from
    ``conditioning.cond_dim`` and the text encoder's width ``text_width`` (default: ``conditioning.text.width``,
    then the text encoder config's ``d_model``). ``text_length``: tokens per prompt (U-Net null sequence)."""
    config = ml_collections.ConfigDict(config.to_dict() if hasattr(config, "to_dict") else dict(config))
    cond, model = config.conditioning, config.model
    text = cond.get("text") or ml_collections.ConfigDict()
    cond.text = text
    if text.get("type") == MULTI_TEXT:
        text_width, text_length = _resolve_text_parts(text, text_width, text_length)
    width = text_width or text.get("width") or (text.get("model") or {}).get("d_model")
    if width is None:
        raise ValueError("the text encoder's width is unknown: set config.conditioning.text.width (or give the "
                         "text encoder / pre-encoded data it comes from)")
    _derive(text, "width", width, "conditioning.text", "the text encoder's width")
    cond_dim = cond.get("cond_dim") or width
    cond.cond_dim = int(cond_dim)
    _derive(cond.timing, "features", cond_dim, "conditioning.timing", "conditioning.cond_dim")
    cond.cross_attention_ids = list(cond.cross_attention_ids)
    cond.global_ids = list(cond.global_ids)
    text_length = text_length or text.get("max_length")
    kind = model.get("type")
    if kind == "dit":
        _derive(model, "cond_token_dim", cond_dim, "model", "conditioning.cond_dim")
        _derive(model, "global_cond_dim", cond_dim * len(cond.global_ids), "model",
                f"conditioning.cond_dim x {len(cond.global_ids)} global ids")
    elif kind == "unet1d":
        _derive(model, "context_features", cond_dim, "model", "conditioning.cond_dim")
        if model.get("context_max_length") is None:
            if not text_length:
                raise ValueError("config.model.context_max_length is unset and the text length is unknown (set "
                                 "config.conditioning.text.max_length)")
            model.context_max_length = int(text_length) + sum(k != "prompt" for k in cond.cross_attention_ids)
        elif text_length and text_length + sum(k != "prompt" for k in cond.cross_attention_ids) > \
                model.context_max_length:
            raise ValueError(f"{text_length} text tokens + timing tokens exceed the U-Net's "
                             f"config.model.context_max_length={model.context_max_length}")
    else:
        raise ValueError(f"config.model.type is {kind!r}; expected one of {sorted(DENOISER_TYPES)}")
    if text_length:
        text.max_length = int(text_length)
    return config


def _resolve_text_parts(text: ml_collections.ConfigDict, width: int | None,
                        length: int | None) -> tuple[int, int]:
    """Each part's width (its own, its encoder model's) and token count; the sequence is as wide as the widest
    part and as long as all of them together."""
    named = ordered_parts(text)
    for name, part in named:
        model = part.get("model") or {}
        own = model.get("d_model") or (model.get("projection_dim") if part.get("output") == "embedding"
                                       else model.get("width"))
        where = f"conditioning.text.parts.{name}"
        if own is not None:
            _derive(part, "width", int(own), where, f"the {name!r} encoder's width")
        elif part.get("width") is None:
            raise ValueError(f"config.{where}: its width is unknown: set its width (or give the pre-encoded data "
                             "it comes from)")
        if part.get("max_length") is None:
            raise ValueError(f"config.{where}.max_length (its tokens) is unset")
    widest = max(int(p["width"]) for _, p in named)
    total = sum(text_part_length(p) for _, p in named)
    if width is not None and int(width) != widest or length is not None and int(length) != total:
        raise ValueError(f"config.conditioning.text.parts give {total} tokens x {widest} (the widest part); the text "
                         f"encoder / data gives {length} x {width}")
    return widest, total


def text_part_length(part: Any) -> int:
    """Tokens a text conditioner contributes: its max_length, or one for CLAP's pooled embedding."""
    return 1 if part.get("output") == "embedding" else int(part["max_length"])


def has_text_projection(config: Any) -> bool:
    return _needs_projection(config.conditioning.text, config.conditioning.cond_dim)


def _needs_projection(text: Any, cond_dim: int) -> bool:
    return int(text["width"]) != int(cond_dim) or bool(text.get("project_out", False))


def _text_parts(cond: Any, dtype: Dtype, param_dtype: Dtype) -> tuple[TextPart, ...]:
    if cond.text.get("type") != MULTI_TEXT:
        return ()
    return tuple(TextPart(name, text_part_length(p), int(p["width"]),
                          TextProjection(int(cond.cond_dim), jnp.dtype(dtype), jnp.dtype(param_dtype))
                          if _needs_projection(p, cond.cond_dim) else None,
                          zero_padded=p.get("type", "t5") != "clap") for name, p in ordered_parts(cond.text))


def timing_from_config(timing_config: Any, dtype: Dtype = jnp.float32,
                       param_dtype: Dtype = jnp.float32) -> TimingConditioner:
    t = timing_config
    return TimingConditioner(features=int(t.features), min_val=float(t.min_val), max_val=float(t.max_val),
                             style=t.style, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))


def diffusion_model_from_config(config: Any, dtype: Dtype | None = None,
                                param_dtype: Dtype | None = None) -> ConditionedDenoiser:
    """The conditioned denoiser of a resolved config (:func:`resolve_conditioning`)."""
    dtype = config.get("dtype", "float32") if dtype is None else dtype
    param_dtype = config.get("param_dtype", "float32") if param_dtype is None else param_dtype
    cond = config.conditioning
    if cond.get("cond_dim") is None or cond.get("text", {}).get("width") is None:
        raise ValueError("diffusion_model_from_config needs a resolved config (store.resolve_conditioning)")
    parts = _text_parts(cond, dtype, param_dtype)
    projection = (TextProjection(int(cond.cond_dim), jnp.dtype(dtype), jnp.dtype(param_dtype))
                  if not parts and has_text_projection(config) else None)
    return ConditionedDenoiser(denoiser_from_config(config.model, dtype, param_dtype),
                               timing_from_config(cond.timing, dtype, param_dtype), projection,
                               tuple(cond.cross_attention_ids), tuple(cond.global_ids),
                               zero_padded_text=cond.text.get("type", "t5") != "clap", text_parts=parts)


# ------------------------------------------------------------------------------------------ parameter counts


def count(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(tree)))


def count_parameters(config: Any) -> dict[str, int]:
    """Parameters of the model a config describes, per part, computed abstractly (nothing is allocated):
    VAE configs → {"vae"}; diffusion configs → {"denoiser", "conditioners"}; text encoder configs → {"text"}."""
    model = config.get("model") or {}
    kind = model.get("type")
    if kind in VAE_TYPES:
        return {"vae": count(abstract_vae_params(vae_from_config(model)))}
    if kind in DENOISER_TYPES:
        resolved = resolve_conditioning(config, text_length=config.conditioning.get("text", {}).get("max_length"))
        params = abstract_diffusion_params(diffusion_model_from_config(resolved, "float32", "float32"), resolved)
        return {"denoiser": count(params["denoiser"]),
                "conditioners": count({k: v for k, v in params.items() if k != "denoiser"})}
    if "d_model" in model:  # configs/t5.py: model is the T5 section itself
        return {"text": count(abstract_text_encoder_params(_t5(model, jnp.float32, jnp.float32)))}
    raise ValueError(f"config.model.type {kind!r}: cannot count parameters; expected a VAE "
                     f"{sorted(VAE_TYPES)}, a denoiser {sorted(DENOISER_TYPES)} or a T5 config")
