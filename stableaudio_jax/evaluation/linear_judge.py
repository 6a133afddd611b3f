"""The second instrument judge: independent of the first (``classifier.py``) in both what it hears and how it
decides, so that a generated clip both judges call right is unlikely to have fooled one judge's particular blind
spot.

Features per one-second segment (mono mix at 22.05 kHz; no mel scale, no cepstrum, unlike the first judge): the
mean and standard deviation over time of the log energy in 32 equal-width linear-frequency bands, of the spectral
centroid, bandwidth, 85 % roll-off, zero-crossing rate and spectral flux, and the loudness envelope's shape (crest,
sustain: the fraction of frames above half the peak, and the slope of its log decay). A linear model (multinomial
logistic regression, scikit-learn) maps segments to instruments; a clip's prediction averages its segments'
log-probabilities. Stored as a small ``.npz`` applied with numpy, as the first judge is (``StoredJudge``).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from stableaudio_jax.evaluation.classifier import (StoredJudge, clip_log_probabilities, segment_training_set,
                                                   sklearn_logits)

FEATURE_RATE = 22050
HOP = 512
BANDS = 32


def segment_features(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """``[samples, channels]`` → ``[segments, 2 * 32 + 2 * 5 + 3]`` float64, one row per second (at least one)."""
    import librosa
    mono = np.asarray(audio, np.float32).reshape(len(audio), -1).mean(axis=1)
    y = librosa.resample(mono, orig_sr=sample_rate, target_sr=FEATURE_RATE) if sample_rate != FEATURE_RATE else mono
    y = np.pad(y, (0, max(0, 2048 - len(y))))
    magnitude = np.abs(librosa.stft(y, n_fft=2048, hop_length=HOP))
    bands = np.log(np.stack([b.sum(0) for b in np.array_split(magnitude[1:] ** 2, BANDS)]) + 1e-10)
    frames = [librosa.feature.spectral_centroid(S=magnitude, sr=FEATURE_RATE)[0],
              librosa.feature.spectral_bandwidth(S=magnitude, sr=FEATURE_RATE)[0],
              librosa.feature.spectral_rolloff(S=magnitude, sr=FEATURE_RATE, roll_percent=0.85)[0],
              librosa.feature.zero_crossing_rate(y, frame_length=2048, hop_length=HOP)[0][:magnitude.shape[1]],
              np.concatenate([[0.0], np.sqrt((np.diff(magnitude, axis=1).clip(min=0) ** 2).sum(0))])]
    loudness = magnitude.sum(0)
    step = max(2, int(FEATURE_RATE / HOP))
    rows = []
    for start in range(0, max(1, magnitude.shape[1] - step + 1), step):
        s = slice(start, start + step)
        per_frame = np.stack([f[s] for f in frames])
        rows.append(np.concatenate([bands[:, s].mean(1), bands[:, s].std(1), per_frame.mean(1), per_frame.std(1),
                                    _envelope_shape(loudness[s])]))
    return np.asarray(rows, np.float64)


def _envelope_shape(loudness: np.ndarray) -> list[float]:
    """Crest (peak over mean), sustain (fraction of frames above half the peak) and the log-envelope's slope after
    its peak (per frame: a decaying marimba falls, a held organ note does not)."""
    peak = float(loudness.max()) + 1e-10
    after = np.log(loudness[int(loudness.argmax()):] + 1e-10)
    slope = float(np.polyfit(np.arange(len(after)), after, 1)[0]) if len(after) > 1 else 0.0
    return [peak / (float(loudness.mean()) + 1e-10), float(np.mean(loudness > peak / 2)), slope]


@dataclasses.dataclass
class LinearJudge(StoredJudge):
    labels: list[str]
    mean: np.ndarray     # feature standardisation
    scale: np.ndarray
    weights: np.ndarray  # [features, classes]
    bias: np.ndarray
    kind = "linear"
    description = "logistic regression on linear-band energies, spectral shape and loudness envelope"
    what = "linear instrument judge"
    features = staticmethod(segment_features)

    @classmethod
    def fit(cls, clips: Sequence[np.ndarray], labels: Sequence[str], seed: int = 0) -> "LinearJudge":
        """``clips``: per clip its ``segment_features`` rows; every segment learns its clip's label."""
        from sklearn.linear_model import LogisticRegression
        rows, targets, mean, scale = segment_training_set(clips, labels)
        model = LogisticRegression(C=1.0, max_iter=5000, random_state=seed).fit(rows, targets)
        weights, bias = sklearn_logits(model.coef_.T, model.intercept_, model.classes_)
        return cls([str(c) for c in model.classes_], mean, scale, weights, bias)

    def log_probabilities(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """``[clips, instruments]``: the mean over a clip's segments of their log-probabilities."""
        return clip_log_probabilities([(c - self.mean) / self.scale @ self.weights + self.bias for c in clips])

