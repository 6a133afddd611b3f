"""T5 encoder (the text encoder of Stable Audio Open) in Linen.

Follows Hugging Face ``T5EncoderModel`` exactly: token embedding, ``num_layers`` pre-norm blocks of
[RMS norm → self-attention with a bucketed relative position bias → residual] and [RMS norm → feed-forward →
residual], final RMS norm. Attention logits are not scaled by 1/sqrt(d) (T5 folds that into its init). The relative
position bias is computed once (it lives in the first block in HF checkpoints) and shared by every layer.

Feed-forward variants: the original T5 (``relu``: wo(relu(wi x)), t5-base as SAO uses it) and T5 v1.1 / Flan
(``gated-gelu``: wo(gelu_tanh(wi_0 x) * wi_1 x)). Norms and softmax run in float32 whatever the compute dtype.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from stableaudio_jax.models.layers import DenseGeneral
from stableaudio_jax.parallel.sharding import constrain

Dtype = Any

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "silu": jax.nn.silu,
}


def relative_position_bucket(relative_position: jax.Array, num_buckets: int, max_distance: int) -> jax.Array:
    """T5's bidirectional bucketing of (key - query) offsets: exact buckets near 0, log-spaced up to
    ``max_distance``; half the buckets for positive offsets."""
    num_buckets //= 2
    buckets = (relative_position > 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(relative_position)
    max_exact = num_buckets // 2
    # log-spaced buckets; float32 then truncation towards zero, as torch's .to(long)
    log_ratio = jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
    large = jnp.minimum(large, num_buckets - 1)
    return buckets + jnp.where(distance < max_exact, distance, large)


class T5LayerNorm(nn.Module):
    """RMS norm without mean subtraction or bias, statistics in float32. ``unit_offset``: Gemma's form, the scale
    is ``1 + weight`` with the weight starting at zero (T5Gemma)."""

    eps: float = 1e-6
    unit_offset: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.zeros_init() if self.unit_offset else nn.initializers.ones_init()
        weight = self.param("weight", nn.with_logical_partitioning(init, ("norm",)), (x.shape[-1],),
                            self.param_dtype)
        scale = weight.astype(jnp.float32) + (1.0 if self.unit_offset else 0.0)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return (scale * x32).astype(self.dtype)


def _dense(features, axes, name, dtype, param_dtype, in_dims=1, std=1.0):
    features = features if isinstance(features, tuple) else (features,)
    return DenseGeneral(features, axes, in_dims=in_dims, name=name, dtype=dtype, param_dtype=param_dtype,
                        kernel_init=nn.initializers.normal(std))


class T5SelfAttention(nn.Module):
    num_heads: int
    head_dim: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias):
        """x [B, L, D]; bias [B or 1, H, L, L] (relative position bias plus the padding mask)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d_model = x.shape[-1]
        std = (d_model * self.head_dim) ** -0.5  # HF's init: q scaled by 1/sqrt(d_model * d_kv)
        q = _dense((self.num_heads, self.head_dim), ("embed", "heads", "kv"), "q", std=std, **kw)(x)
        k = _dense((self.num_heads, self.head_dim), ("embed", "heads", "kv"), "k", std=d_model ** -0.5, **kw)(x)
        v = _dense((self.num_heads, self.head_dim), ("embed", "heads", "kv"), "v", std=d_model ** -0.5, **kw)(x)
        q, k, v = (constrain(t, ("batch", "length", "act_heads", "act_kv")) for t in (q, k, v))
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) + bias
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return _dense(d_model, ("heads", "kv", "embed"), "o", in_dims=2,
                      std=(self.num_heads * self.head_dim) ** -0.5, **kw)(out)


class T5FeedForward(nn.Module):
    d_ff: int
    activation: str = "relu"
    gated: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d_model = x.shape[-1]
        act = ACTIVATIONS[self.activation]
        if self.gated:
            h = act(_dense(self.d_ff, ("embed", "mlp"), "wi_0", std=d_model ** -0.5, **kw)(x))
            h = h * _dense(self.d_ff, ("embed", "mlp"), "wi_1", std=d_model ** -0.5, **kw)(x)
        else:
            h = act(_dense(self.d_ff, ("embed", "mlp"), "wi", std=d_model ** -0.5, **kw)(x))
        h = constrain(h, ("batch", "length", "act_mlp"))
        return _dense(d_model, ("mlp", "embed"), "wo", std=self.d_ff ** -0.5, **kw)(h)


class T5Block(nn.Module):
    num_heads: int
    head_dim: int
    d_ff: int
    activation: str
    gated: bool
    eps: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, bias):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = T5LayerNorm(self.eps, name="attn_norm", **kw)(x)
        x = x + T5SelfAttention(self.num_heads, self.head_dim, name="attn", **kw)(h, bias)
        h = T5LayerNorm(self.eps, name="ff_norm", **kw)(x)
        x = x + T5FeedForward(self.d_ff, self.activation, self.gated, name="ff", **kw)(h)
        return constrain(x, ("batch", "length", "act_embed"))


class T5Encoder(nn.Module):
    """``__call__(ids [B, L] int, mask [B, L] bool) -> hidden [B, L, d_model]`` (HF ``last_hidden_state``;
    padded positions are *not* zeroed here: that is the conditioner's job, see ``store.text_encoders``)."""

    vocab_size: int = 32128
    d_model: int = 768
    d_kv: int = 64
    d_ff: int = 3072
    num_layers: int = 12
    num_heads: int = 12
    num_buckets: int = 32
    max_distance: int = 128
    layer_norm_eps: float = 1e-6
    feed_forward: str = "relu"  # 'relu' (t5-base) or 'gated-gelu' (v1.1 / flan); any 'gated-<act>' / '<act>'
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _feed_forward_kind(self) -> tuple[str, bool]:
        gated = self.feed_forward.startswith("gated-")
        act = self.feed_forward[len("gated-"):] if gated else self.feed_forward
        act = "gelu_new" if act == "gelu" and gated else act  # HF maps 'gated-gelu' to the tanh approximation
        if act not in ACTIVATIONS:
            raise ValueError(f"T5Encoder.feed_forward is {self.feed_forward!r}; expected 'relu', 'gated-gelu' or "
                             f"[gated-]<{'|'.join(ACTIVATIONS)}>")
        return act, gated

    @nn.compact
    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        act, gated = self._feed_forward_kind()
        embed = nn.Embed(self.vocab_size, self.d_model, name="embed", **kw,
                         embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")))
        x = constrain(embed(ids), ("batch", "length", "act_embed"))
        bias = self._position_bias(ids.shape[1]) + self._mask_bias(mask)
        block = nn.remat(T5Block) if self.remat else T5Block
        for i in range(self.num_layers):
            x = block(self.num_heads, self.d_kv, self.d_ff, act, gated, self.layer_norm_eps, name=f"blocks_{i}",
                      **kw)(x, bias)
        return T5LayerNorm(self.layer_norm_eps, name="final_norm", **kw)(x)

    def _position_bias(self, length: int) -> jax.Array:
        table = self.param("relative_attention_bias", nn.with_logical_partitioning(
            nn.initializers.normal(self.d_model ** -0.5), ("relpos_buckets", "heads")),
            (self.num_buckets, self.num_heads), self.param_dtype)
        positions = jnp.arange(length)
        buckets = relative_position_bucket(positions[None, :] - positions[:, None], self.num_buckets,
                                           self.max_distance)
        return jnp.transpose(table.astype(jnp.float32)[buckets], (2, 0, 1))[None]  # [1, H, L, L]

    @staticmethod
    def _mask_bias(mask: jax.Array) -> jax.Array:
        """Padded keys get the float32 minimum added, as HF's extended attention mask does."""
        return jnp.where(mask[:, None, None, :].astype(bool), 0.0, jnp.finfo(jnp.float32).min)
