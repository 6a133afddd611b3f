"""Transformer pieces shared by the denoisers: LayerNorm, partial rotary embeddings, (grouped-query) attention.

Conventions: activations ``[batch, length, features]``; heads split as ``[batch, length, heads, head_dim]`` with
heads outermost in the flattened feature axis (PyTorch's ``(h d)`` layout). Grouped-query attention groups query
heads consecutively: query head ``h`` reads key/value head ``h // (heads // kv_heads)`` (``repeat_interleave``).
Normalisation statistics, rotary phases and softmax are computed in float32 whatever the compute dtype.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from stableaudio_jax.models.layers import DenseGeneral
from stableaudio_jax.parallel.sharding import constrain

Dtype = Any
HEAD_AXES = ("batch", "length", "act_heads", "act_kv")
ATTENTION_IMPLS = ("auto", "einsum", "xla", "cudnn", "flash")
FLASH_BLOCK = 128  # the Pallas TPU kernel's tile along both sequence axes


class LayerNorm(nn.Module):
    """LayerNorm over the last axis; stable-audio-tools' variant has a learnable scale and a fixed zero bias
    (``use_bias=False``)."""

    eps: float = 1e-5
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        features = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                           (features,), self.param_dtype)
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale.astype(jnp.float32)
        if self.use_bias:
            bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
                              (features,), self.param_dtype)
            y = y + bias.astype(jnp.float32)
        return y.astype(self.dtype)


def rotary_tables(length: int, dim: int, base: float = 10000.0) -> tuple[jax.Array, jax.Array]:
    """cos/sin tables ``[length, dim]`` for positions 0..length-1, frequencies repeated as [f, f] (rotate-half)."""
    inv_freq = 1.0 / (base ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim))
    freqs = jnp.arange(length, dtype=jnp.float32)[:, None] * inv_freq[None]
    freqs = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(freqs), jnp.sin(freqs)


def apply_partial_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates the first ``cos.shape[-1]`` dims of each head (rotate-half layout); the rest pass through.

    ``x`` is ``[B, L, H, D]``; tables are ``[L, R]`` with R <= D, in float32.
    """
    rot = cos.shape[-1]
    if rot > x.shape[-1]:
        raise ValueError(f"rotary dim {rot} exceeds the head dim {x.shape[-1]}")
    x32 = x.astype(jnp.float32)
    xr, xp = x32[..., :rot], x32[..., rot:]
    x1, x2 = jnp.split(xr, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return jnp.concatenate([xr * cos + rotated * sin, xp], axis=-1).astype(x.dtype)


def default_impl(platform: str) -> str:
    """What ``auto`` means on a platform. XLA's fused attention is slower than plain einsums on CPU; on GPU/TPU
    JAX picks (cuDNN flash on GPU)."""
    return "einsum" if platform == "cpu" else "dot_product"


def _resolve_impl(impl: str) -> str:
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention implementation {impl!r}; expected one of {ATTENTION_IMPLS}")
    return default_impl(jax.default_backend()) if impl == "auto" else impl


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None,
                          impl: str = "auto") -> jax.Array:
    """Softmax attention with grouped-query heads. q ``[B, Lq, H, D]``; k, v ``[B, Lk, KV, D]`` with H % KV == 0;
    mask ``[B, Lk]`` (True = attend) or None. Returns ``[B, Lq, H, D]`` in q's dtype."""
    heads, kv_heads = q.shape[2], k.shape[2]
    if heads % kv_heads:
        raise ValueError(f"attention: {heads} query heads are not a multiple of {kv_heads} key/value heads")
    impl = _resolve_impl(impl)
    if impl == "flash":
        return _per_shard(flash_attention, q, k, v, mask)
    if impl != "einsum":
        bias_mask = None if mask is None else mask[:, None, None, :].astype(bool)
        return jax.nn.dot_product_attention(q, k, v, mask=bias_mask,
                                            implementation=None if impl == "dot_product" else impl)
    return _heads_major_attention(q, k, v, mask)


def _heads_major_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Softmax attention as two plain batched matmuls over (batch, key/value head).

    The queries of one key/value group are stacked along the rows (``[B, KV, G * Lq, D]``), so keys and values are
    never repeated and each score matrix is one ``[G * Lq, D] x [D, Lk]`` product. Written this way (rather than
    one einsum over ``[B, Lq, KV, G, D]``) XLA:CPU needs a single transpose of q in and of the output back; the
    5-D einsum made it transpose the ``Lq x Lk`` scores twice and run its batched matmuls on transposed operands:
    on one core a depth-2 SAO-width DiT forward (256 frames, batch 2) went from 973 to 915 ms. Same operations,
    same order, same float32 logits and softmax: the outputs agree to float32 rounding.
    """
    batch, q_len, heads, head_dim = q.shape
    kv_heads = k.shape[2]
    qh = q.transpose(0, 2, 1, 3).reshape(batch, kv_heads, heads // kv_heads * q_len, head_dim)
    logits = jnp.einsum("bkqd,bskd->bkqs", qh, k, preferred_element_type=jnp.float32) / math.sqrt(head_dim)
    if mask is not None:
        logits = jnp.where(mask[:, None, None, :].astype(bool), logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkqs,bskd->bkqd", weights, v)
    return out.reshape(batch, heads, q_len, head_dim).transpose(0, 2, 1, 3)


def _per_shard(kernel, q, k, v, mask):
    """``kernel`` on each device's shard: a Pallas kernel cannot be partitioned by XLA. The batch and head axes are
    sharded as the logical rules say (``HEAD_AXES``); the sequence axes must be whole."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return kernel(q, k, v, mask)
    spec = nn.logical_to_mesh_axes(HEAD_AXES)
    if spec[1] is not None:
        raise ValueError(f"flash attention needs whole sequences on each device; the rules shard 'length' over "
                         f"{spec[1]!r}")
    mask = jnp.ones(k.shape[:2], bool) if mask is None else mask
    return jax.shard_map(kernel, in_specs=(spec, spec, spec, PartitionSpec(spec[0], None)), out_specs=spec,
                         check_vma=False)(q, k, v, mask)


def flash_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The Pallas TPU flash-attention kernel (blockwise softmax: no ``Lq x Lk`` scores in HBM) with this module's
    conventions. Sequences are padded to whole ``FLASH_BLOCK`` tiles; the key mask and the padding become segment
    ids (real queries are segment 1, keys are 1 where attended, padding and masked keys 0), so a real query never
    sees a masked or padded key. Grouped key/value heads are repeated to the query heads. TPU only (on CPU, run it
    under ``jax.experimental.pallas.tpu.force_tpu_interpret_mode()``)."""
    from jax.experimental.pallas.ops.tpu import flash_attention as pallas_flash
    batch, q_len, heads, head_dim = q.shape
    k_len, group = k.shape[1], heads // k.shape[2]
    if group > 1:
        k, v = jnp.repeat(k, group, axis=2), jnp.repeat(v, group, axis=2)
    pad = lambda x, n: jnp.pad(x, [(0, 0), (0, n)] + [(0, 0)] * (x.ndim - 2))  # noqa: E731  (the length axis)
    q_pad, k_pad = -q_len % FLASH_BLOCK, -k_len % FLASH_BLOCK
    keys = jnp.ones((batch, k_len), jnp.int32) if mask is None else mask.astype(jnp.int32)
    segments = pallas_flash.SegmentIds(q=pad(jnp.ones((batch, q_len), jnp.int32), q_pad), kv=pad(keys, k_pad))
    heads_first = lambda x: x.transpose(0, 2, 1, 3)  # noqa: E731  ([B, L, H, D] -> [B, H, L, D])
    block = FLASH_BLOCK
    sizes = pallas_flash.BlockSizes(block_q=block, block_k_major=block, block_k=block, block_b=1,
                                    block_q_major_dkv=block, block_k_major_dkv=block, block_k_dkv=block,
                                    block_q_dkv=block, block_k_major_dq=block, block_k_dq=block, block_q_dq=block)
    out = pallas_flash.flash_attention(heads_first(pad(q, q_pad)), heads_first(pad(k, k_pad)),
                                       heads_first(pad(v, k_pad)), segment_ids=segments,
                                       sm_scale=1.0 / math.sqrt(head_dim), block_sizes=sizes)
    return heads_first(out)[:, :q_len].astype(q.dtype)


class SelfAttention(nn.Module):
    """Fused q/k/v projection (kernel ``[D, 3, H, head_dim]``), partial rotary on q and k, output projection."""

    num_heads: int
    head_dim: int
    impl: str = "auto"
    zero_init_output: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, cos: jax.Array | None = None, sin: jax.Array | None = None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        qkv = DenseGeneral((3, self.num_heads, self.head_dim), ("embed", "qkv", "heads", "kv"), name="qkv",
                           kernel_init=nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2, 3)), **kw)(x)
        q, k, v = (constrain(qkv[:, :, i], HEAD_AXES) for i in range(3))
        if cos is not None:
            q, k = apply_partial_rotary(q, cos, sin), apply_partial_rotary(k, cos, sin)
        out = dot_product_attention(q, k, v, impl=self.impl)
        return _output_projection(out, x.shape[-1], self.zero_init_output, kw)


class CrossAttention(nn.Module):
    """Queries from x, fused keys/values (kernel ``[C, 2, KV, head_dim]``) from the context; no rotary."""

    num_heads: int
    head_dim: int
    kv_heads: int
    impl: str = "auto"
    zero_init_output: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None = None) -> jax.Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        q = DenseGeneral((self.num_heads, self.head_dim), ("embed", "heads", "kv"), name="q",
                         kernel_init=nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2)), **kw)(x)
        kv = DenseGeneral((2, self.kv_heads, self.head_dim), ("cond_embed", "qkv", "heads", "kv"), name="kv",
                          kernel_init=nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2, 3)), **kw)(context)
        q = constrain(q, HEAD_AXES)
        k, v = (constrain(kv[:, :, i], HEAD_AXES) for i in range(2))
        out = dot_product_attention(q, k, v, mask=context_mask, impl=self.impl)
        return _output_projection(out, x.shape[-1], self.zero_init_output, kw)


def _output_projection(out: jax.Array, features: int, zero_init: bool, kw: dict) -> jax.Array:
    init = nn.initializers.zeros_init() if zero_init else nn.initializers.lecun_normal(in_axis=(0, 1), out_axis=2)
    return DenseGeneral((features,), ("heads", "kv", "embed"), in_dims=2, name="out", kernel_init=init, **kw)(out)
