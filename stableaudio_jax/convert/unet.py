"""Stable Audio 1.0 U-Net checkpoints (stable-audio-tools ``adp_cfg_1d``: ``model.model.*``) → our params.

  ours                                   stable-audio-tools (``model.model.`` stripped)
  time_fourier/weights, to_time          to_time.0.0.weights, to_time.0.1
  mapping_1, mapping_2                   to_mapping.0, to_mapping.2
  to_in, to_out (ResNets)                to_in.block, to_out.block
  down_i_conv | down_i_res_j | down_i_transformer    downsamples.i.downsample | .blocks.j | .transformer
  mid_res_0 | mid_transformer | mid_res_1            bottleneck.pre_block | .transformer | .post_block
  up_i_res_j | up_i_transformer | up_i_conv          upsamples.(n-1-i).blocks.j | .transformer | .upsample
  ResNet: norm1, conv1, film, norm2, conv2, skip     block1.groupnorm, block1.project, to_scale_shift.to_scale_shift.1,
                                                     block2.groupnorm, block2.project, to_out
  Transformer1d: norm, proj_in, blocks_j, proj_out   to_in.0, to_in.1, blocks.j, to_out.1
  block: self_attn, cross_attn, ff_in, ff_out        attention, cross_attention, feed_forward.0, feed_forward.2
  attention: norm, norm_context, q, kv, out          norm, norm_context, to_q, to_kv, attention.to_out
  fixed_embedding/embed/embedding                    fixed_embedding.embedding.weight

Layouts: Conv1d ``[out, in, k]`` and ConvTranspose1d ``[in, out, k]`` → ``[k, in, out]``; Linear ``[out, in]`` →
``[in, out]``, with heads split (``(h d)``, h outer) for q / kv / out; norm ``weight`` → ``scale``.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stableaudio_jax.convert.state_dict import Path, fill_params
from stableaudio_jax.models.unet import UNet1d

_TOP = {"time_fourier": "to_time.0.0", "to_time": "to_time.0.1", "mapping_1": "to_mapping.0",
        "mapping_2": "to_mapping.2", "to_in": "to_in.block", "to_out": "to_out.block",
        "mid_res_0": "bottleneck.pre_block", "mid_transformer": "bottleneck.transformer",
        "mid_res_1": "bottleneck.post_block", "fixed_embedding": "fixed_embedding"}
_RESNET = {"norm1": "block1.groupnorm", "conv1": "block1.project", "film": "to_scale_shift.to_scale_shift.1",
           "norm2": "block2.groupnorm", "conv2": "block2.project", "skip": "to_out"}
_TRANSFORMER = {"norm": "to_in.0", "proj_in": "to_in.1", "proj_out": "to_out.1"}
_BLOCK = {"self_attn": "attention", "cross_attn": "cross_attention", "ff_in": "feed_forward.0",
          "ff_out": "feed_forward.2"}
_ATTENTION = {"norm": "norm", "norm_context": "norm_context", "q": "to_q", "kv": "to_kv", "out": "attention.to_out"}
_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias", "weights": "weights", "embedding": "weight"}


def _module_key(name: str, levels: int) -> tuple[str, str]:
    """Top-level module of ours → (SAT prefix, kind)."""
    if name in _TOP:
        kind = "resnet" if name in ("to_in", "to_out", "mid_res_0", "mid_res_1") else (
            "transformer" if name == "mid_transformer" else "leaf")
        return _TOP[name], kind
    side, level, part, *rest = name.split("_")
    level = int(level)
    if side == "down":
        stem = f"downsamples.{level}"
        return {"conv": (f"{stem}.downsample", "leaf"), "res": (f"{stem}.blocks.{rest[0] if rest else ''}", "resnet"),
                "transformer": (f"{stem}.transformer", "transformer")}[part]
    stem = f"upsamples.{levels - 1 - level}"
    return {"conv": (f"{stem}.upsample", "leaf"), "res": (f"{stem}.blocks.{rest[0] if rest else ''}", "resnet"),
            "transformer": (f"{stem}.transformer", "transformer")}[part]


def sat_key(path: Path, levels: int) -> str:
    """stable-audio-tools name (without ``model.model.``) of one of our U-Net parameters."""
    prefix, kind = _module_key(path[0], levels)
    rest, leaf = list(path[1:-1]), _LEAF[path[-1]]
    parts = [prefix]
    if path[0] == "fixed_embedding":
        return "fixed_embedding.embedding.weight"
    if kind == "resnet":
        parts.append(_RESNET[rest[0]])
    elif kind == "transformer":
        if rest[0] in _TRANSFORMER:
            parts.append(_TRANSFORMER[rest[0]])
        else:
            parts += [f"blocks.{rest[0].split('_')[1]}", _BLOCK[rest[1]]]
            if rest[1] in ("self_attn", "cross_attn"):
                parts.append(_ATTENTION[rest[2]])
    return ".".join(parts + [leaf])


def _sat_to_ours(unet: UNet1d):
    def transform(path: Path, w: np.ndarray) -> np.ndarray:
        name, leaf = path[-2], path[-1]
        if leaf != "kernel":
            return w
        if w.ndim == 3:  # convolutions; an upsampling level with factor > 1 is a ConvTranspose1d [in, out, k]
            level = path[0].split("_")
            transposed = level[0] == "up" and level[-1] == "conv" and unet.factors[int(level[1])] > 1
            return w.transpose(2, 0, 1) if transposed else w.transpose(2, 1, 0)
        heads = unet.attention_heads
        if name == "q":
            return w.T.reshape(w.shape[1], heads, -1)
        if name == "kv":
            return w.reshape(2, heads, -1, w.shape[-1]).transpose(3, 0, 1, 2)
        if name == "out" and path[-3] in ("self_attn", "cross_attn"):
            return w.T.reshape(heads, -1, w.shape[0])
        return w.T

    return transform


def unet_params_from_state_dict(state: Mapping[str, np.ndarray], unet: UNet1d,
                                source: str = "state dict") -> dict:
    """``{'params': ...}`` for ``unet`` from a stable-audio-tools U-Net state dict (``model.model.`` stripped)."""
    args = (jax.ShapeDtypeStruct((1, 2 * np.prod(unet.factors), unet.in_channels), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32), jax.ShapeDtypeStruct((1, 2, unet.context_features), jnp.float32))
    abstract = jax.eval_shape(lambda *a: unet.init(jax.random.key(0), *a), *args)["params"]
    levels = len(unet.factors)
    return {"params": fill_params(state, abstract, lambda p: sat_key(p, levels), _sat_to_ours(unet), source)}


SAT_UNET_KEYS = {"in_channels", "channels", "multipliers", "factors", "num_blocks", "attentions", "attention_heads",
                 "attention_multiplier", "resnet_groups", "kernel_multiplier_downsample", "use_nearest_upsample",
                 "use_skip_scale", "use_context_time", "context_embedding_features", "context_embedding_max_length",
                 "out_channels", "patch_size", "attention_features"}


def unet_config_from_stable_audio_tools(model_config: Mapping[str, Any],
                                        source: str = "model_config.json") -> ml_collections.ConfigDict:
    """Our ``config.model`` for an ``adp_cfg_1d`` stable-audio-tools diffusion config."""
    diffusion = model_config.get("model", {}).get("diffusion", {})
    if diffusion.get("type") != "adp_cfg_1d":
        raise ValueError(f"{source}: model.diffusion.type is {diffusion.get('type')!r}; expected 'adp_cfg_1d'")
    cfg = diffusion.get("config", {})
    for key in cfg:
        if key not in SAT_UNET_KEYS:
            raise ValueError(f"{source}: model.diffusion.config.{key} is not supported")
    fixed = {"use_nearest_upsample": False, "use_skip_scale": True, "use_context_time": True, "patch_size": 1,
             "attention_features": None}
    for key, value in fixed.items():
        if key in cfg and cfg[key] != value:
            raise ValueError(f"{source}: model.diffusion.config.{key}={cfg[key]!r} is not supported; "
                             f"expected {value!r}")
    if cfg.get("out_channels") not in (None, cfg.get("in_channels")):
        raise ValueError(f"{source}: model.diffusion.config.out_channels must equal in_channels")
    return ml_collections.ConfigDict(dict(
        type="unet1d", in_channels=int(cfg["in_channels"]), channels=int(cfg["channels"]),
        multipliers=tuple(cfg["multipliers"]), factors=tuple(cfg["factors"]), num_blocks=tuple(cfg["num_blocks"]),
        attentions=tuple(cfg["attentions"]), attention_heads=int(cfg.get("attention_heads", 8)),
        attention_multiplier=int(cfg.get("attention_multiplier", 2)), resnet_groups=int(cfg.get("resnet_groups", 8)),
        kernel_multiplier_downsample=int(cfg.get("kernel_multiplier_downsample", 2)),
        context_features=int(cfg["context_embedding_features"]),
        context_max_length=int(cfg["context_embedding_max_length"])))
