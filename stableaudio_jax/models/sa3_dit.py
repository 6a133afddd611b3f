"""Stable Audio 3's diffusion transformer (the reference's ``DiffusionTransformer`` with a ``ContinuousTransformer``,
``global_cond_type='adaLN'``, ``timestep_features_type='expo'``), channels-last.

  ctx  = to_cond_embed(cross)                          Linear-SiLU-Linear, no bias   (prompt tokens + duration token)
  g    = to_global_embed(global) + to_timestep_embed(expo(t))
  x    = x + preprocess_conv(x);  h = [memory tokens ; project_in(x)]   rotary over the whole length
  gc   = global_cond_embedder(g)                       Linear-SiLU-Linear -> 6 x embed
  each block, with (scale, shift, gate) x 2 = to_scale_shift_gate + gc:
       h += sigmoid(1 - gate_a) * SelfAttn(RMS(h) * (1 + scale_a) + shift_a)     qk RMS norm, partial rotary
       h += CrossAttn(RMS(h), ctx)                                               qk RMS norm, no mask
       h += to_local_embed(local)          (inpainting mask + masked latents; the memory tokens get nothing)
       h += sigmoid(1 - gate_f) * GLU(RMS(h) * (1 + scale_f) + shift_f)
  v    = project_out(h without the memory tokens);  v = v + postprocess_conv(v)

Attention may be differential (Medium: ``softmax(q k) v - softmax(q2 k2) v``). The output is the velocity of
rectified flow (``x_t = (1 - t) x0 + t noise``, ``v = noise - x0``).

Padding masks (variable-length generation and training) have two meanings in the reference, by backend:
``padding='exclude'`` removes padded keys from every self-attention (flash-attn's varlen path, what the GPU
models run and were trained with); ``'zero_values'`` only zeroes the values at padded keys, which still take
softmax mass (its CPU / SDPA path). The outputs at valid positions differ between the two.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.models.attention import HEAD_AXES, apply_partial_rotary, dot_product_attention, rotary_tables
from stableaudio_jax.models.dit import EMBED_AXES, REMAT_POLICIES, MLP2, SwiGLU
from stableaudio_jax.models.layers import DenseGeneral, module_from_config
from stableaudio_jax.models.lora import LORA, LORA_RNG, LORA_SCALE
from stableaudio_jax.models.t5 import T5LayerNorm
from stableaudio_jax.parallel.sharding import constrain

Dtype = Any
PADDING_MODES = ("exclude", "zero_values")
LOGSNR_RANGE = (-12.0, 5.0)  # timestep_features_logsnr's clamp (the reference's fixed normalisation range)


def expo_frequencies(count: int, min_freq: float = 0.5, max_freq: float = 10000.0) -> np.ndarray:
    """``count`` frequencies spaced geometrically from ``min_freq`` to ``max_freq``, float32.

    Computed in float64 and rounded once. The reference computes them in float32 (its ``exp`` is off by one ulp
    in a few of them, and differently on other devices); at frequency 1e4 one ulp moves ``2 pi t f`` by ~4e-3, so
    a feature there is only defined to ~1e-2 in float32 anyway (tests/test_sa3_dit.py measures it)."""
    ramp = np.linspace(0.0, 1.0, count, dtype=np.float64)
    return np.exp(ramp * (math.log(max_freq) - math.log(min_freq)) + math.log(min_freq)).astype(np.float32)


def expo_fourier_features(t: jax.Array, dim: int = 256, min_freq: float = 0.5, max_freq: float = 10000.0):
    """``[cos(2 pi t f), sin(2 pi t f)]`` over :func:`expo_frequencies` (the reference's ``ExpoFourierFeatures``,
    cos first), float32; ``t`` is ``[B]``."""
    freqs = jnp.asarray(expo_frequencies(dim // 2, min_freq, max_freq))
    args = t.astype(jnp.float32)[:, None] * freqs * 2 * math.pi  # the reference's order of float32 products
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def logsnr_features_input(t: jax.Array) -> jax.Array:
    """``timestep_features_logsnr``: t → log((1 - t) / t) clamped to [-12, 5], mapped to [0, 1] (t = 0 → 0)."""
    lo, hi = LOGSNR_RANGE
    t = jnp.clip(t.astype(jnp.float32), 1e-7, 1 - 1e-7)
    return (hi - jnp.clip(jnp.log((1 - t) / t), lo, hi)) / (hi - lo)


def _dense(features, axes, name, kw, use_bias=False, zero=False, in_dims=1):
    features = features if isinstance(features, tuple) else (features,)
    n_out = len(features)
    init = (nn.initializers.zeros_init() if zero else
            nn.initializers.lecun_normal(in_axis=tuple(range(in_dims)),
                                         out_axis=tuple(range(in_dims, in_dims + n_out))))
    return DenseGeneral(features, axes, in_dims=in_dims, use_bias=use_bias, name=name, kernel_init=init, **kw)


def _attend(q, k, v, mask, padding: str, impl: str):
    if mask is not None and padding == "zero_values":
        return dot_product_attention(q, k, v * mask[:, :, None, None].astype(v.dtype), impl=impl)
    return dot_product_attention(q, k, v, mask=mask, impl=impl)


class SA3Attention(nn.Module):
    """Self-attention (``to_qkv``: [q, k, v] or [q, k, v, q2, k2]) or cross-attention (``to_q``: [q] or [q, q2];
    ``to_kv``: [k, v] or [k, k2, v]), RMS norms over each head's q and k (one module for q and q2, one for k and
    k2) before the rotary embedding, no biases, the output projection zero-initialised."""

    num_heads: int
    head_dim: int
    differential: bool = False
    qk_norm_eps: float = 1e-6
    padding: str = "exclude"
    impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context=None, cos=None, sin=None, mask=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        heads = (self.num_heads, self.head_dim)
        if context is None:
            n = 5 if self.differential else 3
            qkv = _dense((n, *heads), ("embed", "qkv", "heads", "kv"), "to_qkv", kw)(x)
            parts = [qkv[:, :, i] for i in range(n)]
            q, k, v = parts[:3]
            q2, k2 = parts[3:] if self.differential else (None, None)
        else:
            m = 2 if self.differential else 1
            qs = _dense((m, *heads), ("embed", "qkv", "heads", "kv"), "to_q", kw)(x)
            n = 3 if self.differential else 2
            kvs = _dense((n, *heads), ("cond_embed", "qkv", "heads", "kv"), "to_kv", kw)(context)
            q, q2 = qs[:, :, 0], (qs[:, :, 1] if self.differential else None)
            k, k2, v = (kvs[:, :, 0], kvs[:, :, 1], kvs[:, :, 2]) if self.differential else (
                kvs[:, :, 0], None, kvs[:, :, 1])
        q_norm = T5LayerNorm(self.qk_norm_eps, name="q_norm", **kw)
        k_norm = T5LayerNorm(self.qk_norm_eps, name="k_norm", **kw)
        pairs = [(q, k)] + ([(q2, k2)] if self.differential else [])
        outs = []
        for qi, ki in pairs:
            qi, ki = constrain(q_norm(qi), HEAD_AXES), constrain(k_norm(ki), HEAD_AXES)
            if cos is not None:
                qi, ki = apply_partial_rotary(qi, cos, sin), apply_partial_rotary(ki, cos, sin)
            outs.append(_attend(qi, ki, constrain(v, HEAD_AXES), mask, self.padding, self.impl))
        out = outs[0] - outs[1] if self.differential else outs[0]
        return _dense(x.shape[-1], ("heads", "kv", "embed"), "to_out", kw, zero=True, in_dims=2)(out)


class LocalEmbed(nn.Module):
    """Linear(local, embed) - SiLU - Linear(embed, embed), both with bias, the second zero-initialised."""

    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, local):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = _dense(self.features, ("local_cond", "mlp"), "fc1", kw, use_bias=True)(local)
        return _dense(self.features, ("mlp", "embed"), "fc2", kw, use_bias=True, zero=True)(jax.nn.silu(h))


class SA3Block(nn.Module):
    num_heads: int
    head_dim: int
    ff_inner: int
    differential: bool = False
    local_cond: bool = True
    norm_eps: float = 1e-5
    qk_norm_eps: float = 1e-6
    padding: str = "exclude"
    attention_impl: str = "auto"
    scanned: bool = False  # return (x, None), the (carry, output) signature nn.scan expects
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, global_cond, local, cos, sin, mask):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dim = x.shape[-1]
        attn = dict(num_heads=self.num_heads, head_dim=self.head_dim, differential=self.differential,
                    qk_norm_eps=self.qk_norm_eps, padding=self.padding, impl=self.attention_impl, **kw)
        base = self.param("to_scale_shift_gate", nn.with_logical_partitioning(
            nn.initializers.normal(1.0 / math.sqrt(dim)), ("adaln", "norm")), (6, dim), self.param_dtype)
        mod = (base[None].astype(jnp.float32) + global_cond.astype(jnp.float32))[:, :, None]  # [B, 6, 1, E]
        scale_a, shift_a, gate_a, scale_f, shift_f, gate_f = (mod[:, i].astype(self.dtype) for i in range(6))

        h = T5LayerNorm(self.norm_eps, name="pre_norm", **kw)(x) * (1 + scale_a) + shift_a
        x = x + SA3Attention(**attn, name="self_attn")(h, cos=cos, sin=sin, mask=mask) * jax.nn.sigmoid(1 - gate_a)
        h = T5LayerNorm(self.norm_eps, name="cross_attend_norm", **kw)(x)
        x = x + SA3Attention(**attn, name="cross_attn")(h, context=context)
        if self.local_cond:
            embedded = LocalEmbed(dim, name="to_local_embed", **kw)(local)
            x = x + jnp.pad(embedded, ((0, 0), (x.shape[1] - embedded.shape[1], 0), (0, 0)))  # not the memory
        h = T5LayerNorm(self.norm_eps, name="ff_norm", **kw)(x) * (1 + scale_f) + shift_f
        x = constrain(x + SwiGLU(self.ff_inner, name="ff", **kw)(h) * jax.nn.sigmoid(1 - gate_f), EMBED_AXES)
        return (x, None) if self.scanned else x


class GlobalCondEmbedder(nn.Module):
    """Linear(embed, embed) - SiLU - Linear(embed, 6 x embed), with biases: the blocks' shared adaLN input."""

    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, g):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dim = g.shape[-1]
        h = _dense(dim, ("embed", "mlp"), "fc1", kw, use_bias=True)(g)
        return _dense((6, dim), ("mlp", "adaln", "embed"), "fc2", kw, use_bias=True)(jax.nn.silu(h))


class SA3DiT(nn.Module):
    io_channels: int = 256
    embed_dim: int = 1024
    depth: int = 20
    num_heads: int = 16
    cond_token_dim: int = 768
    global_cond_dim: int = 768
    local_cond_dim: int = 257          # inpainting: mask (1) + masked latents (io_channels); 0: none
    num_memory_tokens: int = 64
    timestep_features_dim: int = 256
    timestep_features_logsnr: bool = False
    ff_mult: int = 4
    differential: bool = False         # Medium: differential attention
    rotary_base: float = 10000.0
    norm_eps: float = 1e-5
    qk_norm_eps: float = 1e-6
    padding: str = "exclude"           # see the module docstring
    attention_impl: str = "auto"
    scan_layers: bool = False
    remat: str = "none"
    features_only: bool = False        # return the last block's hidden states of the frames [B, T, embed] (ARC)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def _check(self, x, t, cross, global_cond, local, padding_mask):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"SA3DiT: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.padding not in PADDING_MODES:
            raise ValueError(f"SA3DiT.padding is {self.padding!r}; expected one of {PADDING_MODES}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"SA3DiT.remat is {self.remat!r}; expected one of {sorted(REMAT_POLICIES)}")
        batch, frames = x.shape[0], x.shape[1]
        expected = {"x": (x, (batch, frames, self.io_channels)),
                    "cross_attn_cond": (cross, (batch, cross.shape[1], self.cond_token_dim)),
                    "global_cond": (global_cond, (batch, self.global_cond_dim)), "t": (t, (batch,))}
        if local is not None:
            expected["local_cond"] = (local, (batch, frames, self.local_cond_dim))
        if padding_mask is not None:
            expected["padding_mask"] = (padding_mask, (batch, frames))
        for name, (arr, shape) in expected.items():
            if tuple(arr.shape) != shape:
                raise ValueError(f"SA3DiT: {name} has shape {tuple(arr.shape)}; expected {shape}")
        if local is not None and not self.local_cond_dim:
            raise ValueError("SA3DiT: local_cond given to a model without local conditioning (local_cond_dim=0)")

    def _block_kwargs(self) -> dict:
        return dict(num_heads=self.num_heads, head_dim=self.head_dim, ff_inner=self.embed_dim * self.ff_mult,
                    differential=self.differential, local_cond=bool(self.local_cond_dim), norm_eps=self.norm_eps,
                    qk_norm_eps=self.qk_norm_eps, padding=self.padding, attention_impl=self.attention_impl,
                    dtype=self.dtype, param_dtype=self.param_dtype)

    @nn.compact
    def __call__(self, x, t, cross_attn_cond, global_cond, local_cond=None, padding_mask=None):
        """x ``[B, T, io]``, t ``[B]``, cross ``[B, S, cond_token_dim]``, global ``[B, global_cond_dim]``;
        local ``[B, T, local_cond_dim]`` (None: zeros, plain text-to-audio, as the reference's generation passes);
        padding_mask ``[B, T]`` (True = a frame of the clip). Returns v ``[B, T, io]`` float32."""
        self._check(x, t, cross_attn_cond, global_cond, local_cond, padding_mask)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dim = self.embed_dim
        context = MLP2(dim, dim, "cond_embed", "cond_embed", name="to_cond_embed", **kw)(cross_attn_cond)
        g = MLP2(dim, dim, "cond_global", "embed", name="to_global_embed", **kw)(global_cond)
        t_in = logsnr_features_input(t) if self.timestep_features_logsnr else t
        g = g + MLP2(dim, dim, "fourier_out", "embed", use_bias=True, name="to_timestep_embed", **kw)(
            expo_fourier_features(t_in, self.timestep_features_dim))
        modulation = GlobalCondEmbedder(name="global_cond_embedder", **kw)(g)

        x = x.astype(self.dtype)
        x = x + _dense(self.io_channels, ("latent", "latent_out"), "preprocess_conv", kw, zero=True)(x)
        h = _dense(dim, ("latent", "embed"), "project_in", kw)(x)
        memory = self.param("memory_tokens", nn.with_logical_partitioning(nn.initializers.normal(1.0),
                                                                          ("memory", "embed")),
                            (self.num_memory_tokens, dim), self.param_dtype)
        h = jnp.concatenate([jnp.broadcast_to(memory.astype(h.dtype), (h.shape[0], *memory.shape)), h], axis=1)
        h = constrain(h, EMBED_AXES)
        cos, sin = rotary_tables(h.shape[1], max(self.head_dim // 2, 32), self.rotary_base)
        mask = None if padding_mask is None else jnp.concatenate(
            [jnp.ones((h.shape[0], self.num_memory_tokens), bool), padding_mask.astype(bool)], axis=1)
        local = None
        if self.local_cond_dim:
            local = (jnp.zeros((*x.shape[:2], self.local_cond_dim), self.dtype) if local_cond is None
                     else local_cond.astype(self.dtype))
        h = self._blocks(h, context.astype(self.dtype), modulation, local, cos, sin, mask)
        if self.features_only:
            return h[:, self.num_memory_tokens:].astype(jnp.float32)
        out = _dense(self.io_channels, ("embed", "latent"), "project_out", kw)(h[:, self.num_memory_tokens:])
        out = out + _dense(self.io_channels, ("latent", "latent_out"), "postprocess_conv", kw, zero=True)(out)
        return out.astype(jnp.float32)

    def _blocks(self, h, context, modulation, local, cos, sin, mask):
        policy = REMAT_POLICIES[self.remat]
        args = (context, modulation, local, cos, sin, mask)
        if not self.scan_layers:
            block = SA3Block if self.remat == "none" else nn.remat(SA3Block, policy=policy)
            for i in range(self.depth):
                h = block(**self._block_kwargs(), name=f"blocks_{i}")(h, *args)
            return h
        block = SA3Block if self.remat == "none" else nn.remat(SA3Block, policy=policy, prevent_cse=False)
        scanned = nn.scan(block, variable_axes={"params": 0, LORA: 0, LORA_SCALE: 0},
                          split_rngs={"params": True, LORA_RNG: True}, in_axes=(nn.broadcast,) * len(args),
                          length=self.depth, metadata_params={nn.PARTITION_NAME: "layers"})
        h, _ = scanned(**self._block_kwargs(), scanned=True, name="blocks")(h, *args)
        return h


def sa3_dit_from_config(model_config: Any, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> SA3DiT:
    """Builds the SA3 DiT from a ``config.model`` section (configs/sa3.py)."""
    return module_from_config(SA3DiT, model_config, "sa3_dit", dtype, param_dtype)
