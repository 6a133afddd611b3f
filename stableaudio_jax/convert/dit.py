"""DiT checkpoints: stable-audio-tools (``model.model.*``) and diffusers ``StableAudioDiTModel`` → our params.

stable-audio-tools names (prefix ``model.model.`` stripped) → ours:

  to_cond_embed.{0,2}.weight / to_global_embed.{0,2}.weight     to_cond_embed|to_global_embed/fc{1,2}/kernel
  timestep_features.weight [128, 1]                              timestep_features/weight [128]
  to_timestep_embed.{0,2}.{weight,bias}                          to_timestep_embed/fc{1,2}/{kernel,bias}
  preprocess_conv.weight / postprocess_conv.weight [C, C, 1]     preprocess_conv|postprocess_conv/kernel [C, C]
  transformer.project_in|project_out.weight                      project_in|project_out/kernel
  transformer.layers.i.pre_norm|cross_attend_norm|ff_norm.gamma  blocks_i/self_attn_norm|cross_attn_norm|ff_norm/scale
  ....beta (a zero buffer)                                       .../bias only with norm_bias=True, else must be 0
  transformer.layers.i.self_attn.to_qkv.weight [3D, D]           blocks_i/self_attn/qkv/kernel [D, 3, H, hd]
  transformer.layers.i.cross_attn.to_q.weight                    blocks_i/cross_attn/q/kernel [D, H, hd]
  transformer.layers.i.cross_attn.to_kv.weight [2 KV hd, C]      blocks_i/cross_attn/kv/kernel [C, 2, KV, hd]
  transformer.layers.i.{self,cross}_attn.to_out.weight           blocks_i/{self,cross}_attn/out/kernel [H, hd, D]
  transformer.layers.i.ff.ff.0.proj.{weight,bias} (value|gate)   blocks_i/ff/proj/{kernel [D, 2, F], bias [2, F]}
  transformer.layers.i.ff.ff.2.{weight,bias}                     blocks_i/ff/out/{kernel,bias}

diffusers checkpoints are first renamed into that layout (q/k/v and k/v fused, ``time_proj`` → timestep_features).
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stableaudio_jax.convert.state_dict import CheckpointMismatchError, Path, fill_params
from stableaudio_jax.models.dit import DiT

_NORMS = {"self_attn_norm": "pre_norm", "cross_attn_norm": "cross_attend_norm", "ff_norm": "ff_norm"}
_BLOCK = {("self_attn", "qkv", "kernel"): "self_attn.to_qkv.weight",
          ("self_attn", "out", "kernel"): "self_attn.to_out.weight",
          ("cross_attn", "q", "kernel"): "cross_attn.to_q.weight",
          ("cross_attn", "kv", "kernel"): "cross_attn.to_kv.weight",
          ("cross_attn", "out", "kernel"): "cross_attn.to_out.weight",
          ("ff", "proj", "kernel"): "ff.ff.0.proj.weight", ("ff", "proj", "bias"): "ff.ff.0.proj.bias",
          ("ff", "out", "kernel"): "ff.ff.2.weight", ("ff", "out", "bias"): "ff.ff.2.bias"}
_TOP = ("to_cond_embed", "to_global_embed", "to_timestep_embed")


def sat_key(path: Path) -> str:
    """stable-audio-tools name (without ``model.model.``) of one of our (unscanned) DiT parameters."""
    head = path[0]
    if head.startswith("blocks_"):
        layer = f"transformer.layers.{head.split('_')[1]}"
        if path[1] in _NORMS:
            return f"{layer}.{_NORMS[path[1]]}.{'gamma' if path[2] == 'scale' else 'beta'}"
        return f"{layer}.{_BLOCK[path[1:]]}"
    if head in _TOP:
        return f"{head}.{ {'fc1': 0, 'fc2': 2}[path[1]] }.{'weight' if path[2] == 'kernel' else 'bias'}"
    if head in ("project_in", "project_out"):
        return f"transformer.{head}.weight"
    return f"{head}.weight"  # timestep_features, preprocess_conv, postprocess_conv


def _sat_to_ours(dit: DiT):
    heads, hd = dit.num_heads, dit.head_dim

    def transform(path: Path, w: np.ndarray) -> np.ndarray:
        name, leaf = path[-2], path[-1]
        if path[0] == "timestep_features":
            return w.reshape(-1)
        if path[0] in ("preprocess_conv", "postprocess_conv"):
            return w[:, :, 0].T if w.ndim == 3 else w
        if leaf != "kernel" and not (name == "proj" and leaf == "bias"):
            return w
        if name == "proj":  # SwiGLU: rows are [value | gate]
            return w.reshape(2, -1) if leaf == "bias" else w.reshape(2, -1, w.shape[-1]).transpose(2, 0, 1)
        if name == "qkv":
            return w.reshape(3, heads, hd, w.shape[-1]).transpose(3, 0, 1, 2)
        if name == "kv":
            return w.reshape(2, -1, hd, w.shape[-1]).transpose(3, 0, 1, 2)
        if name == "q":
            return w.T.reshape(w.shape[1], heads, hd)
        if name == "out" and path[-3] in ("self_attn", "cross_attn"):
            return w.T.reshape(heads, hd, w.shape[0])
        return w.T

    return transform


def _buffers(state: Mapping[str, np.ndarray], dit: DiT, source: str) -> set[str]:
    """Non-parameter tensors the checkpoint may carry: verified, then ignored."""
    ignore, nonzero = set(), []
    inv_freq = "transformer.rotary_pos_emb.inv_freq"
    if inv_freq in state:
        rot = dit.rotary_dim or max(dit.head_dim // 2, 32)
        expected = 1.0 / (dit.rotary_base ** (np.arange(0, rot, 2, dtype=np.float32) / rot))
        if state[inv_freq].shape != expected.shape or not np.allclose(state[inv_freq], expected, rtol=1e-5):
            raise ValueError(f"{source}: {inv_freq} {tuple(state[inv_freq].shape)} does not match rotary dim {rot} "
                             f"(base {dit.rotary_base}); set config.model.rotary_dim")
        ignore.add(inv_freq)
    if not dit.norm_bias:
        for key in state:
            if re.fullmatch(r"transformer\.layers\.\d+\.(pre_norm|cross_attend_norm|ff_norm)\.beta", key):
                ignore.add(key)
                if np.any(state[key]):
                    nonzero.append(key)
    if nonzero:
        raise ValueError(f"{source}: LayerNorm biases {nonzero[:4]}{' ...' if len(nonzero) > 4 else ''} are non-zero; "
                         "load with config.model.norm_bias=True to keep them")
    return ignore


def abstract_dit_params(dit: DiT) -> Any:
    shapes = (jax.ShapeDtypeStruct((1, 2, dit.io_channels), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.float32),
              jax.ShapeDtypeStruct((1, 3, dit.cond_token_dim), jnp.float32),
              jax.ShapeDtypeStruct((1, dit.global_cond_dim), jnp.float32))
    return jax.eval_shape(lambda *a: dit.clone(scan_layers=False).init(jax.random.key(0), *a), *shapes)["params"]


def dit_params_from_state_dict(state: Mapping[str, np.ndarray], dit: DiT, layout: str = "stable-audio-tools",
                               source: str = "state dict") -> dict:
    """``{'params': ...}`` for ``dit`` (stacked on a ``layers`` axis when ``dit.scan_layers``) from a DiT state dict:
    ``layout='stable-audio-tools'`` (``model.model.`` stripped) or ``'diffusers'``."""
    if layout == "diffusers":
        state = diffusers_to_sat(state)
    elif layout != "stable-audio-tools":
        raise ValueError(f"layout is {layout!r}; expected 'stable-audio-tools' or 'diffusers'")
    ignore = _buffers(state, dit, source)
    params = fill_params(state, abstract_dit_params(dit), sat_key, _sat_to_ours(dit), source, ignore=ignore)
    return {"params": stack_blocks(params, dit.depth) if dit.scan_layers else params}


def stack_blocks(params: dict, depth: int) -> dict:
    """Per-layer ``blocks_i`` params → one ``blocks`` tree stacked on a leading layers axis (for scan_layers)."""
    out = {k: v for k, v in params.items() if not k.startswith("blocks_")}
    out["blocks"] = jax.tree_util.tree_map(lambda *xs: np.stack(xs), *[params[f"blocks_{i}"] for i in range(depth)])
    return out


def unstack_blocks(params: dict) -> dict:
    """The inverse of :func:`stack_blocks`."""
    out = {k: v for k, v in params.items() if k != "blocks"}
    depth = jax.tree_util.tree_leaves(params["blocks"])[0].shape[0]
    for i in range(depth):
        out[f"blocks_{i}"] = jax.tree_util.tree_map(lambda x: x[i], params["blocks"])
    return out


_DIFFUSERS_RENAMES = [
    (r"^cross_attention_proj\.", "to_cond_embed."), (r"^global_proj\.", "to_global_embed."),
    (r"^timestep_proj\.", "to_timestep_embed."), (r"^time_proj\.weight$", "timestep_features.weight"),
    (r"^proj_in\.", "transformer.project_in."), (r"^proj_out\.", "transformer.project_out."),
    (r"^transformer_blocks\.", "transformer.layers."), (r"\.norm1\.", ".pre_norm."),
    (r"\.norm2\.", ".cross_attend_norm."), (r"\.norm3\.", ".ff_norm."), (r"\.attn1\.", ".self_attn."),
    (r"\.attn2\.", ".cross_attn."), (r"\.to_out\.0\.", ".to_out."), (r"\.ff\.net\.", ".ff.ff."),
    (r"(norm)\.weight$", r"\1.gamma"), (r"(norm)\.bias$", r"\1.beta"),
]


def diffusers_to_sat(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renames a diffusers ``StableAudioDiTModel`` state dict into stable-audio-tools' layout, fusing q/k/v
    (self-attention) and k/v (cross-attention)."""
    renamed: dict[str, np.ndarray] = {}
    for key, value in state.items():
        for pattern, repl in _DIFFUSERS_RENAMES:
            key = re.sub(pattern, repl, key)
        if key == "timestep_features.weight":
            value = value.reshape(-1, 1)
        renamed[key] = value
    fused: dict[str, np.ndarray] = {}
    for key, value in renamed.items():
        m = re.fullmatch(r"(transformer\.layers\.\d+\.(self|cross)_attn)\.to_([qkv])\.weight", key)
        if m is None:
            fused[key] = value
            continue
        stem, kind, part = m.groups()
        parts = "qkv" if kind == "self" else "kv"
        if part not in parts:  # the cross-attention query keeps its own projection
            fused[key] = value
        elif part == parts[0]:
            pieces = [renamed.get(f"{stem}.to_{p}.weight") for p in parts]
            if any(p is None for p in pieces):
                missing = [f"{stem}.to_{p}.weight" for p, x in zip(parts, pieces) if x is None]
                raise CheckpointMismatchError("diffusers DiT", missing, [], [])
            fused[f"{stem}.to_{parts}.weight"] = np.concatenate(pieces, axis=0)
    return fused


# ---------------------------------------------------------------------------------------------------- configs

SAT_SUPPORTED = {  # stable-audio-tools DiT config keys → the values we implement (None: any value)
    "io_channels": None, "embed_dim": None, "depth": None, "num_heads": None, "cond_token_dim": None,
    "global_cond_dim": None, "project_cond_tokens": None, "project_global_cond": (True,),
    "transformer_type": ("continuous_transformer",), "global_cond_type": ("prepend",),
    "timestep_cond_type": ("global",), "patch_size": (1,), "input_concat_dim": (0,), "prepend_cond_dim": (0,),
}


def dit_config_from_stable_audio_tools(model_config: Mapping[str, Any],
                                       source: str = "model_config.json") -> ml_collections.ConfigDict:
    """Our ``config.model`` for the DiT of a stable-audio-tools ``diffusion_cond`` model config."""
    diffusion = model_config.get("model", {}).get("diffusion", {})
    if diffusion.get("type") != "dit":
        raise ValueError(f"{source}: model.diffusion.type is {diffusion.get('type')!r}; expected 'dit'")
    cfg = diffusion.get("config", {})
    for key, value in cfg.items():
        if key not in SAT_SUPPORTED:
            raise ValueError(f"{source}: model.diffusion.config.{key} is not supported (supported keys: "
                             f"{sorted(SAT_SUPPORTED)})")
        allowed = SAT_SUPPORTED[key]
        if allowed is not None and value not in allowed:
            raise ValueError(f"{source}: model.diffusion.config.{key}={value!r} is not supported; expected one of "
                             f"{list(allowed)}")
    embed = int(cfg.get("embed_dim", 1536))
    cond_token = int(cfg.get("cond_token_dim", 0))
    if cond_token <= 0:
        raise ValueError(f"{source}: model.diffusion.config.cond_token_dim must be > 0 (text conditioning)")
    return ml_collections.ConfigDict(dict(
        type="dit", io_channels=int(cfg.get("io_channels", 32)), embed_dim=embed, depth=int(cfg.get("depth", 12)),
        num_heads=int(cfg.get("num_heads", 8)), cond_token_dim=cond_token,
        cond_embed_dim=embed if cfg.get("project_cond_tokens", True) else cond_token,
        global_cond_dim=int(cfg.get("global_cond_dim", 0)), rotary_dim=None, norm_bias=False))


def dit_config_from_diffusers(config: Mapping[str, Any], source: str = "config.json",
                              norm_bias: bool = False) -> ml_collections.ConfigDict:
    """Our ``config.model`` for a diffusers ``StableAudioDiTModel`` config (diffusers rotates head_dim // 2 dims).

    diffusers' LayerNorms have a bias parameter (zeros in converted Stable Audio checkpoints); ``norm_bias=True``
    keeps it as a parameter, needed only when it is non-zero.
    """
    head_dim, heads = int(config["attention_head_dim"]), int(config["num_attention_heads"])
    if config.get("in_channels") != config.get("out_channels"):
        raise ValueError(f"{source}: in_channels {config.get('in_channels')} != out_channels "
                         f"{config.get('out_channels')}; not supported")
    return ml_collections.ConfigDict(dict(
        type="dit", io_channels=int(config["in_channels"]), embed_dim=head_dim * heads,
        depth=int(config["num_layers"]), num_heads=heads, cond_token_dim=int(config["cross_attention_input_dim"]),
        cond_embed_dim=int(config["cross_attention_dim"]), kv_heads=int(config["num_key_value_attention_heads"]),
        global_cond_dim=int(config["global_states_input_dim"]),
        timestep_features_dim=int(config.get("time_proj_dim", 256)), rotary_dim=head_dim // 2,
        norm_bias=norm_bias))


def has_nonzero_norm_bias(state: Mapping[str, np.ndarray]) -> bool:
    """Whether a diffusers DiT state dict has any non-zero LayerNorm bias."""
    return any(np.any(v) for k, v in state.items() if re.search(r"\.norm[123]\.bias$", k))
