"""Stable Audio 3's DiT weights (the reference's ``DiffusionTransformer`` state dict; inside an SA3 checkpoint under
``model.model.``) → our :class:`~stableaudio_jax.models.sa3_dit.SA3DiT` params.

  to_{cond,global,timestep}_embed.{0,2}.*          to_*_embed/fc{1,2}/{kernel,bias}
  preprocess_conv|postprocess_conv.weight [C, C, 1] preprocess_conv|postprocess_conv/kernel [C, C]
  transformer.project_in|project_out.weight         project_in|project_out/kernel
  transformer.memory_tokens [M, E]                  memory_tokens
  transformer.global_cond_embedder.{0,2}.*          global_cond_embedder/fc1, fc2 (kernel [E, 6, E], bias [6, E])
  transformer.layers.i.to_scale_shift_gate [6E]     blocks_i/to_scale_shift_gate [6, E]
  transformer.layers.i.{pre_norm,cross_attend_norm,ff_norm}.gamma        blocks_i/.../weight
  transformer.layers.i.self_attn.to_qkv.weight [nE, E]                  blocks_i/self_attn/to_qkv/kernel [E, n, H, hd]
  transformer.layers.i.cross_attn.to_q|to_kv.weight                     blocks_i/cross_attn/to_q|to_kv/kernel
  transformer.layers.i.*_attn.to_out.weight                             .../to_out/kernel [H, hd, E]
  transformer.layers.i.*_attn.{q_norm,k_norm}.gamma                     .../{q_norm,k_norm}/weight
  transformer.layers.i.ff.ff.0.proj / ff.ff.2                           blocks_i/ff/proj [E, 2, F] / ff/out
  transformer.layers.i.to_local_embed.{0,2}.*                           blocks_i/to_local_embed/fc{1,2}
The rotary ``inv_freq`` buffer carries no parameters and is ignored; every other tensor must map.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.convert.dit import stack_blocks
from stableaudio_jax.convert.state_dict import Path, fill_params
from stableaudio_jax.models.sa3_conditioning import SA3Conditioner
from stableaudio_jax.models.sa3_dit import SA3DiT

PREFIX = "model.model."
_MLP = ("to_cond_embed", "to_global_embed", "to_timestep_embed")
_NORMS = ("pre_norm", "cross_attend_norm", "ff_norm")
_FF = {"proj": "ff.ff.0.proj", "out": "ff.ff.2"}


def _leaf(name: str) -> str:
    return {"kernel": "weight", "weight": "gamma"}.get(name, name)


def sa3_key(path: Path) -> str:
    """The reference's name (without ``model.model.``) of one of our (unscanned) SA3 DiT parameters."""
    head, rest = path[0], path[1:]
    if head in _MLP or head == "global_cond_embedder":
        layer = {"fc1": 0, "fc2": 2}[rest[0]]
        prefix = "transformer." if head == "global_cond_embedder" else ""
        return f"{prefix}{head}.{layer}.{_leaf(rest[-1])}"
    if head in ("preprocess_conv", "postprocess_conv"):
        return f"{head}.weight"
    if head in ("project_in", "project_out", "memory_tokens"):
        return f"transformer.{head}" + (".weight" if head != "memory_tokens" else "")
    layer = f"transformer.layers.{head.split('_')[1]}"
    if rest[0] == "to_local_embed":
        return f"{layer}.to_local_embed.{ {'fc1': 0, 'fc2': 2}[rest[1]] }.{_leaf(rest[2])}"
    if rest[0] == "ff":
        return f"{layer}.{_FF[rest[1]]}.{_leaf(rest[2])}"
    return ".".join((layer, *rest[:-1], _leaf(rest[-1])))  # norms, attention, to_scale_shift_gate


def _layout(shapes: dict[Path, tuple]) -> Any:
    """Kernels: ``[out, in]`` (1x1 convs ``[out, in, 1]``) transposed, then split into our axes (``[nE, E]`` →
    ``[E, n, H, hd]``; ``to_out`` ``[E, H hd]`` → ``[H, hd, E]``); other tensors reshaped (``[6E]`` → ``[6, E]``,
    the GLU's bias ``[2F]`` → ``[2, F]``)."""
    def convert(path: Path, value: np.ndarray) -> np.ndarray:
        if path[-1] == "kernel":
            value = (value[..., 0] if value.ndim == 3 else value).T
        return value.reshape(shapes[path])
    return convert


def abstract_sa3_params(dit: SA3DiT) -> Any:
    shapes = (jax.ShapeDtypeStruct((1, 2, dit.io_channels), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.float32),
              jax.ShapeDtypeStruct((1, 3, dit.cond_token_dim), jnp.float32),
              jax.ShapeDtypeStruct((1, dit.global_cond_dim), jnp.float32))
    return jax.eval_shape(lambda *a: dit.clone(scan_layers=False).init(jax.random.key(0), *a), *shapes)["params"]


def sa3_dit_params_from_state_dict(state: Mapping[str, np.ndarray], dit: SA3DiT,
                                   source: str = "SA3 DiT state dict") -> dict:
    """``{'params': ...}`` for ``dit`` (stacked on a ``layers`` axis when ``dit.scan_layers``) from the reference's
    DiT state dict, or a whole SA3 checkpoint (its conditioner and autoencoder tensors are left out)."""
    if any(k.startswith(PREFIX) for k in state):
        state = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    abstract = abstract_sa3_params(dit)
    shapes = {tuple(str(getattr(k, "key", k)) for k in path): tuple(leaf.shape)
              for path, leaf in jax.tree_util.tree_flatten_with_path(nn.unbox(abstract))[0]}
    ignore = {k for k in state if k.endswith("rotary_pos_emb.inv_freq")}
    params = fill_params(state, abstract, sa3_key, _layout(shapes), source, ignore=ignore)
    return {"params": stack_blocks(params, dit.depth) if dit.scan_layers else params}



CONDITIONER = "conditioner.conditioners."
_CONDITIONER_KEYS = {("padding_embedding",): "prompt.padding_embedding",
                     ("seconds_total", "embedding", "kernel"): "seconds_total.embedder.embedding.1.weight",
                     ("seconds_total", "embedding", "bias"): "seconds_total.embedder.embedding.1.bias"}


def sa3_conditioner_params_from_state_dict(state: Mapping[str, np.ndarray], module: SA3Conditioner,
                                           source: str = "SA3 checkpoint") -> dict:
    """``{'params': ...}`` for :class:`SA3Conditioner` from an SA3 checkpoint's ``conditioner.conditioners.*``
    tensors (the T5Gemma encoder is not in it; its other tensors are left out)."""
    state = {k[len(CONDITIONER):]: v for k, v in state.items() if k.startswith(CONDITIONER)}
    width = module.features
    abstract = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 2, width)), jnp.ones((1, 2), bool),
                                                  jnp.zeros((1,))))["params"]
    return {"params": fill_params(state, abstract, lambda path: _CONDITIONER_KEYS[path],
                                  lambda path, v: v.T if path[-1] == "kernel" else v, source)}
