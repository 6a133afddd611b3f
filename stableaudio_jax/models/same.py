"""Stable Audio 3's SAME autoencoders (SAME-S, SAME-L) in Linen, on ``[B, T, C]`` (channels last).

The audio is cut into patches (``patch_size`` samples of every channel: 256 x 2 = 512 features per patch at
44.1 kHz stereo); one transformer "resampling" block turns each group of ``stride`` (16) patch tokens into one
latent, and back:

- encoder: patches → weight-normed 1x1 conv (``mapping``) → per latent, its 16 tokens and one learned "new" token
  → transformer → the new token's output → Linear to ``latent_dim`` → soft-norm bottleneck;
- decoder: latents → Linear → per latent, its token and 16 copies of the new token → transformer → the 16 new
  tokens' outputs → ``mapping`` (kernel 3 on SAME-S) → patches → audio.

Each transformer block is pre-norm with Dynamic Tanh (``gamma * tanh(alpha * x) + beta``) instead of a norm,
differential attention (``softmax(q k) v - softmax(q2 k2) v``, one fused q/k/v/q2/k2 projection, no biases) with
Dynamic-Tanh q/k norms and rotary embeddings on the first half of each head, and a GLU feed-forward (SiLU, or
``sin(pi x)`` in a decoder's last ``sinusoidal_blocks - 1`` blocks). Attention never crosses far: SAME-S attends
inside chunks of ``chunk_size`` latents' tokens (the second half of the blocks on chunks shifted by half a chunk,
the sequence's first and last half-chunk repeated at its ends), SAME-L inside a band of ``sliding_window`` latents'
tokens either side (``models/band_attention.py``: the Pallas splash kernel on TPU, blocked XLA elsewhere). The
reference's stochastic parts (noise on the decoder's new tokens, on the decoded latents) happen only when a
``noise`` rng is given.
"""
from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from stableaudio_jax.models.attention import apply_partial_rotary, rotary_tables
from stableaudio_jax.models.band_attention import band_attention
from stableaudio_jax.models.layers import DenseGeneral, WNConv1d, module_from_config

Dtype = Any


class DynamicTanh(nn.Module):
    """``gamma * tanh(alpha * x) + beta`` (alpha a scalar starting at 4): SAME's norm and q/k norm."""

    init_alpha: float = 4.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        alpha = self.param("alpha", nn.initializers.constant(self.init_alpha), (1,), self.param_dtype)
        gamma = self.param("gamma", nn.initializers.ones_init(), (x.shape[-1],), self.param_dtype)
        beta = self.param("beta", nn.initializers.zeros_init(), (x.shape[-1],), self.param_dtype)
        x = jnp.tanh(alpha.astype(jnp.float32) * x.astype(jnp.float32))
        return (gamma.astype(jnp.float32) * x + beta.astype(jnp.float32)).astype(self.dtype)


def _dense(features: int, name: str, kw: dict, use_bias: bool = False, zero: bool = False):
    init = nn.initializers.zeros_init() if zero else nn.initializers.lecun_normal()
    return DenseGeneral((features,), ("embed", "mlp"), name=name, use_bias=use_bias, kernel_init=init, **kw)


class DifferentialAttention(nn.Module):
    head_dim: int = 64
    window: int | None = None  # in tokens, either side
    attention_impl: str = "auto"  # models/band_attention.py: "xla", "splash" (Pallas, TPU) or "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dim = x.shape[-1]
        heads = dim // self.head_dim
        qkv = _dense(5 * dim, "to_qkv", kw)(x).reshape(*x.shape[:2], 5, heads, self.head_dim)
        q, k, v, q2, k2 = (qkv[:, :, i] for i in range(5))
        q_norm = DynamicTanh(name="q_norm", **kw)  # one module for q and q2 (and k, k2), as the reference
        k_norm = DynamicTanh(name="k_norm", **kw)
        cos, sin = rotary_tables(x.shape[1], self.head_dim // 2)
        q, q2 = (apply_partial_rotary(q_norm(t), cos, sin) for t in (q, q2))
        k, k2 = (apply_partial_rotary(k_norm(t), cos, sin) for t in (k, k2))
        attend = functools.partial(band_attention, window=self.window, impl=self.attention_impl)
        out = attend(q, k, v) - attend(q2, k2, v)
        return _dense(dim, "to_out", kw, zero=True)(out.reshape(*x.shape[:2], dim))


class GLUFeedForward(nn.Module):
    mult: int = 3
    sinusoidal: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner = x.shape[-1] * self.mult
        value, gate = jnp.split(_dense(2 * inner, "proj", kw, use_bias=True)(x), 2, axis=-1)
        gate = jnp.sin(jnp.pi * gate) if self.sinusoidal else jax.nn.silu(gate)
        return _dense(x.shape[-1], "out", kw, use_bias=True, zero=True)(value * gate)


class SAMETransformerBlock(nn.Module):
    head_dim: int = 64
    ff_mult: int = 3
    sinusoidal: bool = False
    window: int | None = None
    attention_impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x + DifferentialAttention(self.head_dim, self.window, self.attention_impl, name="self_attn", **kw)(
            DynamicTanh(name="pre_norm", **kw)(x))
        return x + GLUFeedForward(self.ff_mult, self.sinusoidal, name="ff", **kw)(DynamicTanh(name="ff_norm", **kw)(x))


def _pad_to_multiple(x: jax.Array, multiple: int) -> jax.Array:
    """Zero-pads axis 1 to a multiple of ``multiple`` (the reference pads; nothing is masked)."""
    return jnp.pad(x, ((0, 0), (0, -x.shape[1] % multiple), (0, 0)))


class ResamplingBlock(nn.Module):
    """One latent per ``stride`` input tokens (``kind='encoder'``) or ``stride`` output tokens per latent
    (``'decoder'``), through ``depth`` transformer blocks over groups of ``stride + 1`` tokens."""

    features: int
    stride: int = 16
    kind: str = "encoder"
    depth: int = 6
    head_dim: int = 64
    ff_mult: int = 3
    chunk_size: int = 32  # in input tokens (encoder: patches); used when there is no sliding window
    midpoint_shift: bool = False
    sliding_window: int | None = None  # in latents, either side
    attention_impl: str = "auto"
    sinusoidal_blocks: int = 0
    mask_noise: float = 0.0
    conv_mapping: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, noise: jax.Array | None = None):
        if self.kind not in ("encoder", "decoder"):
            raise ValueError(f"ResamplingBlock.kind is {self.kind!r}; expected 'encoder' or 'decoder'")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        encoder, group = self.kind == "encoder", self.stride + 1
        width = self.features if encoder else x.shape[-1]
        mapping = WNConv1d(self.features, 3 if self.conv_mapping else 1, name="mapping", **kw)
        if encoder:
            x = mapping(_pad_to_multiple(x, self.chunk_size if self.sliding_window is None else self.stride))
        else:
            x = _pad_to_multiple(x, self.chunk_size // self.stride if self.sliding_window is None else 1)
        batch, taken = x.shape[0], self.stride if encoder else 1
        x = x.reshape(batch, -1, taken, width)
        # one learned token, repeated where outputs are wanted (the reference's variable_stride layout)
        new = self.param("new_tokens", nn.initializers.normal(1e-5), (1, 1, width), self.param_dtype)
        new = jnp.broadcast_to(new.astype(self.dtype)[:, None], (batch, x.shape[1], group - taken, width))
        if self.mask_noise > 0 and noise is not None:
            new = new + self.mask_noise * jax.random.normal(noise, new.shape, new.dtype)
        x = jnp.concatenate([x, new], axis=2).reshape(batch, -1, width)
        x = self._transformer(x, kw)
        x = x.reshape(batch, -1, group, width)[:, :, taken:].reshape(batch, -1, width)  # the new tokens' outputs
        return x if encoder else mapping(x)

    def _blocks(self, kw: dict, window: int | None):
        return [SAMETransformerBlock(self.head_dim, self.ff_mult, self.depth - i < self.sinusoidal_blocks, window,
                                     self.attention_impl, name=f"transformers_{i}", **kw) for i in range(self.depth)]

    def _transformer(self, x, kw: dict):
        group = self.stride + 1
        if self.sliding_window is not None:
            for block in self._blocks(kw, self.sliding_window * group):
                x = block(x)
            return x
        chunk = self.chunk_size + self.chunk_size // self.stride  # tokens of chunk_size / stride latents
        blocks = self._blocks(kw, None)
        split = self.depth // 2 if self.midpoint_shift else self.depth
        x = _in_chunks(blocks[:split], x, chunk)
        if split == self.depth:
            return x
        shift = chunk // 2  # half a chunk: whole groups, the first and last repeated at the ends
        x = jnp.concatenate([x[:, :shift], x, x[:, -shift:]], axis=1)
        return _in_chunks(blocks[split:], x, chunk)[:, shift:-shift]


def _in_chunks(blocks: Sequence[nn.Module], x, chunk: int):
    batch, length, width = x.shape
    x = x.reshape(batch * (length // chunk), chunk, width)
    for block in blocks:
        x = block(x)
    return x.reshape(batch, length, width)


class SoftNormBottleneck(nn.Module):
    """``encode``: ``(x * scaling_factor + bias) / running_std``; ``decode``: ``x * running_std``, plus (with a
    ``noise`` rng) ``N(0, (1e-3 running_std)^2)`` as the reference adds at inference."""

    dim: int = 256
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.scaling_factor = self.param("scaling_factor", nn.initializers.ones_init(), (self.dim,),
                                         self.param_dtype)
        self.bias = self.param("bias", nn.initializers.zeros_init(), (self.dim,), self.param_dtype)
        self.running_std = self.param("running_std", nn.initializers.ones_init(), (1,), self.param_dtype)

    def encode(self, x):
        return (x * self.scaling_factor + self.bias) / self.running_std

    def decode(self, z, noise: jax.Array | None = None):
        z = z * self.running_std
        if noise is not None:
            z = z + 1e-3 * self.running_std * jax.random.normal(noise, z.shape, z.dtype)
        return z

    def __call__(self, x):
        return self.decode(self.encode(x))


class SAMEAutoencoder(nn.Module):
    """Patches → encoder block → Linear → soft-norm bottleneck, and back. ``encode(audio [B, N, C]) -> latents
    [B, N / (patch_size * stride), latent_dim]`` (audio zero-padded to whole patches and whole chunks);
    ``decode(latents, noise=None) -> audio [B, T * patch_size * stride, C]``. Defaults: SAME-S."""

    audio_channels: int = 2
    sample_rate: int = 44100
    patch_size: int = 256
    width: int = 768
    latent_dim: int = 256
    stride: int = 16
    encoder_depth: int = 6
    decoder_depth: int = 6
    head_dim: int = 64
    ff_mult: int = 3
    chunk_size: int = 32
    midpoint_shift: bool = True
    sliding_window: int | None = None
    attention_impl: str = "auto"  # "xla", "splash" (the Pallas kernel; TPU) or "auto" (models/band_attention.py)
    decoder_sinusoidal_blocks: int = 0
    decoder_mask_noise: float = 0.01
    encoder_conv_mapping: bool = False
    decoder_conv_mapping: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def downsampling_ratio(self) -> int:
        return self.patch_size * self.stride

    def setup(self):
        kw = dict(stride=self.stride, head_dim=self.head_dim, ff_mult=self.ff_mult, chunk_size=self.chunk_size,
                  midpoint_shift=self.midpoint_shift, sliding_window=self.sliding_window,
                  attention_impl=self.attention_impl, dtype=self.dtype,
                  param_dtype=self.param_dtype)
        dense = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.encoder = ResamplingBlock(self.width, kind="encoder", depth=self.encoder_depth,
                                       conv_mapping=self.encoder_conv_mapping, **kw)
        self.encoder_out = DenseGeneral((self.latent_dim,), ("embed", "mlp"), use_bias=True, **dense)
        self.bottleneck = SoftNormBottleneck(self.latent_dim, self.param_dtype)
        self.decoder_in = DenseGeneral((self.width,), ("embed", "mlp"), use_bias=True, **dense)
        self.decoder = ResamplingBlock(self.audio_channels * self.patch_size, kind="decoder",
                                       depth=self.decoder_depth, sinusoidal_blocks=self.decoder_sinusoidal_blocks,
                                       mask_noise=self.decoder_mask_noise, conv_mapping=self.decoder_conv_mapping, **kw)

    def encode(self, audio: jax.Array, sample_posterior: bool = False, rng: jax.Array | None = None) -> jax.Array:
        """``sample_posterior`` and ``rng`` are accepted for the VAE interface (``encode`` calls every VAE so):
        the soft-norm bottleneck is deterministic, there is no posterior to sample."""
        if audio.ndim != 3 or audio.shape[-1] != self.audio_channels:
            raise ValueError(f"SAMEAutoencoder.encode: audio has shape {tuple(audio.shape)}; expected [batch, samples, "
                             f"{self.audio_channels}] (channels-last)")
        patches = patchify(audio, self.patch_size)
        return self.bottleneck.encode(self.encoder_out(self.encoder(patches)))

    def decode(self, latents: jax.Array, noise: jax.Array | None = None) -> jax.Array:
        """``noise``: an rng for the reference's inference-time noise (on the latents and the new tokens)."""
        if latents.ndim != 3 or latents.shape[-1] != self.latent_dim:
            raise ValueError(f"SAMEAutoencoder.decode: latents have shape {tuple(latents.shape)}; expected [batch, "
                             f"frames, {self.latent_dim}]")
        keys = jax.random.split(noise) if noise is not None else (None, None)
        x = self.decoder_in(self.bottleneck.decode(latents, keys[0]))
        return unpatchify(self.decoder(x, keys[1]), self.audio_channels)

    def __call__(self, audio: jax.Array, rng: jax.Array | None = None, sample: bool = False) -> jax.Array:
        """Encode and decode (``sample`` is accepted for the store's VAE interface: SAME's bottleneck has no
        posterior to sample; ``rng`` draws the decoder's inference noise)."""
        return self.decode(self.encode(audio), rng)


def same_from_config(model_config: Any, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32):
    """Builds a SAME autoencoder from a ``config.model`` section (configs/same.py)."""
    return module_from_config(SAMEAutoencoder, model_config, "same", dtype, param_dtype)


def patchify(audio: jax.Array, patch_size: int) -> jax.Array:
    """[B, N, C] → [B, ceil(N / patch_size), C * patch_size] (zero-padded), feature index ``c * patch_size + h``
    as the reference's ``b c (l h) -> b (c h) l``."""
    audio = _pad_to_multiple(audio, patch_size)
    batch, length, channels = audio.shape
    patches = audio.reshape(batch, length // patch_size, patch_size, channels)
    return jnp.swapaxes(patches, 2, 3).reshape(batch, length // patch_size, channels * patch_size)


def unpatchify(patches: jax.Array, channels: int) -> jax.Array:
    batch, length, features = patches.shape
    audio = jnp.swapaxes(patches.reshape(batch, length, channels, features // channels), 2, 3)
    return audio.reshape(batch, length * (features // channels), channels)


def receptive_field(model: SAMEAutoencoder, part: str) -> int:
    """Latents on each side that can change one latent (``part='encoder'``) or one latent's audio (``'decoder'``),
    an upper bound: a band of ``sliding_window`` latents per block, or chunks of ``chunk_size / stride`` latents
    (two chunks' reach with the midpoint shift), plus one for the mapping convolution."""
    depth = model.encoder_depth if part == "encoder" else model.decoder_depth
    if model.sliding_window is not None:
        return depth * model.sliding_window + 2
    return 2 * (model.chunk_size // model.stride) + 2


def _alignment(model: SAMEAutoencoder) -> int:
    """Windows start on multiples of this many latents, so that their attention chunks fall where the whole
    pass's do."""
    return 1 if model.sliding_window is not None else model.chunk_size // model.stride


def chunked_encode(model: SAMEAutoencoder, params: Any, audio: jax.Array, *, chunk_size: int = 128,
                   overlap: int = 32) -> jax.Array:
    """``model.encode`` in windows of ``chunk_size + 2 overlap`` latents (the reference's chunked defaults), one
    window's activations alive at a time; equal to the whole-signal encode. Traceable (jit it)."""
    from stableaudio_jax.models.chunked_vae import check_overlap, scan_windows
    check_overlap(overlap, receptive_field(model, "encoder"), "SAME encode")
    ratio, align = model.downsampling_ratio, _alignment(model)
    audio = _pad_to_multiple(audio, ratio * align)  # what the whole pass pads, done first
    frames = audio.shape[1] // ratio
    encode = lambda a: model.apply(params, a, method="encode")  # noqa: E731
    if frames <= chunk_size + 2 * overlap:
        return encode(audio)
    _check_aligned(chunk_size, overlap, align)
    return scan_windows(encode, audio, frames, chunk_size, overlap, ratio, 1,
                        (audio.shape[0], frames, model.latent_dim), jnp.dtype(model.dtype))


def chunked_decode(model: SAMEAutoencoder, params: Any, latents: jax.Array, *, chunk_size: int = 128,
                   overlap: int = 32) -> jax.Array:
    """``model.decode`` (without noise) in windows of latents; equal to the whole-signal decode."""
    from stableaudio_jax.models.chunked_vae import check_overlap, scan_windows
    check_overlap(overlap, receptive_field(model, "decoder"), "SAME decode")
    align = _alignment(model)
    latents = _pad_to_multiple(latents, align)
    frames, ratio = latents.shape[1], model.downsampling_ratio
    decode = lambda z: model.apply(params, z, method="decode")  # noqa: E731
    if frames <= chunk_size + 2 * overlap:
        return decode(latents)
    _check_aligned(chunk_size, overlap, align)
    return scan_windows(decode, latents, frames, chunk_size, overlap, 1, ratio,
                        (latents.shape[0], frames * ratio, model.audio_channels), jnp.dtype(model.dtype))


def _check_aligned(chunk_size: int, overlap: int, align: int) -> None:
    if chunk_size % align or overlap % align:
        raise ValueError(f"chunked SAME: chunk_size {chunk_size} and overlap {overlap} must be multiples of "
                         f"{align} latents (the attention chunk), or windows would chunk differently from the "
                         "whole pass")
