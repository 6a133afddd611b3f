"""Where VAE training's audio comes from: an ingested dataset (``stableaudio-jax ingest``: its own skips, captions
and splits, at the model's rate already) or a folder of audio files (``audio_folder``). Both become crop sources
for ``audio_folder.audio_crop_dataset``."""
from __future__ import annotations

import dataclasses
import os

from stableaudio_jax import paths
from stableaudio_jax.data.audio_folder import AudioFile, FolderScan, scan_audio_folder
from stableaudio_jax.data.ingest import REPORT_NAME, load_audio_dataset


@dataclasses.dataclass(frozen=True)
class IngestedScan:
    """The examples of an ingested dataset as crop sources (``AudioFile.path`` holds the example index)."""

    dataset: object  # data.ingest.AudioDataset
    files: list[AudioFile]
    skipped: list[tuple[str, str]]  # what ingest skipped

    def report(self) -> str:
        hours = sum(f.frames / f.sample_rate for f in self.files) / 3600
        return (f"{len(self.files)} examples ({hours:.2f} h) of the ingested dataset {self.dataset.output_dir}; "
                f"{len(self.skipped)} files skipped at ingest")


def scan_ingested(directory: str | os.PathLike) -> IngestedScan:
    """Crop sources for every example of an ingested dataset (durations from its index: no audio is decoded)."""
    dataset = load_audio_dataset(directory)
    files = [AudioFile(str(i), int(item["frames"]), dataset.sample_rate, dataset.channels)
             for i, item in enumerate(dataset.items())]
    skipped = [(s["path"], s["reason"]) for s in dataset.report.get("skipped", [])]
    return IngestedScan(dataset, files, skipped)


def scan_audio_source(path: str | os.PathLike) -> FolderScan | IngestedScan:
    """An ingested dataset (``ingest_report.json`` inside) or a folder of audio files (a bucket folder is read
    from a local mirror in the cache)."""
    if paths.isfile(paths.join(os.fspath(path), REPORT_NAME)):
        return scan_ingested(path)
    if paths.is_url(path) and not paths.isdir(path):
        raise FileNotFoundError(f"audio folder {os.fspath(path)!r} does not exist")
    return scan_audio_folder(paths.local_folder(path))
