"""The diffusion transformer of Stable Audio Open / Stable Audio 2.0 (stable-audio-tools ``DiffusionTransformer``
with a ``ContinuousTransformer``, ``global_cond_type='prepend'``, ``timestep_cond_type='global'``).

  cross   = to_cond_embed(cross_attn_cond)               Linear-SiLU-Linear, no bias
  g       = to_global_embed(global_cond)                 Linear-SiLU-Linear, no bias
          + to_timestep_embed([cos 2 pi t w, sin 2 pi t w])   learned Fourier features, Linear-SiLU-Linear with bias
  x       = x + preprocess_conv(x)                        1x1, no bias, zero-initialised
  h       = [g ; project_in(x)]                           the global token is prepended at position 0
  h       = blocks(h): h += SelfAttn(LN h) (partial rotary) ; h += CrossAttn(LN h, cross) (GQA, no mask) ;
                       h += SwiGLU(LN h)
  v       = project_out(h)[:, 1:] ; v = v + postprocess_conv(v)

Inputs and output are channels-last: x ``[B, T, io]``, t ``[B]`` in [0, 1], cross ``[B, S, cond_token_dim]``,
global ``[B, global_cond_dim]`` → ``[B, T, io]`` float32. ``scan_layers`` compiles one block and scans it over the
depth (parameters stacked on a leading ``layers`` axis); ``remat`` picks an activation-checkpointing policy.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from stableaudio_jax.models.attention import CrossAttention, LayerNorm, SelfAttention, rotary_tables
from stableaudio_jax.models.layers import DenseGeneral, module_from_config
from stableaudio_jax.models.lora import LORA, LORA_RNG, LORA_SCALE
from stableaudio_jax.parallel.sharding import constrain

Dtype = Any
EMBED_AXES = ("batch", "length", "act_embed")
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _dense(features, axes, name, kw, use_bias=False, init=None):
    init = nn.initializers.lecun_normal() if init is None else init
    return DenseGeneral((features,), axes, use_bias=use_bias, name=name, kernel_init=init, **kw)


class MLP2(nn.Module):
    """Linear → SiLU → Linear (the DiT's conditioning embedders)."""

    hidden: int
    features: int
    axes_in: str
    axes_out: str
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = _dense(self.hidden, (self.axes_in, "mlp"), "fc1", kw, self.use_bias)(x)
        return _dense(self.features, ("mlp", self.axes_out), "fc2", kw, self.use_bias)(jax.nn.silu(x))


class FourierFeatures(nn.Module):
    """``[cos(2 pi t w), sin(2 pi t w)]`` with learned w ~ N(0, 1) of size dim // 2 (stable-audio-tools order)."""

    dim: int = 256
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t):
        w = self.param("weight", nn.with_logical_partitioning(nn.initializers.normal(1.0), ("fourier",)),
                       (self.dim // 2,), self.param_dtype)
        f = 2 * math.pi * t.astype(jnp.float32)[:, None] * w.astype(jnp.float32)[None]
        return jnp.concatenate([jnp.cos(f), jnp.sin(f)], axis=-1)


class SwiGLU(nn.Module):
    """proj → (value, gate) halves → value * silu(gate) → out; both Linears with bias, out zero-initialised."""

    inner: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = DenseGeneral((2, self.inner), ("embed", "glu", "mlp"), use_bias=True, name="proj",
                         kernel_init=nn.initializers.lecun_normal(in_axis=0, out_axis=(1, 2)), **kw)(x)
        h = constrain(h[:, :, 0] * jax.nn.silu(h[:, :, 1]), ("batch", "length", "act_mlp"))
        return _dense(x.shape[-1], ("mlp", "embed"), "out", kw, use_bias=True, init=nn.initializers.zeros_init())(h)


class DiTBlock(nn.Module):
    num_heads: int
    head_dim: int
    kv_heads: int
    ff_inner: int
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_impl: str = "auto"
    scanned: bool = False  # return (x, None), the (carry, output) signature nn.scan expects
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, cos, sin):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        norm = dict(eps=self.norm_eps, use_bias=self.norm_bias, **kw)
        h = LayerNorm(name="self_attn_norm", **norm)(x)
        x = x + SelfAttention(self.num_heads, self.head_dim, self.attention_impl, name="self_attn", **kw)(h, cos, sin)
        h = LayerNorm(name="cross_attn_norm", **norm)(x)
        x = x + CrossAttention(self.num_heads, self.head_dim, self.kv_heads, self.attention_impl, name="cross_attn",
                               **kw)(h, context)
        h = LayerNorm(name="ff_norm", **norm)(x)
        x = constrain(x + SwiGLU(self.ff_inner, name="ff", **kw)(h), EMBED_AXES)
        return (x, None) if self.scanned else x


class DiT(nn.Module):
    io_channels: int = 64
    embed_dim: int = 1536
    depth: int = 24
    num_heads: int = 24
    cond_token_dim: int = 768
    cond_embed_dim: int | None = None   # None: cond_token_dim (project_cond_tokens=false), as SAO
    kv_heads: int | None = None         # None: cond_embed_dim // head_dim (stable-audio-tools' rule; 12 for SAO)
    global_cond_dim: int = 1536
    timestep_features_dim: int = 256
    ff_mult: int = 4
    rotary_dim: int | None = None       # None: max(head_dim // 2, 32) (stable-audio-tools; diffusers: head_dim // 2)
    rotary_base: float = 10000.0
    norm_eps: float = 1e-5
    norm_bias: bool = False             # SAT's LayerNorm bias is a zero buffer; True keeps a learnable one
    attention_impl: str = "auto"
    scan_layers: bool = False
    remat: str = "none"
    features_only: bool = False         # return the last block's hidden states [B, 1 + T, embed] (ARC's discriminator)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def _block_kwargs(self) -> dict:
        cond_embed = self.cond_embed_dim or self.cond_token_dim
        return dict(num_heads=self.num_heads, head_dim=self.head_dim,
                    kv_heads=self.kv_heads or cond_embed // self.head_dim, ff_inner=self.embed_dim * self.ff_mult,
                    norm_eps=self.norm_eps, norm_bias=self.norm_bias, attention_impl=self.attention_impl,
                    dtype=self.dtype, param_dtype=self.param_dtype)

    def _check(self, x, t, cross, global_cond):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"DiT: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"DiT.remat is {self.remat!r}; expected one of {sorted(REMAT_POLICIES)}")
        expected = {"x": (x, 3, self.io_channels), "cross_attn_cond": (cross, 3, self.cond_token_dim),
                    "global_cond": (global_cond, 2, self.global_cond_dim)}
        for name, (arr, ndim, last) in expected.items():
            if arr.ndim != ndim or arr.shape[-1] != last:
                raise ValueError(f"DiT: {name} has shape {tuple(arr.shape)}; expected rank {ndim} with last dim {last}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"DiT: t has shape {tuple(t.shape)}; expected ({x.shape[0]},)")

    @nn.compact
    def __call__(self, x, t, cross_attn_cond, global_cond):
        self._check(x, t, cross_attn_cond, global_cond)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        cond_embed = self.cond_embed_dim or self.cond_token_dim
        cross = MLP2(cond_embed, cond_embed, "cond_embed", "cond_embed", name="to_cond_embed", **kw)(cross_attn_cond)
        g = MLP2(self.embed_dim, self.embed_dim, "cond_global", "embed", name="to_global_embed", **kw)(global_cond)
        tfeat = FourierFeatures(self.timestep_features_dim, self.param_dtype, name="timestep_features")(t)
        g = g + MLP2(self.embed_dim, self.embed_dim, "fourier_out", "embed", use_bias=True, name="to_timestep_embed",
                     **kw)(tfeat)

        zero = nn.initializers.zeros_init()
        x = x.astype(self.dtype)
        x = x + _dense(self.io_channels, ("latent", "latent_out"), "preprocess_conv", kw, init=zero)(x)
        h = _dense(self.embed_dim, ("latent", "embed"), "project_in", kw)(x)
        h = constrain(jnp.concatenate([g[:, None].astype(h.dtype), h], axis=1), EMBED_AXES)
        rot = self.rotary_dim or max(self.head_dim // 2, 32)
        cos, sin = rotary_tables(h.shape[1], rot, self.rotary_base)
        h = self._blocks(h, cross.astype(self.dtype), cos, sin)
        if self.features_only:
            return h.astype(jnp.float32)
        out = _dense(self.io_channels, ("embed", "latent"), "project_out", kw)(h)[:, 1:]
        out = out + _dense(self.io_channels, ("latent", "latent_out"), "postprocess_conv", kw, init=zero)(out)
        return out.astype(jnp.float32)

    def _blocks(self, h, cross, cos, sin):
        policy = REMAT_POLICIES[self.remat]
        if not self.scan_layers:
            block = DiTBlock if self.remat == "none" else nn.remat(DiTBlock, policy=policy)
            for i in range(self.depth):
                h = block(**self._block_kwargs(), name=f"blocks_{i}")(h, cross, cos, sin)
            return h
        block = DiTBlock if self.remat == "none" else nn.remat(DiTBlock, policy=policy, prevent_cse=False)
        # LoRA adapters (models/lora.py) stack per layer as the weights do; adapter dropout draws per layer
        scanned = nn.scan(block, variable_axes={"params": 0, LORA: 0, LORA_SCALE: 0},
                          split_rngs={"params": True, LORA_RNG: True},
                          in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=self.depth,
                          metadata_params={nn.PARTITION_NAME: "layers"})
        h, _ = scanned(**self._block_kwargs(), scanned=True, name="blocks")(h, cross, cos, sin)
        return h


def guided(apply_fn: Callable, x, t, cross_attn_cond, global_cond, cfg_scale, scale_phi=0.0, uncond_cross=None):
    """Classifier-free guidance as the reference's ``DiffusionTransformer.forward``: one batched call on
    [cond; uncond] (uncond = zeros, or ``uncond_cross`` e.g. a negative prompt), global conditioning duplicated,
    ``uncond + (cond - uncond) * cfg_scale``, optional CFG-rescale mixing by ``scale_phi`` (std over channels).

    ``apply_fn(x, t, cross, global)`` is the denoiser; ``cfg_scale`` may be traced (no recompilation per scale).
    """
    null = jnp.zeros_like(cross_attn_cond) if uncond_cross is None else uncond_cross
    out = apply_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([cross_attn_cond, null]),
                   jnp.concatenate([global_cond, global_cond]))
    cond, uncond = jnp.split(out, 2)
    return combine_guidance(cond, uncond, cfg_scale, scale_phi)


def combine_guidance(cond, uncond, cfg_scale, scale_phi=0.0):
    """``uncond + (cond - uncond) * cfg_scale``, then CFG-rescale: mix ``scale_phi`` of the result rescaled to the
    conditional prediction's (unbiased) std over channels. Both scalars may be traced."""
    cfg = uncond + (cond - uncond) * cfg_scale
    if isinstance(scale_phi, (int, float)) and scale_phi == 0.0:
        return cfg
    cfg_std = jnp.std(cfg, axis=-1, ddof=1, keepdims=True)
    ratio = jnp.where(cfg_std > 0, jnp.std(cond, axis=-1, ddof=1, keepdims=True) / jnp.where(cfg_std > 0, cfg_std, 1),
                      1.0)
    return scale_phi * (cfg * ratio) + (1 - scale_phi) * cfg


def dit_from_config(model_config: Any, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> DiT:
    """Builds the DiT from a ``config.model`` section (see configs/dit.py)."""
    return module_from_config(DiT, model_config, "dit", dtype, param_dtype)
