"""The Oobleck VAE of Stable Audio Open / Stable Audio 2.0, channels-last.

Structure and names follow stable-audio-tools' ``OobleckEncoder`` / ``OobleckDecoder`` / ``VAEBottleneck``:

  encoder: conv_in (k7) → blocks_i: [res_0..2 (dilation 1, 3, 9) → snake → conv (k=2s, stride s)] → snake_out
           → conv_out (k3, 2 × latent_dim channels: mean | scale)
  decoder: conv_in (k7) → blocks_i: [snake → conv_t (k=2s, stride s) → res_0..2] → snake_out → conv_out (k7, no bias)

Audio is ``[batch, samples, channels]``; latents are ``[batch, frames, latent_dim]`` with
``frames = samples / downsampling_ratio``. Chunked (long-audio) encode/decode lives in ``models/chunked_vae.py``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from stableaudio_jax.models.layers import Snake1d, SnakeBeta, WNConv1d, WNConvTranspose1d
from stableaudio_jax.parallel.sharding import constrain

Dtype = Any
ACTIVATION_AXES = ("batch", "length", "channels")
RESIDUAL_DILATIONS = (1, 3, 9)


def activation(kind: str, name: str, param_dtype: Dtype):
    """SnakeBeta (the Stable Audio default), DAC's alpha-only Snake (``snake1d``, Stable Audio 1.0's VAE) or ELU
    (``use_snake: false`` in stable-audio-tools).

    Call from inside a compact method: the SnakeBeta module binds to the calling module under ``name``.
    """
    if kind == "snake":
        return SnakeBeta(param_dtype=param_dtype, name=name)
    if kind == "snake1d":
        return Snake1d(param_dtype=param_dtype, name=name)
    if kind == "elu":
        return nn.elu
    raise ValueError(f"activation is {kind!r}; expected 'snake', 'snake1d' or 'elu' (config.model.activation)")


class ResidualUnit(nn.Module):
    """x + conv_1(act(conv_0(act(x)))), conv_0 a dilated k7 conv, conv_1 a 1x1 conv; length preserved."""

    dilation: int
    activation: str = "snake"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = activation(self.activation, "act_0", self.param_dtype)(x)
        y = WNConv1d(channels, 7, dilation=self.dilation, name="conv_0", **kw)(y)
        y = activation(self.activation, "act_1", self.param_dtype)(y)
        y = WNConv1d(channels, 1, name="conv_1", **kw)(y)
        return x + y


def _residual_cls(remat: bool):
    # Activation checkpointing per residual unit, as stable-audio-tools does in training.
    return nn.remat(ResidualUnit) if remat else ResidualUnit


class EncoderBlock(nn.Module):
    features: int
    stride: int
    activation: str = "snake"
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        res = _residual_cls(self.remat)
        for j, dilation in enumerate(RESIDUAL_DILATIONS):
            x = res(dilation, self.activation, name=f"res_{j}", **kw)(x)
        x = activation(self.activation, "act", self.param_dtype)(x)
        return WNConv1d(self.features, 2 * self.stride, stride=self.stride, padding=math.ceil(self.stride / 2),
                        name="conv", **kw)(x)


class DecoderBlock(nn.Module):
    features: int
    stride: int
    activation: str = "snake"
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = activation(self.activation, "act", self.param_dtype)(x)
        x = WNConvTranspose1d(self.features, 2 * self.stride, stride=self.stride,
                              padding=math.ceil(self.stride / 2), name="conv_t", **kw)(x)
        res = _residual_cls(self.remat)
        for j, dilation in enumerate(RESIDUAL_DILATIONS):
            x = res(dilation, self.activation, name=f"res_{j}", **kw)(x)
        return x


def channel_widths(channels: int, c_mults: Sequence[int]) -> list[int]:
    """stable-audio-tools prefixes c_mults with 1: widths of the stem and after each block."""
    return [channels * m for m in (1, *c_mults)]


class OobleckEncoder(nn.Module):
    channels: int
    c_mults: Sequence[int]
    strides: Sequence[int]
    out_features: int
    activation: str = "snake"
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        widths = channel_widths(self.channels, self.c_mults)
        x = WNConv1d(widths[0], 7, name="conv_in", **kw)(audio)
        for i, stride in enumerate(self.strides):
            x = EncoderBlock(widths[i + 1], stride, self.activation, self.remat, name=f"blocks_{i}", **kw)(x)
            x = constrain(x, ACTIVATION_AXES)
        x = activation(self.activation, "act_out", self.param_dtype)(x)
        return WNConv1d(self.out_features, 3, name="conv_out", **kw)(x)


class OobleckDecoder(nn.Module):
    channels: int
    c_mults: Sequence[int]
    strides: Sequence[int]
    out_features: int
    activation: str = "snake"
    final_tanh: bool = False
    out_bias: bool = False  # stable-audio-tools' Oobleck has none; DAC's decoder has one
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, latents):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        widths = channel_widths(self.channels, self.c_mults)
        x = WNConv1d(widths[-1], 7, name="conv_in", **kw)(latents)
        # Blocks run from the widest level down, with the strides reversed.
        for i, stride in enumerate(reversed(self.strides)):
            x = DecoderBlock(widths[-2 - i], stride, self.activation, self.remat, name=f"blocks_{i}", **kw)(x)
            x = constrain(x, ACTIVATION_AXES)
        x = activation(self.activation, "act_out", self.param_dtype)(x)
        x = WNConv1d(self.out_features, 7, use_bias=self.out_bias, name="conv_out", **kw)(x)
        return jnp.tanh(x) if self.final_tanh else x


@flax.struct.dataclass
class DiagonalGaussian:
    """The VAE posterior. ``std = softplus(scale) + 1e-4``, as stable-audio-tools' VAEBottleneck."""

    mean: jax.Array
    std: jax.Array

    def sample(self, rng: jax.Array) -> jax.Array:
        return self.mean + self.std * jax.random.normal(rng, self.mean.shape, self.mean.dtype)

    def kl(self) -> jax.Array:
        """sum over channels, mean over batch and time of (mean^2 + var - log var - 1): the reference's KL."""
        var = jnp.square(self.std)
        return jnp.mean(jnp.sum(jnp.square(self.mean) + var - jnp.log(var) - 1.0, axis=-1))


def posterior_from_moments(moments: jax.Array) -> DiagonalGaussian:
    """Splits the encoder output into mean | scale (first half mean), in float32."""
    mean, scale = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return DiagonalGaussian(mean=mean, std=jax.nn.softplus(scale) + 1e-4)


@flax.struct.dataclass
class VAEOutput:
    reconstruction: jax.Array
    latents: jax.Array
    posterior: DiagonalGaussian


class BottleneckVAE:
    """What every VAE here shares (mixed into a Linen module that defines ``encoder`` and ``decoder`` in ``setup``
    and the fields ``strides``, ``audio_channels``, ``latent_dim``): the VAE bottleneck, the checks and the
    methods the trainers, the pre-encoder and the pipeline call (``apply(..., method=...)``): ``encode_moments``,
    ``encode_posterior``, ``encode``, ``decode``; ``__call__`` runs the full training forward."""

    @property
    def downsampling_ratio(self) -> int:
        return math.prod(self.strides)

    def _check_audio(self, audio: jax.Array) -> None:
        if audio.ndim != 3 or audio.shape[-1] != self.audio_channels:
            raise ValueError(f"{type(self).__name__}.encode: audio has shape {tuple(audio.shape)}; expected "
                             f"[batch, samples, {self.audio_channels}] (channels-last, "
                             f"model.audio_channels={self.audio_channels})")
        if audio.shape[1] % self.downsampling_ratio:
            raise ValueError(f"{type(self).__name__}.encode: audio length {audio.shape[1]} is not a multiple of the "
                             f"downsampling ratio {self.downsampling_ratio}; pad it first "
                             "(stableaudio_jax.models.autoencoder.pad_to_multiple)")

    def encode_moments(self, audio: jax.Array) -> jax.Array:
        """Raw encoder output ``[B, frames, 2 * latent_dim]`` (mean | scale)."""
        self._check_audio(audio)
        return self.encoder(audio)

    def encode_posterior(self, audio: jax.Array) -> DiagonalGaussian:
        return posterior_from_moments(self.encode_moments(audio))

    def encode(self, audio: jax.Array, sample: bool = False, rng: jax.Array | None = None) -> jax.Array:
        """Latents: the posterior mean, or a sample from it (as stable-audio-tools always does) when ``sample``."""
        posterior = self.encode_posterior(audio)
        if not sample:
            return posterior.mean
        if rng is None:
            raise ValueError(f"{type(self).__name__}.encode(sample=True) needs an rng key")
        return posterior.sample(rng)

    def decode(self, latents: jax.Array) -> jax.Array:
        if latents.ndim != 3 or latents.shape[-1] != self.latent_dim:
            raise ValueError(f"{type(self).__name__}.decode: latents have shape {tuple(latents.shape)}; expected "
                             f"[batch, frames, {self.latent_dim}] (model.latent_dim={self.latent_dim})")
        return self.decoder(latents)

    def __call__(self, audio: jax.Array, rng: jax.Array | None = None, sample: bool = True) -> VAEOutput:
        posterior = self.encode_posterior(audio)
        if sample and rng is None:
            raise ValueError(f"{type(self).__name__}.__call__(sample=True) needs an rng key (or pass sample=False)")
        latents = posterior.sample(rng) if sample else posterior.mean
        return VAEOutput(reconstruction=self.decode(latents), latents=latents, posterior=posterior)



class OobleckVAE(BottleneckVAE, nn.Module):
    """Oobleck encoder + VAE bottleneck + Oobleck decoder.

    Methods (use with ``apply(..., method=...)``): ``encode_moments``, ``encode_posterior``, ``encode``, ``decode``;
    ``__call__`` runs the full training forward (sampled latents, reconstruction, posterior).
    """

    sample_rate: int = 44100
    audio_channels: int = 2
    channels: int = 128
    c_mults: Sequence[int] = (1, 2, 4, 8, 16)
    strides: Sequence[int] = (2, 4, 4, 8, 8)
    latent_dim: int = 64
    activation: str = "snake"
    final_tanh: bool = False
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        if len(self.c_mults) != len(self.strides):
            raise ValueError(f"OobleckVAE: c_mults {tuple(self.c_mults)} and strides {tuple(self.strides)} must "
                             "have the same length (one encoder/decoder block per stride)")
        kw = dict(channels=self.channels, c_mults=tuple(self.c_mults), strides=tuple(self.strides),
                  activation=self.activation, remat=self.remat, dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = OobleckEncoder(out_features=2 * self.latent_dim, **kw)
        self.decoder = OobleckDecoder(out_features=self.audio_channels, final_tanh=self.final_tanh, **kw)


def vae_from_config(model_config: Any, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> OobleckVAE:
    """Builds the VAE from a ``config.model`` ConfigDict / mapping (see configs/vae.py)."""
    cfg = dict(model_config)
    kind = cfg.pop("type", "oobleck_vae")
    if kind != "oobleck_vae":
        raise ValueError(f"config.model.type is {kind!r}; expected 'oobleck_vae'")
    known = {"sample_rate", "audio_channels", "channels", "c_mults", "strides", "latent_dim", "activation",
             "final_tanh", "remat"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"config.model has unknown keys {unknown}; expected a subset of {sorted(known)}")
    for key in ("c_mults", "strides"):
        if key in cfg:
            cfg[key] = tuple(int(v) for v in cfg[key])
    return OobleckVAE(**cfg, dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(param_dtype))


def pad_to_multiple(audio: jax.Array, multiple: int) -> jax.Array:
    """Zero-pads ``[B, T, C]`` audio at the end to a multiple of ``multiple`` samples (stable-audio-tools pads)."""
    extra = (-audio.shape[1]) % multiple
    return jnp.pad(audio, ((0, 0), (0, extra), (0, 0))) if extra else audio


def count_params(variables: Any) -> int:
    """Number of scalars in a (possibly abstract or boxed) variable tree."""
    return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nn.unbox(variables)))
