"""Hugging Face T5Gemma checkpoints → our T5Gemma encoder (Stable Audio 3's text encoder).

Reads a directory holding ``config.json`` and the weights (``model.safetensors``, sharded or not) of a
``T5GemmaEncoderModel`` (keys ``encoder.*``) or of a whole encoder-decoder (``model.encoder.*``; its decoder and
head are skipped on purpose). The model config is the ``encoder`` section of ``config.json``. Every encoder tensor
must map, or :class:`CheckpointMismatchError` lists what does not.

Layouts: Linear ``[out, in]`` → kernel ``[in, out]``; q/k/v become ``[d_model, heads, head_dim]`` and o
``[heads, head_dim, d_model]`` (heads outermost in HF's projection).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stableaudio_jax.convert.state_dict import Path, fill_params, load_json
from stableaudio_jax.convert.state_dict import read_hf_weights
from stableaudio_jax.models.t5gemma import T5GemmaEncoder, t5gemma_from_config

_BLOCK_KEYS = {
    ("pre_attn_norm", "weight"): "pre_self_attn_layernorm.weight",
    ("post_attn_norm", "weight"): "post_self_attn_layernorm.weight",
    ("pre_ff_norm", "weight"): "pre_feedforward_layernorm.weight",
    ("post_ff_norm", "weight"): "post_feedforward_layernorm.weight",
    **{("attn", p, part): f"self_attn.{p}_proj.{'weight' if part == 'kernel' else 'bias'}"
       for p in "qkvo" for part in ("kernel", "bias")},
    **{("mlp", p, "kernel"): f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")},
}


def t5gemma_config_from_hf(config: Mapping[str, Any], source: str = "config.json") -> ml_collections.ConfigDict:
    """Our encoder config from a Hugging Face T5Gemma ``config.json`` (its ``encoder`` section)."""
    encoder = config.get("encoder")
    if not isinstance(encoder, Mapping):
        raise ValueError(f"{source}: no 'encoder' section; expected a T5Gemma config (model_type 't5gemma'), got "
                         f"model_type {config.get('model_type')!r}")
    needed = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    missing = [k for k in needed if k not in encoder]
    if missing:
        raise ValueError(f"{source}: the encoder section lacks {missing}")
    heads = int(encoder["num_attention_heads"])
    rope = encoder.get("rope_parameters") or {}
    return ml_collections.ConfigDict(dict(
        vocab_size=int(encoder["vocab_size"]), d_model=int(encoder["hidden_size"]),
        mlp_hidden=int(encoder["intermediate_size"]), num_layers=int(encoder["num_hidden_layers"]),
        num_heads=heads, num_kv_heads=int(encoder.get("num_key_value_heads", heads)),
        head_dim=int(encoder.get("head_dim", int(encoder["hidden_size"]) // heads)),
        activation=encoder.get("hidden_activation", "gelu_pytorch_tanh"),
        query_pre_attn_scalar=float(encoder.get("query_pre_attn_scalar", 256)),
        attn_logit_softcap=encoder.get("attn_logit_softcapping", 50.0),
        sliding_window=encoder.get("sliding_window", 4096), layer_types=encoder.get("layer_types"),
        rope_theta=float(rope.get("rope_theta", encoder.get("rope_theta", 10000.0))),
        attention_bias=bool(encoder.get("attention_bias", False)),
        rms_norm_eps=float(encoder.get("rms_norm_eps", 1e-6))))


def _hf_key(path: Path) -> str:
    if path == ("embed", "embedding"):
        return "encoder.embed_tokens.weight"
    if path == ("final_norm", "weight"):
        return "encoder.norm.weight"
    block = int(path[0].split("_")[1])
    return f"encoder.layers.{block}.{_BLOCK_KEYS[path[1:]]}"


def _hf_to_ours(module: T5GemmaEncoder):
    def transform(path: Path, value: np.ndarray) -> np.ndarray:
        if path[-2] in ("q", "k", "v"):
            heads = module.num_heads if path[-2] == "q" else module.num_kv_heads
            if path[-1] == "bias":
                return value.reshape(heads, module.head_dim)
            return value.T.reshape(value.shape[1], heads, module.head_dim)
        if path[-2] == "o" and path[-1] == "kernel":
            return value.T.reshape(module.num_heads, module.head_dim, value.shape[0])
        return value.T if path[-1] == "kernel" else value

    return transform


def t5gemma_params_from_state_dict(state: Mapping[str, np.ndarray], module: T5GemmaEncoder,
                                   source: str = "T5Gemma state dict") -> dict:
    """``{'params': ...}`` for ``module`` from a Hugging Face T5Gemma state dict (encoder-only or whole)."""
    if any(k.startswith("model.encoder.") for k in state):
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.encoder.")}
    state = {k: v for k, v in state.items() if k.startswith("encoder.")}
    ids = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    abstract = jax.eval_shape(lambda i: module.init(jax.random.key(0), i, jnp.ones(i.shape, bool)), ids)["params"]
    return {"params": fill_params(state, abstract, _hf_key, _hf_to_ours(module), source)}


def load_hf_t5gemma(directory: str | os.PathLike, dtype: Any = jnp.float32) -> tuple[T5GemmaEncoder, dict]:
    """(module, variables) from a Hugging Face T5Gemma directory (``config.json`` and weights)."""
    directory = os.fspath(directory)
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{directory}: no config.json; expected a Hugging Face T5Gemma checkpoint directory")
    module = t5gemma_from_config(t5gemma_config_from_hf(load_json(config_path, "T5Gemma config"), config_path),
                                 dtype=dtype)
    state, source = read_hf_weights(directory)
    return module, t5gemma_params_from_state_dict(state, module, source)
