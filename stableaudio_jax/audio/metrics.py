"""Evaluation metrics on audio (numpy in, floats out): reconstruction, tempo, timing control, Fréchet distance.

  si_sdr          scale-invariant signal-to-distortion ratio (dB) of an estimate against a reference, per channel
                  then averaged (Le Roux et al. 2019); higher is better, 0 dB ≈ as much error as signal
  mrstft_distance the multi-resolution STFT distance of ``audio.losses`` (spectral convergence + log magnitude,
                  SAO resolutions, no perceptual weighting); lower is better
  mel_distance    mean absolute difference of log-mel spectrograms (dB, 80 mel bands, floor -100 dB)
  tempo_error     |estimated - prompted| / prompted BPM from librosa's beat tracker, and whether it is within 8%
                  of the prompt or of its double or half (tempo octave errors are the tracker's, not the music's)
  tail_energy_db  energy after ``seconds_total`` relative to the energy before it (dB): does a clip stop where it
                  was told to?
  frechet_distance between two sets of embeddings (Gaussian fits), as FAD does with VGGish embeddings
"""
from __future__ import annotations

import functools

import numpy as np

EPS = 1e-12


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """SI-SDR in dB of ``[samples, channels]`` (or ``[samples]``) arrays, averaged over channels."""
    estimate, reference = np.atleast_2d(np.asarray(estimate, np.float64).T), np.atleast_2d(
        np.asarray(reference, np.float64).T)
    if estimate.shape != reference.shape:
        raise ValueError(f"si_sdr: estimate {estimate.T.shape} and reference {reference.T.shape} differ")
    values = []
    for est, ref in zip(estimate, reference):
        est, ref = est - est.mean(), ref - ref.mean()
        target = (est @ ref) / (ref @ ref + EPS) * ref
        values.append(10 * np.log10((target @ target + EPS) / ((est - target) @ (est - target) + EPS)))
    return float(np.mean(values))


def mrstft_distance(estimate: np.ndarray, reference: np.ndarray, sample_rate: int = 44100) -> float:
    import jax.numpy as jnp
    est, ref = (jnp.asarray(np.asarray(a, np.float32)[None]) for a in (estimate, reference))
    return float(_jitted_mrstft()(est, ref, sample_rate=sample_rate))


@functools.lru_cache(maxsize=1)
def _jitted_mrstft():
    """The loss compiled once per clip length (run op by op, clips of many lengths cost ~1,500 small compiles)."""
    import jax

    from stableaudio_jax.audio.losses import mrstft_loss
    return jax.jit(functools.partial(mrstft_loss, perceptual_weighting=False), static_argnames=("sample_rate",))


def log_mel(audio: np.ndarray, sample_rate: int, n_mels: int = 80) -> np.ndarray:
    import librosa
    mono = np.asarray(audio, np.float32).reshape(len(audio), -1).mean(axis=1)
    mel = librosa.feature.melspectrogram(y=mono, sr=sample_rate, n_fft=2048, hop_length=512, n_mels=n_mels)
    return 10 * np.log10(np.maximum(mel, 1e-10))


def mel_distance(estimate: np.ndarray, reference: np.ndarray, sample_rate: int = 44100) -> float:
    return float(np.mean(np.abs(log_mel(estimate, sample_rate) - log_mel(reference, sample_rate))))


def estimate_bpm(audio: np.ndarray, sample_rate: int) -> float:
    import librosa
    mono = np.asarray(audio, np.float32).reshape(len(audio), -1).mean(axis=1)
    tempo, _ = librosa.beat.beat_track(y=mono, sr=sample_rate)
    return float(np.atleast_1d(tempo)[0])


def tempo_error(audio: np.ndarray, sample_rate: int, bpm: float) -> dict:
    """{estimated_bpm, relative_error, within_8_percent (of bpm, 2 bpm or bpm / 2)}."""
    estimated = estimate_bpm(audio, sample_rate)
    relative = abs(estimated - bpm) / bpm
    octave = min(abs(estimated - m * bpm) / (m * bpm) for m in (0.5, 1.0, 2.0))
    return {"estimated_bpm": estimated, "relative_error": float(relative), "within_8_percent": bool(octave <= 0.08)}


def tail_energy_db(audio: np.ndarray, sample_rate: int, seconds_total: float) -> float:
    """Mean power after ``seconds_total`` over mean power before it, in dB (very negative = it stopped)."""
    cut = int(round(seconds_total * sample_rate))
    audio = np.asarray(audio, np.float64)
    if not 0 < cut < len(audio):
        raise ValueError(f"tail_energy_db: seconds_total {seconds_total} must fall inside the clip "
                         f"({len(audio) / sample_rate:.2f} s)")
    before, after = np.mean(audio[:cut] ** 2), np.mean(audio[cut:] ** 2)
    return float(10 * np.log10((after + EPS) / (before + EPS)))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to the rows of ``a`` and ``b`` ([N, D] embeddings)."""
    import warnings

    import scipy.linalg
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"frechet_distance: embeddings {a.shape} and {b.shape}; expected [N >= 2, D] each")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():  # few clips give singular covariances: regularised below when it matters
        warnings.simplefilter("ignore")
        root = scipy.linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(root).all():  # near-singular product: regularise as FID implementations do
            offset = np.eye(len(mu_a)) * 1e-6
            root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    value = np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2 * np.real(root))
    return float(max(value, 0.0))
