"""Spectral reconstruction losses, as auraloss computes them (the reference's VAE losses).

``stft_loss(input, target)`` = w_sc * spectral convergence + w_log_mag * mean |log|X| - log|Y||, magnitudes
sqrt(max(re^2 + im^2, eps)), eps 1e-8 (auraloss' ``STFTLoss``, reduction 'mean'). Spectral convergence
||Y - X||_F / ||Y||_F is taken per signal and averaged (stable-audio-tools' vendored auraloss, the default) or over
the whole batch at once (PyPI auraloss 0.4.0: ``sc_per_item=False``). With ``perceptual_weighting`` both signals
first go through auraloss' 101-tap A-weighting FIR. ``mrstft_loss`` averages over resolutions;
``sum_and_difference_loss`` applies it to L+R and L-R and averages the two. Signals are ``[batch, samples, channels]``.

``vae_reconstruction_loss`` is the reference's VAE spectral term: for stereo SD(x, x^) + 0.5 MR(x_L, x^_L) +
0.5 MR(x_R, x^_R), for mono MR(x, x^); the reference passes the *real* audio as auraloss' input and the decoded audio
as its target (so spectral convergence is normalised by the decoded spectrogram), and so does this function.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from stableaudio_jax.audio.spectral import a_weighting_fir, fir_filter, stft

SAO_FFT_SIZES = (2048, 1024, 512, 256, 128, 64, 32)
SAO_HOP_SIZES = (512, 256, 128, 64, 32, 16, 8)


def _magnitude(x: jax.Array, n_fft: int, hop: int, win: int, eps: float) -> jax.Array:
    spec = stft(x, n_fft, hop, win)
    return jnp.sqrt(jnp.maximum(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2, eps))


def stft_loss(pred: jax.Array, target: jax.Array, n_fft: int, hop: int, win: int | None = None,
              w_sc: float = 1.0, w_log_mag: float = 1.0, eps: float = 1e-8, sc_per_item: bool = True) -> jax.Array:
    """One resolution on ``[N, T]`` signals (already pre-filtered if perceptual weighting is on)."""
    win = n_fft if win is None else win
    x, y = _magnitude(pred, n_fft, hop, win, eps), _magnitude(target, n_fft, hop, win, eps)
    if sc_per_item:
        sc = jnp.mean(jnp.sqrt(jnp.sum(jnp.square(y - x), axis=(1, 2)) / jnp.sum(jnp.square(y), axis=(1, 2))))
    else:
        sc = jnp.linalg.norm((y - x).ravel()) / jnp.linalg.norm(y.ravel())
    log_mag = jnp.mean(jnp.abs(jnp.log(x) - jnp.log(y)))
    return w_sc * sc + w_log_mag * log_mag


def mrstft_loss(pred: jax.Array, target: jax.Array, fft_sizes: Sequence[int] = SAO_FFT_SIZES,
                hop_sizes: Sequence[int] = SAO_HOP_SIZES, win_lengths: Sequence[int] | None = None,
                perceptual_weighting: bool = True, sample_rate: int = 44100, w_sc: float = 1.0,
                w_log_mag: float = 1.0, sc_per_item: bool = True) -> jax.Array:
    """Multi-resolution STFT loss of ``[B, T, C]`` signals (every channel is a separate signal), float32."""
    if pred.shape != target.shape:
        raise ValueError(f"mrstft_loss: prediction {pred.shape} and target {target.shape} differ")
    to_rows = lambda a: jnp.moveaxis(a.astype(jnp.float32), -1, 1).reshape(-1, a.shape[1])  # noqa: E731
    x, y = to_rows(pred), to_rows(target)
    if perceptual_weighting:
        taps = a_weighting_fir(sample_rate)
        x, y = fir_filter(x, taps), fir_filter(y, taps)
    win_lengths = fft_sizes if win_lengths is None else win_lengths
    losses = [stft_loss(x, y, n, h, w, w_sc, w_log_mag, sc_per_item=sc_per_item)
              for n, h, w in zip(fft_sizes, hop_sizes, win_lengths)]
    return sum(losses) / len(losses)


def sum_and_difference_loss(pred: jax.Array, target: jax.Array, w_sum: float = 1.0, w_diff: float = 1.0,
                            **mrstft_kwargs) -> jax.Array:
    """auraloss' SumAndDifferenceSTFTLoss on stereo ``[B, T, 2]``: (w_sum * L(sum) + w_diff * L(diff)) / 2."""
    if pred.shape[-1] != 2:
        raise ValueError(f"sum_and_difference_loss needs stereo audio; got {pred.shape[-1]} channels")
    total = lambda a: (a[..., :1] + a[..., 1:])  # noqa: E731
    diff = lambda a: (a[..., :1] - a[..., 1:])  # noqa: E731
    return (w_sum * mrstft_loss(total(pred), total(target), **mrstft_kwargs)
            + w_diff * mrstft_loss(diff(pred), diff(target), **mrstft_kwargs)) / 2


def vae_reconstruction_loss(reals: jax.Array, decoded: jax.Array, **mrstft_kwargs) -> jax.Array:
    """The reference's spectral VAE loss (see the module docstring), reals first."""
    if reals.shape[-1] == 2:
        left, right = (lambda a: a[..., :1]), (lambda a: a[..., 1:])
        return (sum_and_difference_loss(reals, decoded, **mrstft_kwargs)
                + 0.5 * mrstft_loss(left(reals), left(decoded), **mrstft_kwargs)
                + 0.5 * mrstft_loss(right(reals), right(decoded), **mrstft_kwargs))
    return mrstft_loss(reals, decoded, **mrstft_kwargs)
