"""CLAP's text branch (the text encoder of Stable Audio 1.0 and 2.0) in Linen.

LAION CLAP's text tower is a Hugging Face ``RobertaModel`` followed by ``text_projection`` (Linear → ReLU → Linear,
768 → 512 → 512); Hugging Face's ``ClapTextModelWithProjection`` is the same network under other names. This
follows them exactly:

  embeddings  word + learned position (RoBERTa's: positions count non-pad tokens from ``pad_id + 1``; pads sit at
              ``pad_id``) + token type 0 → LayerNorm
  layers      ``num_layers`` post-norm BERT blocks: LayerNorm(x + attention(x)), LayerNorm(h + W2 gelu(W1 h));
              attention with biases, logits / sqrt(head_dim), padded keys masked with the float32 minimum
  pooler      tanh(dense(hidden[:, 0]))  (the ``<s>`` token)
  projection  text_projection(pooler) → L2-normalised (what ``get_text_embedding`` returns)

``__call__(ids, mask, layer=-2)`` returns ``(features, embedding)``: ``features`` is ``hidden_states[layer]`` of the
Hugging Face output (index 0 is the embedding output, -1 the last layer; Stable Audio uses
``feature_layer_ix = -2``) and ``embedding`` the normalised projected pooler output. Norms and softmax in float32.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from stableaudio_jax.models.layers import DenseGeneral
from stableaudio_jax.parallel.sharding import constrain

Dtype = Any


def roberta_positions(ids: jax.Array, pad_id: int) -> jax.Array:
    """RoBERTa's position ids: 1-based counts of non-pad tokens, offset by ``pad_id``; pads get ``pad_id``."""
    real = (ids != pad_id).astype(jnp.int32)
    return jnp.cumsum(real, axis=1) * real + pad_id


class LayerNorm(nn.Module):
    """LayerNorm with bias, statistics in float32 (torch's ``nn.LayerNorm`` names: weight/bias → scale/bias)."""

    eps: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        return nn.LayerNorm(self.eps, dtype=jnp.float32, param_dtype=self.param_dtype, name="norm",
                            scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                            bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)))(
            x.astype(jnp.float32)).astype(self.dtype)


def _dense(features, axes, name, dtype, param_dtype, in_dims=1):
    features = features if isinstance(features, tuple) else (features,)
    return DenseGeneral(features, axes, in_dims=in_dims, use_bias=True, name=name, dtype=dtype,
                        param_dtype=param_dtype, kernel_init=nn.initializers.normal(0.02))


class RobertaSelfAttention(nn.Module):
    num_heads: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias):
        """x [B, L, D]; bias [B, 1, 1, L] (0 for real keys, the float32 minimum for padding)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        width = x.shape[-1]
        head_dim = width // self.num_heads
        q, k, v = (_dense((self.num_heads, head_dim), ("embed", "heads", "kv"), name, **kw)(x)
                   for name in ("query", "key", "value"))
        q, k, v = (constrain(t, ("batch", "length", "act_heads", "act_kv")) for t in (q, k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) / jnp.sqrt(head_dim)
        weights = jax.nn.softmax(logits + bias, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return _dense(width, ("heads", "kv", "embed"), "output", in_dims=2, **kw)(out)


class RobertaLayer(nn.Module):
    num_heads: int
    intermediate_size: int
    eps: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = LayerNorm(self.eps, name="attention_norm", **kw)(
            x + RobertaSelfAttention(self.num_heads, name="attention", **kw)(x, bias))
        up = jax.nn.gelu(_dense(self.intermediate_size, ("embed", "mlp"), "intermediate", **kw)(h),
                         approximate=False)
        up = constrain(up, ("batch", "length", "act_mlp"))
        out = LayerNorm(self.eps, name="output_norm", **kw)(h + _dense(x.shape[-1], ("mlp", "embed"), "output",
                                                                         **kw)(up))
        return constrain(out, ("batch", "length", "act_embed"))


class ClapTextEncoder(nn.Module):
    """``__call__(ids [B, L] int, mask [B, L] bool, layer=-2) -> (hidden_states[layer] [B, L, width],
    normalised projected embedding [B, projection_dim])``."""

    vocab_size: int = 50265
    width: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_positions: int = 514
    type_vocab_size: int = 1
    pad_id: int = 1
    projection_dim: int = 512
    layer_norm_eps: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, ids: jax.Array, mask: jax.Array, layer: int = -2) -> tuple[jax.Array, jax.Array]:
        if not -(self.num_layers + 1) <= layer <= self.num_layers:
            raise ValueError(f"ClapTextEncoder: layer {layer} is outside the {self.num_layers + 1} hidden states "
                             f"(embeddings + {self.num_layers} layers)")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        hidden = [self._embed(ids)]
        bias = jnp.where(mask[:, None, None, :].astype(bool), 0.0, jnp.finfo(jnp.float32).min)
        for i in range(self.num_layers):
            hidden.append(RobertaLayer(self.num_heads, self.intermediate_size, self.layer_norm_eps, name=f"layers_{i}",
                                       **kw)(hidden[-1], bias))
        pooled = jnp.tanh(_dense(self.width, ("embed", "mlp"), "pooler", **kw)(hidden[-1][:, 0]))
        projected = _dense(self.projection_dim, ("embed", "mlp"), "projection_1", **kw)(pooled)
        projected = _dense(self.projection_dim, ("mlp", "embed"), "projection_2", **kw)(jax.nn.relu(projected))
        projected = projected.astype(jnp.float32)
        # torch.nn.functional.normalize: x / max(||x||, 1e-12)
        embedding = projected / jnp.maximum(jnp.linalg.norm(projected, axis=-1, keepdims=True), 1e-12)
        return hidden[layer], embedding

    def _embed(self, ids: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        init = nn.initializers.normal(0.02)
        words = nn.Embed(self.vocab_size, self.width, name="word_embeddings", **kw,
                         embedding_init=nn.with_logical_partitioning(init, ("vocab", "embed")))(ids)
        positions = nn.Embed(self.max_positions, self.width, name="position_embeddings", **kw,
                             embedding_init=nn.with_logical_partitioning(init, ("relpos_buckets", "embed")))(
            roberta_positions(ids, self.pad_id))
        types = self.param("token_type_embeddings", nn.with_logical_partitioning(init, ("relpos_buckets", "embed")),
                           (self.type_vocab_size, self.width), self.param_dtype)
        x = words + positions + types[0].astype(self.dtype)
        return constrain(LayerNorm(self.layer_norm_eps, name="embeddings_norm", **kw)(x),
                         ("batch", "length", "act_embed"))
