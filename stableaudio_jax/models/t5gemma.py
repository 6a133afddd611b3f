"""T5Gemma encoder (Stable Audio 3's text encoder, ``google/t5gemma-b-b-ul2``) in Linen.

Follows Hugging Face ``T5GemmaEncoderModel``: token embedding scaled by sqrt(hidden) (the scale cast to the compute
dtype first, as HF does), then ``num_layers`` Gemma 2 blocks with "sandwich" norms:

  h = x + post_attn_norm(attention(pre_attn_norm(x)))
  x = h + post_ff_norm(mlp(pre_ff_norm(h)))

and a final norm. Norms are Gemma's RMS norm with a ``(1 + weight)`` scale (weights start at zero). Attention is
bidirectional with rotary position embeddings on the whole head (rotate-half, base ``rope_theta``), scores scaled by
``query_pre_attn_scalar ** -0.5`` and soft-capped (``cap * tanh(s / cap)``) before the padding mask, grouped-query
when ``num_kv_heads < num_heads``. Layers alternate sliding-window (even indices: a key at most ``sliding_window``
positions from the query) and full attention, as the config's ``layer_types`` default. The feed-forward is gated:
``down(gelu_tanh(gate(x)) * up(x))``. Norm statistics, scores and softmax run in float32.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from stableaudio_jax.models.attention import apply_partial_rotary, rotary_tables
from stableaudio_jax.models.layers import DenseGeneral
from stableaudio_jax.models.t5 import ACTIVATIONS, T5LayerNorm
from stableaudio_jax.parallel.sharding import constrain

Dtype = Any
LAYER_TYPES = ("sliding_attention", "full_attention")


def default_layer_types(num_layers: int) -> tuple[str, ...]:
    """HF's default: sliding-window attention in even layers (0, 2, ...), full attention in odd ones."""
    return tuple(LAYER_TYPES[i % 2] for i in range(num_layers))


def GemmaRMSNorm(eps: float = 1e-6, **kwargs) -> T5LayerNorm:  # noqa: N802 (a module, by its use)
    """Gemma's RMS norm: scaled by ``1 + weight`` (zero-initialised), float32 statistics."""
    return T5LayerNorm(eps, unit_offset=True, **kwargs)


def _dense(features, axes, name, kw, in_dims=1, use_bias=False):
    features = features if isinstance(features, tuple) else (features,)
    return DenseGeneral(features, axes, in_dims=in_dims, name=name, use_bias=use_bias,
                        kernel_init=nn.initializers.normal(0.02), **kw)  # HF's initializer_range


def soft_cap(scores: jax.Array, cap: float | None) -> jax.Array:
    return scores if cap is None else cap * jnp.tanh(scores / cap)


class T5GemmaAttention(nn.Module):
    num_heads: int
    num_kv_heads: int
    head_dim: int
    query_pre_attn_scalar: float
    softcap: float | None
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, cos, sin, bias):
        """x [B, L, D]; cos/sin [L, head_dim]; bias [B, 1, L, L] (padding and window, 0 or the float32 min)."""
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        d_model = x.shape[-1]
        q = _dense((self.num_heads, self.head_dim), ("embed", "heads", "kv"), "q", kw, use_bias=self.use_bias)(x)
        k = _dense((self.num_kv_heads, self.head_dim), ("embed", "heads", "kv"), "k", kw, use_bias=self.use_bias)(x)
        v = _dense((self.num_kv_heads, self.head_dim), ("embed", "heads", "kv"), "v", kw, use_bias=self.use_bias)(x)
        q, k = apply_partial_rotary(q, cos, sin), apply_partial_rotary(k, cos, sin)
        groups = self.num_heads // self.num_kv_heads  # HF's repeat_kv: each kv head serves consecutive q heads
        k, v = jnp.repeat(k, groups, axis=2), jnp.repeat(v, groups, axis=2)
        q, k, v = (constrain(t, ("batch", "length", "act_heads", "act_kv")) for t in (q, k, v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
        scores = soft_cap(scores * self.query_pre_attn_scalar ** -0.5, self.softcap) + bias
        weights = jax.nn.softmax(scores, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return _dense(d_model, ("heads", "kv", "embed"), "o", kw, in_dims=2, use_bias=self.use_bias)(out)


class T5GemmaMLP(nn.Module):
    hidden: int
    activation: str = "gelu_pytorch_tanh"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        gate = ACTIVATIONS[self.activation](_dense(self.hidden, ("embed", "mlp"), "gate", kw)(x))
        h = constrain(gate * _dense(self.hidden, ("embed", "mlp"), "up", kw)(x), ("batch", "length", "act_mlp"))
        return _dense(x.shape[-1], ("mlp", "embed"), "down", kw)(h)


class T5GemmaBlock(nn.Module):
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_hidden: int
    activation: str
    query_pre_attn_scalar: float
    softcap: float | None
    use_bias: bool
    eps: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, cos, sin, bias):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = GemmaRMSNorm(self.eps, name="pre_attn_norm", **kw)(x)
        h = T5GemmaAttention(self.num_heads, self.num_kv_heads, self.head_dim, self.query_pre_attn_scalar,
                             self.softcap, self.use_bias, name="attn", **kw)(h, cos, sin, bias)
        x = x + GemmaRMSNorm(self.eps, name="post_attn_norm", **kw)(h)
        h = GemmaRMSNorm(self.eps, name="pre_ff_norm", **kw)(x)
        h = T5GemmaMLP(self.mlp_hidden, self.activation, name="mlp", **kw)(h)
        x = x + GemmaRMSNorm(self.eps, name="post_ff_norm", **kw)(h)
        return constrain(x, ("batch", "length", "act_embed"))


class T5GemmaEncoder(nn.Module):
    """``__call__(ids [B, L] int, mask [B, L] bool) -> hidden [B, L, d_model]`` (HF ``last_hidden_state``; padded
    positions are computed like any other, only masked as keys). Defaults: ``t5gemma-b-b-ul2``'s encoder."""

    vocab_size: int = 256000
    d_model: int = 768
    mlp_hidden: int = 2048
    num_layers: int = 12
    num_heads: int = 12
    num_kv_heads: int = 12
    head_dim: int = 64
    activation: str = "gelu_pytorch_tanh"
    query_pre_attn_scalar: float = 64.0
    attn_logit_softcap: float | None = 50.0
    sliding_window: int | None = 4096
    layer_types: Sequence[str] | None = None  # None: default_layer_types(num_layers)
    rope_theta: float = 10000.0
    attention_bias: bool = False
    rms_norm_eps: float = 1e-6
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _layer_types(self) -> tuple[str, ...]:
        types = tuple(self.layer_types) if self.layer_types is not None else default_layer_types(self.num_layers)
        if len(types) != self.num_layers or set(types) - set(LAYER_TYPES):
            raise ValueError(f"T5GemmaEncoder.layer_types is {types}: expected {self.num_layers} entries, each one "
                             f"of {LAYER_TYPES}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"T5GemmaEncoder: num_heads {self.num_heads} is not a multiple of num_kv_heads "
                             f"{self.num_kv_heads}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"T5GemmaEncoder.activation is {self.activation!r}; expected one of {list(ACTIVATIONS)}")
        return types

    @nn.compact
    def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        types = self._layer_types()
        embed = nn.Embed(self.vocab_size, self.d_model, name="embed", **kw,
                         embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")))
        x = embed(ids) * jnp.asarray(self.d_model ** 0.5, self.dtype)
        x = constrain(x, ("batch", "length", "act_embed"))
        cos, sin = rotary_tables(ids.shape[1], self.head_dim, self.rope_theta)
        biases = {kind: self._bias(mask, kind) for kind in set(types)}
        block = nn.remat(T5GemmaBlock) if self.remat else T5GemmaBlock
        for i, kind in enumerate(types):
            x = block(self.num_heads, self.num_kv_heads, self.head_dim, self.mlp_hidden, self.activation,
                      self.query_pre_attn_scalar, self.attn_logit_softcap, self.attention_bias, self.rms_norm_eps,
                      name=f"blocks_{i}", **kw)(x, cos, sin, biases[kind])
        return GemmaRMSNorm(self.rms_norm_eps, name="final_norm", **kw)(x)

    def _bias(self, mask: jax.Array, kind: str) -> jax.Array:
        """[B, 1, L, L]: 0 where a query may see a key (a real token; within the window on sliding layers), else
        the float32 minimum (HF's additive mask)."""
        allowed = mask[:, None, None, :].astype(bool)
        if kind == "sliding_attention" and self.sliding_window is not None:
            positions = jnp.arange(mask.shape[1])
            near = jnp.abs(positions[:, None] - positions[None, :]) <= self.sliding_window
            allowed = allowed & near[None, None]
        return jnp.where(allowed, 0.0, jnp.finfo(jnp.float32).min)


def t5gemma_from_config(model_config: Any, dtype: Any = jnp.float32,
                        param_dtype: Any = jnp.float32) -> T5GemmaEncoder:
    fields = dict(model_config)
    if fields.get("layer_types") is not None:
        fields["layer_types"] = tuple(fields["layer_types"])
    return T5GemmaEncoder(**fields, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))
