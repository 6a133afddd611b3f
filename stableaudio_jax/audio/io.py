"""Reading and writing audio (soundfile, librosa for resampling), channel matching, spectrogram pictures.

Audio arrays are float32 ``[samples, channels]``; a batch is ``[batch, samples, channels]``.
"""
from __future__ import annotations

import io
import os

import numpy as np

from stableaudio_jax import paths


def match_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """stable-audio-tools' rule: mono is duplicated, extra channels are dropped (``[samples, C]`` → ``[samples,
    channels]``)."""
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 1:
        audio = audio[:, None]
    if audio.ndim != 2:
        raise ValueError(f"audio has shape {audio.shape}; expected [samples] or [samples, channels]")
    if audio.shape[1] == channels:
        return audio
    if audio.shape[1] == 1:
        return np.repeat(audio, channels, axis=1)
    if audio.shape[1] > channels:
        return audio[:, :channels]
    raise ValueError(f"audio has {audio.shape[1]} channels; cannot make {channels} from them")


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """``[samples, C]`` resampled with soxr (high quality) via librosa; a no-op when the rates match."""
    if source_rate == target_rate:
        return np.asarray(audio, np.float32)
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be positive; got {source_rate} → {target_rate}")
    import librosa
    return librosa.resample(np.asarray(audio, np.float32).T, orig_sr=source_rate, target_sr=target_rate,
                            res_type="soxr_hq").T.astype(np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int | None = None, channels: int | None = None
               ) -> tuple[np.ndarray, int]:
    """Reads a file (wav/flac/ogg/mp3...) → (float32 ``[samples, channels]``, rate), resampled and channel-matched
    when asked."""
    import soundfile as sf
    path = os.fspath(path)
    try:
        source = io.BytesIO(paths.read_bytes(path)) if paths.is_url(path) else path
        audio, rate = sf.read(source, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for unreadable files; name the file either way
        raise ValueError(f"cannot read audio file {path!r}: {e}") from e
    if sample_rate is not None:
        audio, rate = resample(audio, rate, sample_rate), sample_rate
    if channels is not None:
        audio = match_channels(audio, channels)
    return audio, rate


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> str:
    """Writes ``[samples, channels]`` float audio (clipped to [-1, 1]) as a wav/flac/ogg file (local or a URL)."""
    import soundfile as sf
    path = paths.absolute(path)
    paths.makedirs(os.path.dirname(path))
    buffer = io.BytesIO()
    extension = os.path.splitext(path)[1].lstrip(".").upper() or "WAV"
    file_format = {"AIF": "AIFF", "OGA": "OGG", "OPUS": "OGG"}.get(extension, extension)
    sf.write(buffer, np.clip(np.asarray(audio, np.float32), -1.0, 1.0), sample_rate, subtype=subtype,
             format=file_format)
    paths.write_bytes_atomic(path, buffer.getvalue())
    return path


def mel_spectrogram_db(audio: np.ndarray, sample_rate: int, n_mels: int = 128) -> np.ndarray:
    """``[n_mels, frames]`` log-mel power of the channel mean of ``[samples, channels]`` audio, in dB below its
    loudest bin (floor -80 dB): what the spectrogram pictures show."""
    import librosa
    mono = np.asarray(audio, np.float32).reshape(len(audio), -1).mean(axis=-1)
    mel = librosa.feature.melspectrogram(y=mono, sr=sample_rate, n_fft=2048, hop_length=512, n_mels=n_mels)
    return librosa.power_to_db(mel + 1e-10, ref=np.max, top_db=80.0)


def write_spectrogram_png(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, n_mels: int = 128) -> str:
    """A log-mel spectrogram picture of the channel mean (time left to right, low frequencies at the bottom)."""
    from PIL import Image
    db = mel_spectrogram_db(audio, sample_rate, n_mels)
    pixels = np.uint8(np.clip((db + 80.0) / 80.0, 0, 1) * 255)[::-1]
    path = paths.absolute(path)
    paths.makedirs(os.path.dirname(path))
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((max(pixels.shape[1], 256), 256)).save(buffer, format="PNG")
    paths.write_bytes_atomic(path, buffer.getvalue())
    return path
