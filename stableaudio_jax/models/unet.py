"""The Stable Audio 1.0 1-D U-Net (stable-audio-tools ``UNetCFG1d``, from audio-diffusion-pytorch 0.0.94).

Channels-last throughout:

  mapping = GELU-MLP(GELU(Linear([t, sin 2 pi t w, cos 2 pi t w])))           time → FiLM source (width 4c)
  x       = to_in ResNet(in → C0, 1 group)                                      kept as the outermost skip
  down i  : conv(k = 2f+1, stride f) → ResNets (each output a skip) → Transformer1d (output a skip)
  middle  : ResNet → Transformer1d → ResNet
  up i    : ResNets on [x | skip * 2^-1/2] → Transformer1d → ConvTranspose(k 2f, stride f) (a k3 conv for f = 1)
  out     = to_out ResNet(C0 + ... → out, 1 group) applied to x + outermost skip

ResNet: GN → SiLU → conv3 ; GN → x (scale + 1) + shift (FiLM from the mapping) → SiLU → conv3 ; + (1x1) skip.
Transformer1d: GN(32, eps 1e-6) → 1x1 → [self-attn, cross-attn, GELU MLP] → 1x1, no outer residual. Attention
normalises queries and keys/values with separate LayerNorms and masks padded context tokens by zeroing their keys and
values (they still enter the softmax), exactly as the reference. Convolutions pad like PyTorch's "same" with the odd
pixel on the left, so the stride-2 and stride-4 downsamples pad (2, 1) and (3, 2).

Classifier-free guidance uses a learned, position-indexed null sequence (``fixed_embedding``), in one batched call.
Initialisers reproduce PyTorch's defaults times ``init_scale`` (0.5: the reference halves every initial parameter).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from stableaudio_jax.models.attention import LayerNorm, dot_product_attention
from stableaudio_jax.models.conditioning import LearnedFourierFeatures, LearnedNullEmbedding
from stableaudio_jax.models.dit import combine_guidance
from stableaudio_jax.models import lora
from stableaudio_jax.models.layers import DenseGeneral, module_from_config
from stableaudio_jax.parallel.sharding import constrain

Dtype = Any
ACT_AXES = ("batch", "length", "channels")
SKIP_SCALE = 2 ** -0.5


def _torch_init(scale: float, in_axis=-2, out_axis=-1):
    """PyTorch's kaiming_uniform(a=sqrt 5), U(+-1/sqrt(fan_in)), times ``scale``."""
    return nn.initializers.variance_scaling(scale * scale / 3.0, "fan_in", "uniform", in_axis=in_axis,
                                            out_axis=out_axis)


def _uniform(bound: float):
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class Conv1d(nn.Module):
    """Conv1d with PyTorch-style "same" padding for any stride: total k - s, the extra sample on the left."""

    features: int
    kernel_size: int
    stride: int = 1
    init_scale: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k, s, cin = self.kernel_size, self.stride, x.shape[-1]
        w = self.param("kernel", nn.with_logical_partitioning(_torch_init(self.init_scale),
                                                              ("conv_kernel", "conv_in", "conv_out")),
                       (k, cin, self.features), self.param_dtype)
        b = self.param("bias", nn.with_logical_partitioning(_uniform(self.init_scale / math.sqrt(cin * k)),
                                                            ("conv_out",)), (self.features,), self.param_dtype)
        w = lora.adapted_kernel(self, w)
        total = k - s
        extra = -(-x.shape[1] // s) * s - x.shape[1]
        right = total // 2
        y = lax.conv_general_dilated(x.astype(self.dtype), w.astype(self.dtype), (s,),
                                     [(total - right, right + extra)], dimension_numbers=("NWC", "WIO", "NWC"))
        return y + b.astype(self.dtype)


class ConvTranspose1d(nn.Module):
    """PyTorch ConvTranspose1d(k = 2f, stride f) followed by the reference's crop (f - f//2 left, f//2 right)."""

    features: int
    factor: int
    init_scale: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        f, k = self.factor, 2 * self.factor
        w = self.param("kernel", nn.with_logical_partitioning(_torch_init(self.init_scale, in_axis=-1, out_axis=-2),
                                                              ("conv_kernel", "conv_in", "conv_out")),
                       (k, x.shape[-1], self.features), self.param_dtype)
        b = self.param("bias", nn.with_logical_partitioning(_uniform(self.init_scale / math.sqrt(self.features * k)),
                                                            ("conv_out",)), (self.features,), self.param_dtype)
        w = lora.adapted_kernel(self, w)
        left, right = f - f // 2, f // 2
        y = lax.conv_general_dilated(x.astype(self.dtype), w[::-1].astype(self.dtype), (1,),
                                     [(k - 1 - left, k - 1 - right)], lhs_dilation=(f,),
                                     dimension_numbers=("NWC", "WIO", "NWC"))
        return y + b.astype(self.dtype)


def _group_norm(groups, name, init_scale, eps=1e-5, dtype=jnp.float32, param_dtype=jnp.float32):
    return nn.GroupNorm(num_groups=groups, epsilon=eps, name=name, dtype=dtype, param_dtype=param_dtype,
                        scale_init=nn.with_logical_partitioning(nn.initializers.constant(init_scale), ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)))


def _dense(features, axes, name, init_scale, kw, use_bias=True, in_dims=1, fan_in=None):
    """A Linear with PyTorch's default init (weights and biases U(+-1/sqrt(fan_in))) times ``init_scale``."""
    kernel_init = _torch_init(init_scale, in_axis=tuple(range(in_dims)), out_axis=tuple(range(in_dims, len(axes))))
    bias_init = _uniform(init_scale / math.sqrt(fan_in)) if fan_in else nn.initializers.zeros_init()
    return DenseGeneral(features if isinstance(features, tuple) else (features,), axes, in_dims=in_dims,
                        use_bias=use_bias, name=name, kernel_init=kernel_init, bias_init=bias_init, **kw)


class ResnetBlock(nn.Module):
    features: int
    groups: int
    init_scale: float = 1.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mapping):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        s = self.init_scale
        h = nn.silu(_group_norm(self.groups, "norm1", s, **kw)(x))
        h = Conv1d(self.features, 3, init_scale=s, name="conv1", **kw)(h)
        film = _dense(2 * self.features, ("embed", "conv_out"), "film", s, kw, fan_in=mapping.shape[-1])(
            nn.silu(mapping))
        scale, shift = jnp.split(film[:, None, :], 2, axis=-1)
        h = _group_norm(self.groups, "norm2", s, **kw)(h) * (scale + 1) + shift
        h = Conv1d(self.features, 3, init_scale=s, name="conv2", **kw)(nn.silu(h))
        skip = x if x.shape[-1] == self.features else Conv1d(self.features, 1, init_scale=s, name="skip", **kw)(x)
        return constrain(h + skip, ACT_AXES)


class UNetAttention(nn.Module):
    """LayerNorm'd queries and context, fused k/v, masked context tokens get zero keys/values."""

    num_heads: int
    init_scale: float = 1.0
    impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context=None, context_mask=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        s, c = self.init_scale, x.shape[-1]
        heads, head_dim = self.num_heads, c // self.num_heads
        ctx = x if context is None else context
        norm = lambda name: LayerNorm(eps=1e-5, use_bias=True, name=name, **kw)  # noqa: E731
        xn, cn = norm("norm")(x), norm("norm_context")(ctx)
        q = _dense((heads, head_dim), ("embed", "heads", "kv"), "q", s, kw, use_bias=False)(xn)
        kv = _dense((2, heads, head_dim), ("cond_embed", "qkv", "heads", "kv"), "kv", s, kw, use_bias=False)(cn)
        k, v = kv[:, :, 0], kv[:, :, 1]
        if context_mask is not None:
            keep = context_mask.astype(k.dtype)[:, :, None, None]
            k, v = k * keep, v * keep
        out = dot_product_attention(q, k, v, impl=self.impl)
        return _dense(c, ("heads", "kv", "embed"), "out", s, kw, in_dims=2, fan_in=heads * head_dim)(out)


class TransformerBlock(nn.Module):
    num_heads: int
    mult: int = 4
    init_scale: float = 1.0
    impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, context_mask):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        s, c = self.init_scale, x.shape[-1]
        x = x + UNetAttention(self.num_heads, s, self.impl, name="self_attn", **kw)(x)
        x = x + UNetAttention(self.num_heads, s, self.impl, name="cross_attn", **kw)(x, context, context_mask)
        h = nn.gelu(_dense(c * self.mult, ("embed", "mlp"), "ff_in", s, kw, fan_in=c)(x), approximate=False)
        h = constrain(h, ("batch", "length", "act_mlp"))
        return x + _dense(c, ("mlp", "embed"), "ff_out", s, kw, fan_in=c * self.mult)(h)


class Transformer1d(nn.Module):
    num_layers: int
    num_heads: int
    mult: int = 4
    init_scale: float = 1.0
    impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, context, context_mask):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        s, c = self.init_scale, x.shape[-1]
        x = _group_norm(32, "norm", s, eps=1e-6, **kw)(x)
        x = Conv1d(c, 1, init_scale=s, name="proj_in", **kw)(x)
        for j in range(self.num_layers):
            x = TransformerBlock(self.num_heads, self.mult, s, self.impl, name=f"blocks_{j}", **kw)(
                x, context, context_mask)
        return constrain(Conv1d(c, 1, init_scale=s, name="proj_out", **kw)(x), ACT_AXES)


class UNet1d(nn.Module):
    in_channels: int = 64
    channels: int = 256
    multipliers: Sequence[int] = (4, 4, 4, 5, 5)
    factors: Sequence[int] = (1, 2, 2, 4)
    num_blocks: Sequence[int] = (2, 2, 2, 2)
    attentions: Sequence[int] = (1, 3, 3, 3, 3)   # per down/up level, the last entry for the bottleneck
    attention_heads: int = 16
    attention_multiplier: int = 4
    resnet_groups: int = 16
    kernel_multiplier_downsample: int = 2
    context_features: int = 768                  # cross-attention token width (CLAP + int timing, SA 1.0)
    context_max_length: int = 79                 # learned null sequence length (77 CLAP + 2 timing tokens)
    init_scale: float = 0.5                      # the reference halves every initial parameter
    attention_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def widths(self) -> list[int]:
        return [self.channels * m for m in self.multipliers]

    def _check(self, x, t, embedding):
        levels = len(self.factors)
        if not (len(self.multipliers) == levels + 1 == len(self.attentions) and len(self.num_blocks) == levels):
            raise ValueError(f"UNet1d: multipliers {tuple(self.multipliers)} and attentions {tuple(self.attentions)} "
                             f"need one entry more than factors {tuple(self.factors)} and num_blocks "
                             f"{tuple(self.num_blocks)}")
        stride = math.prod(self.factors)
        if x.ndim != 3 or x.shape[-1] != self.in_channels or x.shape[1] % stride:
            raise ValueError(f"UNet1d: x has shape {tuple(x.shape)}; expected [batch, length, {self.in_channels}] "
                             f"with length a multiple of {stride} (the product of the factors)")
        if t.shape != (x.shape[0],):
            raise ValueError(f"UNet1d: t has shape {tuple(t.shape)}; expected ({x.shape[0]},)")
        if embedding.ndim != 3 or embedding.shape[-1] != self.context_features \
                or embedding.shape[1] > self.context_max_length:
            raise ValueError(f"UNet1d: embedding has shape {tuple(embedding.shape)}; expected [batch, <= "
                             f"{self.context_max_length}, {self.context_features}]")

    def _mapping(self, t, kw):
        s, m = self.init_scale, self.channels * 4
        fourier = LearnedFourierFeatures(self.channels, self.param_dtype, name="time_fourier")(t)
        h = nn.gelu(_dense(m, ("fourier_out", "embed"), "to_time", s, kw, fan_in=self.channels + 1)(fourier),
                    approximate=False)
        h = nn.gelu(_dense(m, ("embed", "mlp"), "mapping_1", s, kw, fan_in=m)(h), approximate=False)
        return nn.gelu(_dense(m, ("mlp", "embed"), "mapping_2", s, kw, fan_in=m)(h), approximate=False)

    def _core(self, x, t, embedding, mask):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        s, widths, groups = self.init_scale, self.widths, self.resnet_groups
        tr = dict(mult=self.attention_multiplier, init_scale=s, impl=self.attention_impl, **kw)
        mapping = self._mapping(t, kw)
        x = ResnetBlock(widths[0], 1, s, name="to_in", **kw)(x.astype(self.dtype), mapping)
        skips = [[x]]
        for i, f in enumerate(self.factors):
            x = Conv1d(widths[i + 1], f * self.kernel_multiplier_downsample + 1, stride=f, init_scale=s,
                       name=f"down_{i}_conv", **kw)(x)
            level = []
            for j in range(self.num_blocks[i]):
                x = ResnetBlock(widths[i + 1], groups, s, name=f"down_{i}_res_{j}", **kw)(x, mapping)
                level.append(x)
            if self.attentions[i]:
                x = Transformer1d(self.attentions[i], self.attention_heads, name=f"down_{i}_transformer", **tr)(
                    x, embedding, mask)
                level.append(x)
            skips.append(level)
        x = ResnetBlock(widths[-1], groups, s, name="mid_res_0", **kw)(x, mapping)
        x = Transformer1d(self.attentions[-1], self.attention_heads, name="mid_transformer", **tr)(x, embedding, mask)
        x = ResnetBlock(widths[-1], groups, s, name="mid_res_1", **kw)(x, mapping)
        for i in reversed(range(len(self.factors))):
            level = skips.pop()
            for j in range(len(level)):
                x = jnp.concatenate([x, level.pop() * SKIP_SCALE], axis=-1)
                x = ResnetBlock(widths[i + 1], groups, s, name=f"up_{i}_res_{j}", **kw)(x, mapping)
            if self.attentions[i]:
                x = Transformer1d(self.attentions[i], self.attention_heads, name=f"up_{i}_transformer", **tr)(
                    x, embedding, mask)
            f = self.factors[i]
            up = (ConvTranspose1d(widths[i], f, init_scale=s, name=f"up_{i}_conv", **kw) if f > 1 else
                  Conv1d(widths[i], 3, init_scale=s, name=f"up_{i}_conv", **kw))
            x = up(x)
        x = x + skips.pop()[0]
        return ResnetBlock(self.in_channels, 1, s, name="to_out", **kw)(x, mapping).astype(jnp.float32)

    @nn.compact
    def __call__(self, x, t, embedding, embedding_mask=None, cfg_scale=None, scale_phi=0.0,
                 negative_embedding=None, negative_mask=None, dropout_rng=None, dropout_prob=0.0):
        """v-prediction ``[B, L, in_channels]`` for x ``[B, L, in]``, t ``[B]`` in [0, 1], cross-attention tokens
        ``embedding [B, M, context_features]`` with ``embedding_mask [B, M]`` (True = real token).

        Training: ``dropout_rng`` + ``dropout_prob`` swap whole sequences for the learned null (CFG dropout).
        Sampling: ``cfg_scale`` runs [cond; null] in one batch (null = learned sequence, or a negative prompt whose
        padded positions fall back to it), ``uncond + (cond - uncond) * cfg_scale``, optionally CFG-rescaled by
        ``scale_phi`` (the reference's generate() uses 0.4). The positive mask serves both halves, as upstream.
        """
        self._check(x, t, embedding)
        batch, length = embedding.shape[:2]
        null = LearnedNullEmbedding(self.context_max_length, self.context_features, self.dtype, self.param_dtype,
                                    name="fixed_embedding")(batch, length).astype(embedding.dtype)
        if dropout_rng is not None:
            drop = jax.random.bernoulli(dropout_rng, dropout_prob, (batch, 1, 1))
            embedding = jnp.where(drop, null, embedding)
        if cfg_scale is None:
            return self._core(x, t, embedding, embedding_mask)
        if negative_embedding is not None:
            keep = (jnp.ones(negative_embedding.shape[:2], bool) if negative_mask is None
                    else negative_mask.astype(bool))
            null = jnp.where(keep[..., None], negative_embedding.astype(embedding.dtype), null)
        mask = None if embedding_mask is None else jnp.concatenate([embedding_mask, embedding_mask])
        out = self._core(jnp.concatenate([x, x]), jnp.concatenate([t, t]), jnp.concatenate([embedding, null]), mask)
        cond, uncond = jnp.split(out, 2)
        return combine_guidance(cond, uncond, cfg_scale, scale_phi)


def unet_from_config(model_config: Any, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> UNet1d:
    """Builds the U-Net from a ``config.model`` section (see configs/unet.py)."""
    tuples = {k: tuple(int(v) for v in dict(model_config)[k])
              for k in ("multipliers", "factors", "num_blocks", "attentions") if k in dict(model_config)}
    return module_from_config(UNet1d, model_config, "unet1d", dtype, param_dtype, **tuples)
