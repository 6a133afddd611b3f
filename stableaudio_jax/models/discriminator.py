"""EnCodec-style multi-scale STFT discriminator, as stable-audio-tools' copy (``models/encodec.py``) defines it.

Per scale: complex STFT of each channel (periodic Hann, window-normalised, no centring), channels stacked as
[Re ch0, Re ch1, ..., Im ch0, Im ch1, ...] on a (time, frequency) plane, then weight-normalised 2-D convolutions:
(3, 9) → (3, 9) dilated 1, 2, 4 in time → (3, 3), each followed by LeakyReLU(0.2) and kept as a feature map, and a
(3, 3) output conv to one channel of logits. Strides are (1, 1) (stable-audio-tools since 0.0.19).

Losses (hinge, averaged over scales, as ``EncodecDiscriminator.loss``): discriminator mean(relu(1 - D(real))) +
mean(relu(1 + D(fake))); generator -mean(D(fake)); feature matching mean over the 5 maps of mean |f_real - f_fake|.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.audio.spectral import frame, hann_window, rfft_frames
from stableaudio_jax.models.layers import WNConv2d

Dtype = Any
DILATIONS = (1, 2, 4)


def normalized_spectrogram(audio: jax.Array, n_fft: int, hop: int, win: int) -> jax.Array:
    """``[B, T, C]`` → complex ``[B, frames, n_fft // 2 + 1, C]``: torchaudio ``Spectrogram(normalized=True,
    center=False, power=None)``, i.e. divided by sqrt(sum(window^2))."""
    window = hann_window(win, n_fft)
    x = jnp.moveaxis(audio.astype(jnp.float32), -1, 1)  # [B, C, T]
    spec = rfft_frames(frame(x, n_fft, hop) * window, n_fft) / np.sqrt(np.sum(window ** 2))
    return jnp.moveaxis(spec, 1, -1)


class STFTDiscriminator(nn.Module):
    n_fft: int
    hop: int
    win: int
    filters: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        spec = normalized_spectrogram(audio, self.n_fft, self.hop, self.win)
        x = jnp.concatenate([jnp.real(spec), jnp.imag(spec)], axis=-1).astype(self.dtype)
        features = []
        x = WNConv2d(self.filters, (3, 9), padding=(1, 4), name="convs_0", **kw)(x)
        features.append(x := nn.leaky_relu(x, 0.2))
        for i, d in enumerate(DILATIONS):
            x = WNConv2d(self.filters, (3, 9), dilation=(d, 1), padding=(d, 4), name=f"convs_{i + 1}", **kw)(x)
            features.append(x := nn.leaky_relu(x, 0.2))
        x = WNConv2d(self.filters, (3, 3), padding=(1, 1), name="convs_4", **kw)(x)
        features.append(x := nn.leaky_relu(x, 0.2))
        logits = WNConv2d(1, (3, 3), padding=(1, 1), name="conv_post", **kw)(x)
        return logits.astype(jnp.float32), features


class MultiScaleSTFTDiscriminator(nn.Module):
    n_ffts: Sequence[int] = (2048, 1024, 512, 256, 128)
    hops: Sequence[int] = (512, 256, 128, 64, 32)
    wins: Sequence[int] | None = None
    filters: int = 64
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, audio: jax.Array) -> tuple[list[jax.Array], list[list[jax.Array]]]:
        wins = self.n_ffts if self.wins is None else self.wins
        logits, features = [], []
        for i, (n, h, w) in enumerate(zip(self.n_ffts, self.hops, wins)):
            lg, ft = STFTDiscriminator(n, h, w, self.filters, self.dtype, self.param_dtype,
                                       name=f"discriminators_{i}")(audio)
            logits.append(lg)
            features.append(ft)
        return logits, features


def _mean(values):
    return sum(values) / len(values)


def discriminator_loss(real_logits, fake_logits) -> jax.Array:
    return _mean([jnp.mean(jax.nn.relu(1 - r)) + jnp.mean(jax.nn.relu(1 + f))
                  for r, f in zip(real_logits, fake_logits)])


def generator_adversarial_loss(fake_logits) -> jax.Array:
    return _mean([-jnp.mean(f) for f in fake_logits])


def feature_matching_loss(real_features, fake_features) -> jax.Array:
    return _mean([_mean([jnp.mean(jnp.abs(r.astype(jnp.float32) - f.astype(jnp.float32))) for r, f in zip(rs, fs)])
                  for rs, fs in zip(real_features, fake_features)])
