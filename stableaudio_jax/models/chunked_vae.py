"""Chunked VAE encode/decode for long audio: same result as the whole-signal pass, bounded activation memory.

The Oobleck networks are fully convolutional, so an output frame depends only on a finite window of input frames
(the receptive field). Cutting the signal into windows of ``chunk_size + 2 * overlap`` latent frames, with
``overlap`` at least the receptive field, and keeping each window's central ``chunk_size`` frames reproduces the
unchunked output to float32 rounding. Windows at the ends are shifted inwards instead of zero-padded, so the true
signal edges see exactly the zero padding the unchunked pass sees.

All windows have one shape, so the network compiles once; a ``lax.scan`` runs them one after another, keeping one
window's activations alive at a time (a 285 s SAO decode never materialises the full 44.1 kHz activations).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from stableaudio_jax.models.autoencoder import RESIDUAL_DILATIONS, OobleckVAE, posterior_from_moments

# stable-audio-tools' defaults for chunked decoding (chunk 128 latents, overlap 32 latents).
DEFAULT_CHUNK_SIZE = 128
DEFAULT_OVERLAP = 32


def _residual_radius() -> int:
    """Radius (in samples at that rate) of the three residual units: k7 dilated convs, 1x1 convs."""
    return sum(3 * d for d in RESIDUAL_DILATIONS)


def decoder_receptive_field(vae: OobleckVAE) -> int:
    """Latent frames on each side that can influence one output sample (a conservative upper bound)."""
    r = 3.0  # conv_out, k7, at the audio rate
    # decoder blocks from the last (audio rate) back to the first: Oobleck mirrors the encoder strides, DAC has
    # its own rates (listed from the latent end)
    rates = getattr(vae, "decoder_rates", None)
    for stride in (vae.strides if rates is None else tuple(reversed(rates))):
        r += _residual_radius()
        k, p = 2 * stride, math.ceil(stride / 2)
        r = (r + max(p, k - 1 - p)) / stride + 1  # transposed conv back to its input rate
    return math.ceil(r + 3)  # conv_in, k7, at the latent rate


def encoder_receptive_field(vae: OobleckVAE) -> int:
    """Latent frames (of audio, in units of the downsampling ratio) on each side that can influence one latent."""
    r = 1.0  # conv_out, k3, at the latent rate
    for stride in reversed(vae.strides):  # encoder blocks from the last back to the first
        k, p = 2 * stride, math.ceil(stride / 2)
        r = r * stride + max(p, k - 1 - p) + _residual_radius()
    r += 3  # conv_in, k7
    return math.ceil(r / vae.downsampling_ratio)


def _window_plan(frames: int, chunk_size: int, overlap: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Output-chunk starts and window starts (latent frames); windows are clamped inside [0, frames)."""
    window = chunk_size + 2 * overlap
    n = math.ceil(frames / chunk_size)
    out_starts = np.minimum(np.arange(n) * chunk_size, frames - chunk_size)
    win_starts = np.clip(out_starts - overlap, 0, frames - window)
    return out_starts.astype(np.int32), win_starts.astype(np.int32), window


def check_overlap(overlap: int, needed: int, what: str) -> None:
    if overlap < needed:
        raise ValueError(f"chunked {what}: overlap {overlap} latent frames is below the receptive field ({needed}); "
                         f"chunks would not match the unchunked result")


def scan_windows(fn, x: jax.Array, frames: int, chunk_size: int, overlap: int, in_rate: int, out_rate: int,
                  out_shape: tuple[int, ...], out_dtype: Any) -> jax.Array:
    """Runs ``fn`` over same-shaped windows of ``x`` (time axis 1) and stitches the central parts."""
    out_starts, win_starts, window = _window_plan(frames, chunk_size, overlap)

    def step(out, starts):
        o, w = starts
        piece = fn(lax.dynamic_slice_in_dim(x, w * in_rate, window * in_rate, axis=1))
        piece = lax.dynamic_slice_in_dim(piece, (o - w) * out_rate, chunk_size * out_rate, axis=1)
        return lax.dynamic_update_slice_in_dim(out, piece.astype(out_dtype), o * out_rate, axis=1), None

    out, _ = lax.scan(step, jnp.zeros(out_shape, out_dtype), (jnp.asarray(out_starts), jnp.asarray(win_starts)))
    return out


def chunked_decode(vae: OobleckVAE, params: Any, latents: jax.Array, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                   overlap: int = DEFAULT_OVERLAP) -> jax.Array:
    """``vae.decode`` in windows of latent frames; equal to the whole-signal decode. Traceable (jit it)."""
    check_overlap(overlap, decoder_receptive_field(vae), "decode")
    decode = lambda z: vae.apply(params, z, method=type(vae).decode)  # noqa: E731
    frames = latents.shape[1]
    if frames <= chunk_size + 2 * overlap:
        return decode(latents)
    ratio = vae.downsampling_ratio
    out_shape = (latents.shape[0], frames * ratio, vae.audio_channels)
    return scan_windows(decode, latents, frames, chunk_size, overlap, 1, ratio, out_shape, jnp.dtype(vae.dtype))


def chunked_encode_moments(vae: OobleckVAE, params: Any, audio: jax.Array, *,
                           chunk_size: int = DEFAULT_CHUNK_SIZE, overlap: int = DEFAULT_OVERLAP) -> jax.Array:
    """``vae.encode_moments`` in windows; windows start on multiples of the downsampling ratio."""
    check_overlap(overlap, encoder_receptive_field(vae), "encode")
    ratio = vae.downsampling_ratio
    moments = lambda a: vae.apply(params, a, method=type(vae).encode_moments)  # noqa: E731
    if audio.ndim != 3 or audio.shape[1] % ratio:
        return moments(audio)  # raises the model's own shape error
    frames = audio.shape[1] // ratio
    if frames <= chunk_size + 2 * overlap:
        return moments(audio)
    out_shape = (audio.shape[0], frames, 2 * vae.latent_dim)
    return scan_windows(moments, audio, frames, chunk_size, overlap, ratio, 1, out_shape, jnp.dtype(vae.dtype))


def chunked_encode(vae: OobleckVAE, params: Any, audio: jax.Array, *, sample: bool = False,
                   rng: jax.Array | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE,
                   overlap: int = DEFAULT_OVERLAP) -> jax.Array:
    """Chunked ``vae.encode``: posterior mean, or a sample drawn over the whole sequence at once (so it equals
    the unchunked sample for the same key)."""
    posterior = posterior_from_moments(
        chunked_encode_moments(vae, params, audio, chunk_size=chunk_size, overlap=overlap))
    if not sample:
        return posterior.mean
    if rng is None:
        raise ValueError("chunked_encode(sample=True) needs an rng key")
    return posterior.sample(rng)
