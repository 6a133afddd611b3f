"""Audio data for VAE training: random crops of a folder of audio files *or* of an ingested dataset, per host,
checkpointable (grain).

Folder files (wav, flac, ogg, mp3, aiff, opus; any rate, mono or multichannel) are probed once: unreadable ones
are skipped, counted and reported; a folder with no readable audio is an error. An ingested dataset
(``stableaudio-jax ingest``) brings its own skips, captions and splits, at the model's rate already. Each example
reads a random window straight from the file or the FLAC record (both seek), resamples it to the model rate,
matches channels the reference's way (mono duplicated, extra channels dropped), zero-pads short files, re-draws
silent windows (peak below ``silence_db`` dBFS) from a random file as stable-audio-tools does (bounded here by
``max_redraws``; the reference retries forever: a crop still silent after them is used and flagged
``redraws_exhausted``, which the trainer counts and logs), flips the phase with probability 1/2 and clamps to
[-1, 1].

Each host reads its own files (``files[process_index::process_count]``; with fewer files than hosts every host reads
all files with its own seed). The iterator's position is a small dict saved with the train state: resuming
continues the exact stream.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
from typing import Iterator

import grain
import numpy as np

from stableaudio_jax.audio.io import match_channels, resample

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif", ".opus")
logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class AudioFile:
    path: str
    frames: int
    sample_rate: int
    channels: int


@dataclasses.dataclass(frozen=True)
class FolderScan:
    files: list[AudioFile]
    skipped: list[tuple[str, str]]  # (path, reason)

    def report(self) -> str:
        hours = sum(f.frames / f.sample_rate for f in self.files) / 3600
        text = f"{len(self.files)} audio files ({hours:.2f} h), {len(self.skipped)} skipped"
        return text + "".join(f"\n  skipped {p}: {r}" for p, r in self.skipped[:20])


def scan_audio_folder(root: str | os.PathLike) -> FolderScan:
    """Every readable audio file under ``root`` (recursively, sorted); unreadable or empty ones are listed."""
    import soundfile as sf
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"audio folder {root!r} does not exist")
    files, skipped = [], []
    for directory, _, names in sorted(os.walk(root)):
        for name in sorted(names):
            if not name.lower().endswith(AUDIO_EXTENSIONS):
                continue
            path = os.path.join(directory, name)
            try:
                info = sf.info(path)
            except Exception as e:  # libsndfile raises several types; the file is reported, not fatal
                skipped.append((path, f"{type(e).__name__}: {e}"))
                continue
            if info.frames <= 0:
                skipped.append((path, "no samples"))
                continue
            files.append(AudioFile(path, int(info.frames), int(info.samplerate), int(info.channels)))
    if not files:
        raise ValueError(f"no readable audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root!r}"
                         + (f"; {len(skipped)} unreadable" if skipped else ""))
    return FolderScan(files, skipped)


class RandomCrop(grain.transforms.RandomMap):
    """File index → {'audio': [crop, channels] float32, 'seconds_start', 'seconds_total', 'padding_mask',
    'redraws_exhausted'}; files from a folder (paths) or an ingested dataset (``dataset`` given)."""

    def __init__(self, files: list[AudioFile], sample_rate: int, channels: int, crop_samples: int,
                 silence_db: float = -60.0, max_redraws: int = 50, phase_flip: float = 0.5, dataset=None):
        self.files, self.sample_rate, self.channels = files, sample_rate, channels
        self.crop_samples, self.max_redraws, self.phase_flip = crop_samples, max_redraws, phase_flip
        self.silence, self.dataset = 10 ** (silence_db / 20), dataset

    def _read(self, f: AudioFile, offset: int, frames: int) -> np.ndarray:
        if self.dataset is not None:
            audio = self.dataset.read_window(int(f.path), offset, frames)
        else:
            import soundfile as sf
            audio, _ = sf.read(f.path, start=offset, frames=frames, dtype="float32", always_2d=True)
        audio = match_channels(resample(audio, f.sample_rate, self.sample_rate), self.channels)
        return audio[: self.crop_samples]

    def random_map(self, index, rng: np.random.Generator) -> dict:
        index, exhausted = int(index), True
        for _ in range(self.max_redraws + 1):
            f = self.files[index]
            window = math.ceil(self.crop_samples * f.sample_rate / self.sample_rate)
            offset = int(rng.integers(0, max(f.frames - window, 0) + 1))
            audio = self._read(f, offset, window)
            if np.isfinite(audio).all() and np.abs(audio).max(initial=0.0) >= self.silence:
                exhausted = False
                break  # audible and not corrupt (non-finite samples are treated like silence: re-drawn)
            index = int(rng.integers(0, len(self.files)))  # silent: another random file, as the reference
        valid = audio.shape[0]
        audio = np.pad(np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0), ((0, self.crop_samples - valid), (0, 0)))
        if rng.random() < self.phase_flip:
            audio = -audio
        mask = np.arange(self.crop_samples) < valid
        return {"audio": np.clip(audio, -1.0, 1.0), "padding_mask": mask,
                "seconds_start": np.float32(math.floor(offset / f.sample_rate)),
                "seconds_total": np.float32(math.ceil(f.frames / f.sample_rate)),
                "redraws_exhausted": np.bool_(exhausted)}


def host_files(files: list, process_index: int, process_count: int) -> tuple[list, int]:
    """This host's files and a seed offset: disjoint files per host, or all files with a per-host seed when there
    are fewer files than hosts."""
    if len(files) >= process_count:
        return files[process_index::process_count], 0
    return list(files), process_index


def audio_crop_dataset(scan, batch_size: int, sample_rate: int, channels: int,
                       crop_samples: int, seed: int = 0, process_index: int = 0, process_count: int = 1,
                       **crop_kwargs) -> grain.IterDataset:
    """An endless, shuffled, per-host stream of batches of random crops (``batch_size`` per host) of a
    ``FolderScan`` or an ingested dataset's ``audio_source.IngestedScan`` (its ``dataset`` holds the audio)."""
    files, seed_offset = host_files(scan.files, process_index, process_count)
    ds = grain.MapDataset.source(np.arange(len(files))).shuffle(seed=seed + 7919 * seed_offset).repeat()
    dataset = getattr(scan, "dataset", None)
    ds = ds.random_map(RandomCrop(files, sample_rate, channels, crop_samples, dataset=dataset, **crop_kwargs),
                       seed=seed + 104729 * (process_index + 1))
    return ds.batch(batch_size, drop_remainder=True).to_iter_dataset()


class CheckpointableIterator:
    """Wraps a grain iterator: ``state()`` / ``restore(state)`` give a JSON-able position."""

    def __init__(self, dataset: grain.IterDataset):
        self._iterator = iter(dataset)

    def __iter__(self) -> Iterator[dict]:
        return self

    def __next__(self) -> dict:
        return next(self._iterator)

    def state(self) -> dict:
        return dict(self._iterator.get_state())

    def restore(self, state: dict) -> None:
        if state:
            self._iterator.set_state(state)


class SilentCropCounter:
    """Wraps a crop-batch iterator: removes the ``redraws_exhausted`` flags (host-side bookkeeping, not model
    input), counts the crops that stayed silent or non-finite after every re-draw (``total``) and warns when
    there are some."""

    def __init__(self, iterator: CheckpointableIterator, max_redraws: int):
        self.iterator, self.max_redraws, self.total = iterator, max_redraws, 0

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = dict(next(self.iterator))
        count = int(np.sum(batch.pop("redraws_exhausted", 0)))
        if count:
            self.total += count
            logger.warning("%d crop(s) in this batch stayed silent or non-finite after %d re-draws and were used "
                           "as zeros/silence (%d so far); check the data for silent or broken files", count,
                           self.max_redraws, self.total)
        return batch

    def state(self) -> dict:
        return self.iterator.state()

    def restore(self, state: dict) -> None:
        self.iterator.restore(state)
