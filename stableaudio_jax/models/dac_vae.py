"""Stable Audio 1.0's VAE: DAC's encoder and decoder around the same VAE bottleneck (stable-audio-tools'
``stable_audio_1_0_vae.json``: ``dac`` encoder / decoder wrappers), channels-last.

  encoder: conv_in (k7, d_model) → blocks_i: [res_0..2 (dilations 1, 3, 9) → snake → conv (k=2s, stride s)],
           widths doubling to d_model · 2^n → snake → conv_out (k3, same width) → proj_out (plain 1×1 conv,
           2 × latent_dim: mean | scale)
  decoder: conv_in (k7, channels) → blocks_i: [snake → conv_t (k=2s, stride s) → res_0..2], widths halving →
           snake → conv_out (k7, with bias) → tanh

DAC's activation is its alpha-only ``Snake1d`` (``layers.Snake1d``); every conv but ``proj_out`` is weight-normed.
These are the Oobleck blocks with DAC's settings (the block structure and paddings are the same), so chunked
encode / decode (``models/chunked_vae.py``) and training work unchanged. SA 1.0: d_model 128, strides
(4, 4, 8, 8), decoder channels 1536, rates (8, 8, 4, 4), latent_dim 64: 1024× downsampling, 133.4 M parameters.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from stableaudio_jax.models.autoencoder import BottleneckVAE, OobleckDecoder, OobleckEncoder
from stableaudio_jax.models.layers import CONV_IN, CONV_OUT, KERNEL, torch_default_bias_init, torch_default_kernel_init

Dtype = Any


def doubling(blocks: int) -> tuple[int, ...]:
    """DAC widths as Oobleck channel multipliers: 2, 4, ..., 2^blocks."""
    return tuple(2 ** (i + 1) for i in range(blocks))


class DACEncoder(nn.Module):
    d_model: int
    strides: Sequence[int]
    out_features: int
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        width = self.d_model * 2 ** len(self.strides)
        x = OobleckEncoder(self.d_model, doubling(len(self.strides)), tuple(self.strides), width, "snake1d",
                           self.remat, name="dac", **kw)(audio)
        # a plain (not weight-normed) 1x1 conv, as stable-audio-tools' DACEncoderWrapper adds it
        kernel = self.param("proj_out_kernel", nn.with_logical_partitioning(
            torch_default_kernel_init(1, 2), (KERNEL, CONV_IN, CONV_OUT)), (1, width, self.out_features),
            self.param_dtype)
        bias = self.param("proj_out_bias", nn.with_logical_partitioning(torch_default_bias_init(width), (CONV_OUT,)),
                          (self.out_features,), self.param_dtype)
        return jnp.einsum("btc,cd->btd", x, kernel[0].astype(self.dtype)) + bias.astype(self.dtype)


class DACVAE(BottleneckVAE, nn.Module):
    """DAC encoder + VAE bottleneck + DAC decoder (methods: see :class:`BottleneckVAE`)."""

    sample_rate: int = 44100
    audio_channels: int = 2
    channels: int = 128  # the encoder's d_model
    strides: Sequence[int] = (4, 4, 8, 8)
    latent_dim: int = 64
    decoder_channels: int = 1536
    decoder_rates: Sequence[int] = (8, 8, 4, 4)
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        blocks = len(self.decoder_rates)
        if self.decoder_channels % 2 ** blocks:
            raise ValueError(f"DACVAE: decoder_channels {self.decoder_channels} must be divisible by 2^{blocks} "
                             f"(one halving per decoder rate {tuple(self.decoder_rates)})")
        if math.prod(self.decoder_rates) != math.prod(self.strides):
            raise ValueError(f"DACVAE: decoder rates {tuple(self.decoder_rates)} upsample by "
                             f"{math.prod(self.decoder_rates)} but the encoder strides {tuple(self.strides)} "
                             f"downsample by {math.prod(self.strides)}")
        kw = dict(remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = DACEncoder(self.channels, tuple(self.strides), 2 * self.latent_dim, **kw)
        # Oobleck's decoder runs its strides reversed from the widest level: give it DAC's rates reversed
        self.decoder = OobleckDecoder(self.decoder_channels // 2 ** blocks, doubling(blocks),
                                      tuple(reversed(self.decoder_rates)), self.audio_channels, "snake1d",
                                      final_tanh=True, out_bias=True, **kw)


def dac_vae_from_config(model_config: Any, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> DACVAE:
    """Builds the DAC VAE from a ``config.model`` mapping (``type: dac_vae``; configs/vae.py:sa1)."""
    cfg = dict(model_config)
    kind = cfg.pop("type", "dac_vae")
    if kind != "dac_vae":
        raise ValueError(f"config.model.type is {kind!r}; expected 'dac_vae'")
    known = {"sample_rate", "audio_channels", "channels", "strides", "latent_dim", "decoder_channels",
             "decoder_rates", "remat"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"config.model has unknown keys {unknown} for a dac_vae; expected a subset of "
                         f"{sorted(known)}")
    for key in ("strides", "decoder_rates"):
        if key in cfg:
            cfg[key] = tuple(int(v) for v in cfg[key])
    return DACVAE(**cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))
