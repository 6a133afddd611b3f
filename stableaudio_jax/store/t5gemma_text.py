"""Stable Audio 3's text encoder, bound: T5Gemma's encoder with its Hugging Face tokenizer (``tokenizer.json``).

``encode`` returns ``last_hidden_state`` in float32 with the tokenizer's mask beside it; padded positions are not
zeroed (the SA3 conditioner replaces them by its learned padding embedding: ``models.sa3_conditioning``).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from stableaudio_jax.models.t5gemma import T5GemmaEncoder
from stableaudio_jax.store.hf_tokenizer import HFTokenizer
from stableaudio_jax.store.text_encoders import BoundTextEncoder

MODEL_KEYS = ("vocab_size", "d_model", "mlp_hidden", "num_layers", "num_heads", "num_kv_heads", "head_dim",
              "activation", "query_pre_attn_scalar", "attn_logit_softcap", "sliding_window", "layer_types",
              "rope_theta", "attention_bias", "rms_norm_eps")


class T5GemmaText(BoundTextEncoder):
    def __init__(self, module: T5GemmaEncoder, params: Any, tokenizer: HFTokenizer | None = None,
                 max_length: int = 256, source: str = "T5Gemma text encoder"):
        super().__init__(module, params, tokenizer, max_length, source)

    @property
    def width(self) -> int:
        return self.module.d_model

    @property
    def config(self) -> dict:
        model = {k: getattr(self.module, k) for k in MODEL_KEYS}
        model["layer_types"] = None if model["layer_types"] is None else list(model["layer_types"])
        return {"type": "t5gemma", "model": model, "max_length": int(self.max_length)}

    @property
    def tokenizer_files(self) -> dict[str, str]:
        return {} if self.tokenizer is None else dict(self.tokenizer.files)

    def with_max_length(self, max_length: int) -> "T5GemmaText":
        if max_length == self.max_length:
            return self
        tokenizer = None
        if self.tokenizer is not None:
            t = self.tokenizer
            tokenizer = HFTokenizer(t.tokenizer.from_str(t.whole.to_str()), max_length, t.pad_token, t.padding_side,
                                    t.truncation_side, source=t.source)
            tokenizer.files = dict(t.files)
        return T5GemmaText(self.module, self.params, tokenizer, max_length, self.source)

    def _features(self, params: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
        return _t5gemma_features(self.module, params, ids, mask)


@functools.partial(jax.jit, static_argnums=0)
def _t5gemma_features(module: T5GemmaEncoder, params: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
    return module.apply(params, ids, mask).astype(jnp.float32)
