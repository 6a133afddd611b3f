"""STFT and the A-weighting pre-filter in JAX (torch.stft / auraloss conventions, so losses match the reference).

``stft`` follows ``torch.stft(x, n_fft, hop, win_length, window=hann_window(win_length), center=True,
pad_mode='reflect', return_complex=True)``: periodic Hann window zero-padded (centred) to ``n_fft``, reflect padding
of n_fft // 2 on both sides, frames = 1 + T // hop. Output ``[batch, frames, n_fft // 2 + 1]`` complex64.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from stableaudio_jax.parallel.sharding import on_own_rows


@functools.lru_cache(maxsize=None)
def hann_window(win_length: int, n_fft: int) -> np.ndarray:
    """Periodic Hann (torch.hann_window default) of ``win_length``, centred in ``n_fft`` samples."""
    n = np.arange(win_length)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / win_length)
    left = (n_fft - win_length) // 2
    return np.pad(window, (left, n_fft - win_length - left)).astype(np.float32)


def frame(x: jax.Array, frame_length: int, hop: int) -> jax.Array:
    """``[B, T]`` → ``[B, 1 + (T - frame_length) // hop, frame_length]`` (no padding)."""
    count = 1 + (x.shape[-1] - frame_length) // hop
    index = np.arange(count)[:, None] * hop + np.arange(frame_length)[None, :]
    return x[..., index]


def rfft_frames(frames: jax.Array, n_fft: int) -> jax.Array:
    """``rfft`` of windowed frames over the last axis, each device on its own rows of the batch (XLA alone would
    all-gather the batch to every device first: ``parallel.sharding.on_own_rows``)."""
    return on_own_rows(lambda f: jnp.fft.rfft(f, n=n_fft, axis=-1), frames)


def stft(x: jax.Array, n_fft: int, hop: int, win_length: int | None = None, center: bool = True,
         pad_mode: str = "reflect", normalized: bool = False) -> jax.Array:
    win_length = n_fft if win_length is None else win_length
    x = x.astype(jnp.float32)
    if center:
        pad = [(0, 0)] * (x.ndim - 1) + [(n_fft // 2, n_fft // 2)]
        x = jnp.pad(x, pad, mode=pad_mode)
    frames = frame(x, n_fft, hop) * hann_window(win_length, n_fft)
    spec = rfft_frames(frames, n_fft)
    if normalized:  # torch's normalized=True: divide by sqrt(frame_length)
        spec = spec / np.sqrt(n_fft)
    return spec


@functools.lru_cache(maxsize=None)
def a_weighting_fir(sample_rate: int, ntaps: int = 101) -> np.ndarray:
    """auraloss' A-weighting FIR: the analogue A-weighting filter, bilinear-transformed, then fitted with a
    least-squares linear-phase FIR of ``ntaps`` taps."""
    import scipy.signal
    f1, f2, f3, f4, a1000 = 20.598997, 107.65265, 737.86223, 12194.217, 1.9997
    nums = [(2 * np.pi * f4) ** 2 * (10 ** (a1000 / 20)), 0, 0, 0, 0]
    dens = np.polymul([1, 4 * np.pi * f4, (2 * np.pi * f4) ** 2], [1, 4 * np.pi * f1, (2 * np.pi * f1) ** 2])
    dens = np.polymul(np.polymul(dens, [1, 2 * np.pi * f3]), [1, 2 * np.pi * f2])
    b, a = scipy.signal.bilinear(nums, dens, fs=sample_rate)
    w, h = scipy.signal.freqz(b, a, worN=512, fs=sample_rate)
    return scipy.signal.firls(ntaps, w, abs(h), fs=sample_rate).astype(np.float32)


def fir_filter(x: jax.Array, taps: np.ndarray) -> jax.Array:
    """Correlation of ``[B, T]`` signals with ``taps`` and 'same' zero padding (torch conv1d, padding ntaps // 2)."""
    k = len(taps)
    out = jax.lax.conv_general_dilated(x.astype(jnp.float32)[:, :, None], jnp.asarray(taps)[:, None, None], (1,),
                                       [(k // 2, k // 2)], dimension_numbers=("NWC", "WIO", "NWC"))
    return out[:, :, 0]
