"""Evaluation metrics on audio (numpy in, floats out): reconstruction, tempo, timing control, Fréchet distance.

  si_sdr          scale-invariant signal-to-distortion ratio (dB) of an estimate against a reference, per channel
                  then averaged (Le Roux et al. 2019); higher is better, 0 dB ≈ as much error as signal
  stft_distance   multi-resolution STFT distance, auraloss' default definition; lower is better
  mel_distance    mel STFT distance, auraloss' default definition (128 bands); lower is better
                  (these three as the Stable Audio papers' autoencoder tables compute them: SAO 1.29 / 0.77 / 6.28 dB
                  on Song Describer; ``tests/test_evaluation.py`` checks them against auraloss itself)
  tempo_error     |estimated - prompted| / prompted BPM from librosa's beat tracker, and whether it is within 8%
                  of the prompt or of its double or half (tempo octave errors are the tracker's, not the music's)
  tail_energy_db  energy after ``seconds_total`` relative to the energy before it (dB): does a clip stop where it
                  was told to?
  detected_end    where a clip's sound ends (energy-based silence detection), to compare with ``seconds_total``
  bootstrap_interval  a 95 % percentile-bootstrap interval of a statistic over clips
  frechet_distance between two sets of embeddings (Gaussian fits), as FAD does with VGGish embeddings
"""
from __future__ import annotations

import numpy as np

EPS = 1e-12
# auraloss' defaults (Steinmetz & Reiss 2020), which the Stable Audio papers' autoencoder tables use: the
# multi-resolution STFT distance at (FFT, hop, window) = (1024, 120, 600), (2048, 240, 1200), (512, 50, 240); the mel
# distance at FFT 1024, hop 256, 128 mel bands. Each resolution's distance is spectral convergence + mean absolute
# log-magnitude difference, over all channels together.
AURALOSS_RESOLUTIONS = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))
AURALOSS_MEL = dict(fft=1024, hop=256, window=1024, n_mels=128)
AURALOSS_EPS = 1e-8


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """SI-SDR in dB of ``[samples, channels]`` (or ``[samples]``) arrays, per channel then averaged: auraloss'
    ``SISDRLoss`` (zero mean, eps 1e-8), negated back into a ratio."""
    estimate, reference = _pair(estimate, reference, "si_sdr")
    estimate = estimate - estimate.mean(-1, keepdims=True)
    reference = reference - reference.mean(-1, keepdims=True)
    alpha = (estimate * reference).sum(-1) / ((reference ** 2).sum(-1) + AURALOSS_EPS)
    target = reference * alpha[:, None]
    ratio = (target ** 2).sum(-1) / (((estimate - target) ** 2).sum(-1) + AURALOSS_EPS) + AURALOSS_EPS
    return float(np.mean(10 * np.log10(ratio)))


def stft_distance(estimate: np.ndarray, reference: np.ndarray) -> float:
    """auraloss' ``MultiResolutionSTFTLoss()`` of ``[samples, channels]`` audio; lower is better."""
    x, y = _pair(estimate, reference, "stft_distance")
    return float(np.mean([_sc_plus_log_magnitude(_magnitude(x, *r), _magnitude(y, *r))
                          for r in AURALOSS_RESOLUTIONS]))


def mel_distance(estimate: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """auraloss' ``MelSTFTLoss(sample_rate)``: the STFT distance on 128 mel bands (magnitudes through librosa's
    Slaney mel filters); lower is better."""
    import librosa
    x, y = _pair(estimate, reference, "mel_distance")
    m = AURALOSS_MEL
    bank = librosa.filters.mel(sr=sample_rate, n_fft=m["fft"], n_mels=m["n_mels"]).astype(np.float64)
    spectra = (bank @ _magnitude(a, m["fft"], m["hop"], m["window"]) for a in (x, y))
    return float(_sc_plus_log_magnitude(*spectra))


def _channel_rows(audio: np.ndarray) -> np.ndarray:
    """``[samples, channels]`` (or ``[samples]``) → float64 ``[channels, samples]``."""
    return np.atleast_2d(np.asarray(audio, np.float64).T)


def _pair(estimate, reference, name):
    x, y = _channel_rows(estimate), _channel_rows(reference)
    if x.shape != y.shape:
        raise ValueError(f"{name}: estimate {x.T.shape} and reference {y.T.shape} differ")
    return x, y


def _magnitude(rows: np.ndarray, fft: int, hop: int, window: int) -> np.ndarray:
    """``[rows, bins, frames]`` magnitudes as ``torch.stft`` frames them (centred, reflect-padded by fft / 2, a
    periodic Hann window of ``window`` samples centred in the FFT), floored at sqrt(1e-8) like auraloss."""
    if rows.shape[-1] <= fft // 2:
        raise ValueError(f"a clip of {rows.shape[-1]} samples is too short for an FFT of {fft} (reflect padding)")
    hann = np.zeros(fft)
    offset = (fft - window) // 2
    hann[offset:offset + window] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)
    padded = np.pad(rows, ((0, 0), (fft // 2, fft // 2)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, fft, axis=-1)[:, ::hop]
    spectrum = np.fft.rfft(frames * hann, axis=-1)
    return np.sqrt(np.maximum(spectrum.real ** 2 + spectrum.imag ** 2, AURALOSS_EPS)).transpose(0, 2, 1)


def _sc_plus_log_magnitude(x: np.ndarray, y: np.ndarray) -> float:
    convergence = np.linalg.norm(y - x) / np.linalg.norm(y)
    return float(convergence + np.mean(np.abs(np.log(x) - np.log(y))))


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


def detected_end(audio: np.ndarray, sample_rate: int, frame_seconds: float = 0.02,
                 threshold_db: float = -40.0) -> float:
    """Seconds at which the sound of ``audio`` ends: the end of the last ``frame_seconds`` frame whose RMS is within
    ``threshold_db`` of the loudest frame's (a silence detector in the spirit of the one Stable Audio's paper used
    to check its timing conditioning; the frame and threshold are this project's choice). 0 for silence."""
    mono = np.asarray(audio, np.float64).reshape(len(audio), -1).mean(axis=1)
    frame = max(1, int(round(frame_seconds * sample_rate)))
    count = -(-len(mono) // frame)
    padded = np.pad(mono, (0, count * frame - len(mono)))
    rms = np.sqrt(np.mean(padded.reshape(count, frame) ** 2, axis=1))
    if rms.max() <= 0:
        return 0.0
    loud = np.flatnonzero(20 * np.log10(np.maximum(rms, EPS) / rms.max()) > threshold_db)
    return float(min((loud[-1] + 1) * frame, len(mono)) / sample_rate)


def bootstrap_interval(values, statistic=np.mean, resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> list[float] | None:
    """The percentile-bootstrap ``level`` interval of ``statistic`` over the rows of ``values`` (clips resampled with
    replacement, ``resamples`` times, a fixed seed: the same data give the same interval). None below two rows."""
    values = np.asarray(values)
    if len(values) < 2:
        return None
    picks = np.random.default_rng(seed).integers(0, len(values), (resamples, len(values)))
    stats = np.array([statistic(values[p]) for p in picks], np.float64)
    low, high = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


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
