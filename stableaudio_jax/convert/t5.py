"""Hugging Face T5 checkpoints (``T5EncoderModel`` / ``T5ForConditionalGeneration`` directories) → our T5 encoder.

Reads ``config.json`` and ``model.safetensors`` (also sharded ``model.safetensors.index.json``, or
``pytorch_model.bin`` when torch is installed). Only the encoder is used: ``decoder.*`` and ``lm_head.*`` tensors of
a full T5 are skipped on purpose; every encoder tensor must map, or :class:`CheckpointMismatchError` lists what does
not. The token embedding is ``encoder.embed_tokens.weight`` when present, else the tied ``shared.weight``.

Layouts: Linear ``[out, in]`` → kernel ``[in, out]``; q/k/v become ``[d_model, heads, d_kv]`` and o
``[heads, d_kv, d_model]`` (heads outermost in HF's ``inner_dim``).
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from stableaudio_jax.convert.state_dict import Path, fill_params, load_json, read_hf_weights
from stableaudio_jax.store.tokenizers import SPIECE_FILE, T5Tokenizer
from stableaudio_jax.store.text_encoders import T5TextEncoder
from stableaudio_jax.models.t5 import T5Encoder

SKIPPED_PREFIXES = ("decoder.", "lm_head.")
_BLOCK_KEYS = {
    ("attn_norm", "weight"): "layer.0.layer_norm.weight",
    ("attn", "q", "kernel"): "layer.0.SelfAttention.q.weight",
    ("attn", "k", "kernel"): "layer.0.SelfAttention.k.weight",
    ("attn", "v", "kernel"): "layer.0.SelfAttention.v.weight",
    ("attn", "o", "kernel"): "layer.0.SelfAttention.o.weight",
    ("ff_norm", "weight"): "layer.1.layer_norm.weight",
    ("ff", "wi", "kernel"): "layer.1.DenseReluDense.wi.weight",
    ("ff", "wi_0", "kernel"): "layer.1.DenseReluDense.wi_0.weight",
    ("ff", "wi_1", "kernel"): "layer.1.DenseReluDense.wi_1.weight",
    ("ff", "wo", "kernel"): "layer.1.DenseReluDense.wo.weight",
}


def t5_config_from_hf(config: Mapping[str, Any], source: str = "config.json") -> ml_collections.ConfigDict:
    """Our T5 model config from a Hugging Face T5 ``config.json``."""
    feed_forward = config.get("feed_forward_proj", "relu")
    if feed_forward.startswith("gated-") and config.get("dense_act_fn") not in (None, "gelu_new"):
        feed_forward = "gated-" + config["dense_act_fn"]
    missing = [k for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads") if k not in config]
    if missing:
        raise ValueError(f"{source}: missing T5 config keys {missing}")
    return ml_collections.ConfigDict(dict(
        vocab_size=int(config["vocab_size"]), d_model=int(config["d_model"]), d_kv=int(config["d_kv"]),
        d_ff=int(config["d_ff"]), num_layers=int(config["num_layers"]), num_heads=int(config["num_heads"]),
        num_buckets=int(config.get("relative_attention_num_buckets", 32)),
        max_distance=int(config.get("relative_attention_max_distance", 128)),
        layer_norm_eps=float(config.get("layer_norm_epsilon", 1e-6)), feed_forward=feed_forward))


def t5_from_config(model_config: Any, dtype: Any = jnp.float32, param_dtype: Any = jnp.float32) -> T5Encoder:
    return T5Encoder(**dict(model_config), dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))


def _hf_key(path: Path) -> str:
    if path == ("embed", "embedding"):
        return "encoder.embed_tokens.weight"
    if path == ("relative_attention_bias",):
        return "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    if path == ("final_norm", "weight"):
        return "encoder.final_layer_norm.weight"
    block = int(path[0].split("_")[1])
    return f"encoder.block.{block}.{_BLOCK_KEYS[path[1:]]}"


def _hf_to_ours(module: T5Encoder):
    heads, d_kv = module.num_heads, module.d_kv

    def transform(path: Path, value: np.ndarray) -> np.ndarray:
        if path[-1] != "kernel" or value.ndim != 2:
            return value
        if path[-2] in ("q", "k", "v"):
            return value.T.reshape(value.shape[1], heads, d_kv)
        if path[-2] == "o":
            return value.T.reshape(heads, d_kv, value.shape[0])
        return value.T

    return transform


def t5_params_from_state_dict(state: Mapping[str, np.ndarray], module: T5Encoder,
                              source: str = "T5 state dict") -> dict:
    """``{'params': ...}`` for ``module`` from a Hugging Face T5 state dict."""
    state = {k: v for k, v in state.items() if not k.startswith(SKIPPED_PREFIXES)}
    ignore = set()
    if "encoder.embed_tokens.weight" not in state and "shared.weight" in state:
        state["encoder.embed_tokens.weight"] = state.pop("shared.weight")
    elif "shared.weight" in state:
        ignore.add("shared.weight")  # tied copy of encoder.embed_tokens.weight
    ids = jax.ShapeDtypeStruct((1, 4), jnp.int32)
    abstract = jax.eval_shape(lambda i: module.init(jax.random.key(0), i, jnp.ones(i.shape, bool)), ids)["params"]
    return {"params": fill_params(state, abstract, _hf_key, _hf_to_ours(module), source, ignore=ignore)}


def load_hf_t5(directory: str | os.PathLike, max_length: int = 128, dtype: Any = jnp.float32,
               require_tokenizer: bool = True, tokenizer_file: str | os.PathLike | None = None) -> T5TextEncoder:
    """A ready text encoder from a Hugging Face T5 directory (``config.json``, weights, ``spiece.model``).

    ``tokenizer_file`` points at a ``spiece.model`` kept elsewhere (diffusers keeps it in ``tokenizer/``).
    ``require_tokenizer=False`` allows a directory without one (then only ``encode`` works).
    """
    directory = os.fspath(directory)
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{directory}: no config.json; expected a Hugging Face T5 checkpoint directory")
    spiece = os.fspath(tokenizer_file) if tokenizer_file is not None else os.path.join(directory, SPIECE_FILE)
    tokenizer = None
    if os.path.isfile(spiece):
        tokenizer = T5Tokenizer(spiece, max_length)
    elif require_tokenizer:
        raise FileNotFoundError(f"{directory}: no {SPIECE_FILE}; the T5 tokenizer needs {spiece} (pass "
                                "require_tokenizer=False to encode pre-tokenised ids only)")
    model_cfg = t5_config_from_hf(load_json(config_path, "T5 config"), config_path)
    module = t5_from_config(model_cfg, dtype=dtype)
    if tokenizer is not None and tokenizer.vocab_size > module.vocab_size:
        raise ValueError(f"{spiece}: {tokenizer.vocab_size} pieces but the model's vocab_size is {module.vocab_size}")
    state, source = read_hf_weights(directory)
    params = t5_params_from_state_dict(state, module, source)
    return T5TextEncoder(module, params, tokenizer, max_length, source=directory)
