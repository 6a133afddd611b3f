"""The CLAP text conditioner of Stable Audio 1.0 / 2.0 (stable-audio-tools' ``CLAPTextConditioner``, without its
``proj_out``, which belongs to the diffusion model's conditioners), weights and tokenizer bound.

Two outputs, as the reference's ``use_text_features`` chooses:
  ``features``   ``hidden_states[layer]`` of the RoBERTa text branch (Stable Audio: ``layer = -2``), [B, 77, 768],
                 with the tokenizer's mask. Padded positions are **not** zeroed (the reference passes them on as they
                 are; the mask travels beside them).
  ``embedding``  the L2-normalised projected pooler output, one token [B, 1, 512], mask all True.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.models.clap import ClapTextEncoder
from stableaudio_jax.store.clap_tokenizer import ClapTokenizer
from stableaudio_jax.store.text_encoders import BoundTextEncoder

OUTPUTS = ("features", "embedding")
MODEL_KEYS = ("vocab_size", "width", "num_layers", "num_heads", "intermediate_size", "max_positions",
              "type_vocab_size", "pad_id", "projection_dim", "layer_norm_eps")


class ClapText(BoundTextEncoder):
    """``tokenize(prompts) -> (ids, mask)``; ``encode(ids, mask)`` → features or the embedding token."""

    def __init__(self, module: ClapTextEncoder, params: Any, tokenizer: ClapTokenizer | None = None,
                 max_length: int = 77, layer: int = -2, output: str = "features", source: str = "CLAP text encoder"):
        if output not in OUTPUTS:
            raise ValueError(f"CLAP text encoder output {output!r}; expected one of {OUTPUTS}")
        if not -(module.num_layers + 1) <= layer <= module.num_layers:
            raise ValueError(f"CLAP text encoder layer {layer}: the model has {module.num_layers + 1} hidden states")
        super().__init__(module, params, tokenizer, max_length, source)
        self.layer, self.output = int(layer), output

    @property
    def width(self) -> int:
        return self.module.width if self.output == "features" else self.module.projection_dim

    @property
    def output_length(self) -> int:
        return self.max_length if self.output == "features" else 1

    @property
    def config(self) -> dict:
        return {"type": "clap", "model": {k: getattr(self.module, k) for k in MODEL_KEYS},
                "max_length": int(self.max_length), "layer": self.layer, "output": self.output}

    @property
    def tokenizer_files(self) -> dict[str, str]:
        return {} if self.tokenizer is None else dict(self.tokenizer.files)

    def with_max_length(self, max_length: int) -> "ClapText":
        if max_length == self.max_length:
            return self
        tokenizer = None if self.tokenizer is None else ClapTokenizer(self.tokenizer.tokenizer, max_length,
                                                                      self.tokenizer.files)
        return ClapText(self.module, self.params, tokenizer, max_length, self.layer, self.output, self.source)

    def _features(self, params: Any, ids: jax.Array, mask: jax.Array) -> jax.Array:
        return _clap_features(self.module, self.layer, self.output, params, ids, mask)

    def output_mask(self, mask):
        return mask if self.output == "features" else np.ones((mask.shape[0], 1), bool)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _clap_features(module: ClapTextEncoder, layer: int, output: str, params: Any, ids: jax.Array,
                   mask: jax.Array) -> jax.Array:
    features, embedding = module.apply(params, ids, mask, layer=layer)
    return features.astype(jnp.float32) if output == "features" else embedding[:, None, :]
