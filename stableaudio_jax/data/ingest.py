"""Ingest a folder of audio files + captions into a TFDS dataset (array_record, so no TensorFlow is needed).

Captions come from exactly one source:

- sidecars (default): ``song.wav`` → ``song.txt`` (the whole text, stripped) or ``song.json`` (key ``sidecar_key``,
  default ``"caption"``, which also accepts ``"text"``); both sidecars for one file is an error;
- a manifest (``captions=``): CSV with a header, or JSONL; column/key ``path`` or ``file`` (relative to the audio
  folder) and ``caption`` or ``text`` (or ``sidecar_key``). Sidecars are then ignored.

A readable file without a caption is an error listing the files, unless ``missing_caption`` is a default caption.
The same records may carry ``source`` and ``license`` (strings): they are kept with each example, counted in the
report and listed in ``items.jsonl`` (one line per example), so a model's training data can be audited.

Audio is stored as **FLAC bytes, 16-bit PCM**, at the target rate and channel count: lossless over int16 (round
trip within 1/32768 after clipping to [-1, 1]) and about half the size of raw int16; TFDS keeps the bytes as an
opaque feature, so no TensorFlow codec is involved; FLAC allows at most 8 channels. Examples keep the sorted path
order (``disable_shuffling``), one ``train`` split. Files that fail to read, are empty or hold non-finite samples
are skipped and listed in ``ingest_report.json`` next to the dataset.
"""
from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import io
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from stableaudio_jax import paths
from stableaudio_jax.audio.io import match_channels, resample
from stableaudio_jax.data.audio_folder import AUDIO_EXTENSIONS, AudioFile, scan_audio_folder

REPORT_NAME = "ingest_report.json"
ITEMS_NAME = "items.jsonl"
PROVENANCE_KEYS = ("source", "license")
SPLIT = "train"
AUDIO_FORMAT = "flac_pcm16"
MAX_LISTED = 20


# ---------------------------------------------------------------------------------------------------- captions

def _caption_keys(sidecar_key: str) -> tuple[str, ...]:
    return (sidecar_key, "text") if sidecar_key == "caption" else (sidecar_key,)


def read_sidecar(audio_path: str, sidecar_key: str = "caption") -> str | None:
    """The caption in ``<stem>.txt`` or ``<stem>.json`` next to ``audio_path``; None when neither exists."""
    stem = os.path.splitext(audio_path)[0]
    txt, js = stem + ".txt", stem + ".json"
    if os.path.isfile(txt) and os.path.isfile(js):
        raise ValueError(f"both {txt!r} and {js!r} exist for {audio_path!r}; keep one caption sidecar")
    if os.path.isfile(txt):
        with open(txt, encoding="utf-8") as f:
            return f.read().strip()
    if not os.path.isfile(js):
        return None
    with open(js, encoding="utf-8") as f:
        try:
            record = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"caption sidecar {js!r} is not valid JSON: {e}") from e
    return _pick_caption(record, _caption_keys(sidecar_key), js)


def _pick_caption(record, keys: tuple[str, ...], where: str) -> str:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object with a caption key {keys}; got {type(record).__name__}")
    for key in keys:
        if key in record:
            if not isinstance(record[key], str):
                raise ValueError(f"{where}: caption {key!r} must be a string; got {record[key]!r}")
            return record[key].strip()
    raise ValueError(f"{where}: no caption key {' / '.join(keys)}; keys present: {sorted(record)}")


def _manifest_records(manifest: str):
    """(line number, dict) for each entry of a CSV (with header) or JSONL manifest."""
    ext = os.path.splitext(manifest)[1].lower()
    if ext not in (".csv", ".jsonl"):
        raise ValueError(f"captions manifest {manifest!r}: expected a .csv (with header) or .jsonl file")
    with open(manifest, encoding="utf-8", newline="") as f:
        if ext == ".csv":
            reader = csv.DictReader(f)
            for row in reader:
                yield reader.line_num, row
            return
        for line_number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield line_number, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{manifest}:{line_number}: not valid JSON: {e}") from e


def read_manifest(manifest: str | os.PathLike, audio_dir: str | os.PathLike,
                  sidecar_key: str = "caption") -> dict[str, str]:
    """``{relative path: caption}`` from a manifest; every entry must name an existing audio file in the folder."""
    manifest, audio_dir = os.fspath(manifest), os.path.abspath(os.fspath(audio_dir))
    if not os.path.isfile(manifest):
        raise FileNotFoundError(f"captions manifest {manifest!r} does not exist")
    caption_keys = tuple(dict.fromkeys((sidecar_key, "caption", "text")))
    captions: dict[str, str] = {}
    for line, record in _manifest_records(manifest):
        where = f"{manifest}:{line}"
        path_key = next((k for k in ("path", "file") if isinstance(record, dict) and record.get(k)), None)
        if path_key is None:
            raise ValueError(f"{where}: no 'path' or 'file' entry in {record!r}")
        rel = _relative(os.path.join(audio_dir, record[path_key]), audio_dir)
        if rel.startswith("../"):
            raise ValueError(f"{where}: {record[path_key]!r} is outside the audio folder {audio_dir!r}")
        if not os.path.isfile(os.path.join(audio_dir, rel)):
            raise ValueError(f"{where}: audio file {record[path_key]!r} does not exist under {audio_dir!r}")
        if not rel.lower().endswith(AUDIO_EXTENSIONS):
            raise ValueError(f"{where}: {rel!r} is not an audio file ({', '.join(AUDIO_EXTENSIONS)})")
        if rel in captions:
            raise ValueError(f"{where}: {rel!r} is listed twice")
        captions[rel] = _pick_caption(record, caption_keys, where)
    return captions


def resolve_captions(files: list[str], audio_dir: str, captions: str | None = None, sidecar_key: str = "caption",
                     missing_caption: str = "error") -> tuple[dict[str, str], int]:
    """``({relative path: caption}, number of files given the default caption)`` for ``files`` (relative paths)."""
    if captions is not None:
        table = read_manifest(captions, audio_dir, sidecar_key)
        found = {rel: table[rel] for rel in files if rel in table}
    else:
        found = {}
        for rel in files:
            caption = read_sidecar(os.path.join(audio_dir, rel), sidecar_key)
            if caption is not None:
                found[rel] = caption
    missing = [rel for rel in files if rel not in found]
    if missing and missing_caption == "error":
        source = f"manifest {captions!r}" if captions else "a .txt or .json sidecar"
        raise ValueError(f"{len(missing)} audio file(s) have no caption in {source} (pass a default caption to "
                         "use one for them): " + ", ".join(missing[:MAX_LISTED])
                         + (" ..." if len(missing) > MAX_LISTED else ""))
    return {rel: found.get(rel, missing_caption) for rel in files}, len(missing)


def _provenance_of(record, where: str) -> dict[str, str]:
    out = {}
    for key in PROVENANCE_KEYS:
        value = record.get(key, "") if isinstance(record, dict) else ""
        if not isinstance(value, str):
            raise ValueError(f"{where}: {key!r} must be a string; got {value!r}")
        out[key] = value
    return out


def resolve_provenance(files: list[str], audio_dir: str, captions: str | None = None) -> dict[str, dict[str, str]]:
    """``{relative path: {"source", "license"}}`` from the manifest's columns or the .json sidecars ("" when
    absent; .txt sidecars carry none)."""
    if captions is not None:
        rows = {}
        for line, record in _manifest_records(os.fspath(captions)):
            path = next((record.get(k) for k in ("path", "file") if isinstance(record, dict) and record.get(k)), None)
            if path is not None:
                rows[_relative(os.path.join(audio_dir, path), audio_dir)] = _provenance_of(record,
                                                                                        f"{captions}:{line}")
        return {rel: rows.get(rel, _provenance_of({}, "")) for rel in files}
    out = {}
    for rel in files:
        js = os.path.splitext(os.path.join(audio_dir, rel))[0] + ".json"
        record = {}
        if os.path.isfile(js):
            with open(js, encoding="utf-8") as f:
                record = json.load(f)
        out[rel] = _provenance_of(record, js)
    return out


def _relative(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


# ---------------------------------------------------------------------------------------------------- audio

def encode_flac(audio: np.ndarray, sample_rate: int) -> bytes:
    """float ``[frames, C]`` → 16-bit FLAC bytes. Quantised here (clip, round to k/32768) so the round trip is
    exact to int16 and independent of libsndfile's float conversion."""
    import soundfile as sf
    pcm = np.clip(np.round(np.asarray(audio, np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, pcm, sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def decode_flac(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf
    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return audio, int(rate)


def read_for_dataset(path: str, sample_rate: int, channels: int) -> np.ndarray:
    """A whole file as float32 ``[frames, channels]`` at ``sample_rate``; ValueError for empty/non-finite audio."""
    import soundfile as sf
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    if audio.shape[0] == 0:
        raise ValueError("no samples")
    if not np.isfinite(audio).all():  # checked before resampling, which would smear a NaN over the file
        raise ValueError("non-finite samples (NaN or inf)")
    return match_channels(resample(audio, int(rate), sample_rate), channels)


def _item_id(source_path: str) -> str:
    """A stable id from the relative path: unchanged when other files are added or removed."""
    return hashlib.sha1(source_path.encode("utf-8")).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- builder

class StableAudioFolder(tfds.core.GeneratorBasedBuilder):
    """Audio folder + captions → examples {audio (FLAC bytes), caption, duration, sample_rate, source_path, id}."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "FLAC 16-bit audio at the target rate and channels, captions, one train split.",
                     "1.1.0": "source and license of every example."}

    def __init__(self, *, audio_dir: str | None = None, captions: str | None = None, sidecar_key: str = "caption",
                 missing_caption: str = "error", sample_rate: int = 44100, channels: int = 2,
                 progress: bool = False, **kwargs):
        self.audio_dir = None if audio_dir is None else os.path.abspath(os.fspath(audio_dir))
        self.caption_settings = dict(captions=None if captions is None else os.fspath(captions),
                                     sidecar_key=sidecar_key, missing_caption=missing_caption)
        self.target_rate, self.target_channels, self.progress = int(sample_rate), int(channels), progress
        self.found, self.written, self.skipped, self.default_captions = 0, [], [], 0
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        # No source file for TFDS to look for a checksums file next to: nothing is downloaded. (TFDS 4.9.10's own
        # lookup also needs the `importlib_resources` backport, which it does not declare as a dependency.)
        return None

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict({
            "audio": tfds.features.Tensor(shape=(), dtype=np.object_, doc="FLAC bytes, 16-bit PCM"),
            "caption": tfds.features.Text(),
            "duration": tfds.features.Scalar(dtype=np.float32, doc="seconds at sample_rate"),
            "sample_rate": tfds.features.Scalar(dtype=np.int32),
            "source_path": tfds.features.Text(doc="relative to the audio folder"),
            "id": tfds.features.Text(),
            "source": tfds.features.Text(doc="where the recording comes from (caption manifest / sidecar)"),
            "license": tfds.features.Text(doc="its licence (caption manifest / sidecar)"),
        })
        metadata = tfds.core.MetadataDict(sample_rate=self.target_rate, channels=self.target_channels,
                                          audio_format=AUDIO_FORMAT)
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=features, metadata=metadata,
                                     disable_shuffling=True)  # keep the sorted path order

    def _split_generators(self, dl_manager):
        if self.audio_dir is None:
            raise ValueError("StableAudioFolder needs audio_dir to build a dataset")
        scan = scan_audio_folder(self.audio_dir)  # sorted, probed; raises for a folder without readable audio
        self.skipped = [(_relative(p, self.audio_dir), reason) for p, reason in scan.skipped]
        self.found = len(scan.files) + len(scan.skipped)
        rels = [_relative(f.path, self.audio_dir) for f in scan.files]
        captions, self.default_captions = resolve_captions(rels, self.audio_dir, **self.caption_settings)
        provenance = resolve_provenance(rels, self.audio_dir, self.caption_settings["captions"])
        return {SPLIT: self._generate_examples(list(zip(scan.files, rels)), captions, provenance)}

    def _generate_examples(self, items: list[tuple[AudioFile, str]], captions: dict[str, str],
                           provenance: dict[str, dict[str, str]]):
        from tqdm.auto import tqdm
        for key, (file, rel) in enumerate(tqdm(items, desc="reading audio", unit=" files",
                                               disable=not self.progress)):
            try:
                audio = read_for_dataset(file.path, self.target_rate, self.target_channels)
            except Exception as e:  # a bad file is reported and skipped, never fatal (libsndfile raises many types)
                self.skipped.append((rel, f"{type(e).__name__}: {e}"))
                continue
            duration = audio.shape[0] / self.target_rate
            self.written.append({"source_path": rel, "id": _item_id(rel), "caption": captions[rel],
                                 "duration": duration, "frames": int(audio.shape[0]), **provenance[rel]})
            # integer keys: with shuffling disabled TFDS orders examples by key, i.e. by sorted path
            yield key, {"audio": encode_flac(audio, self.target_rate), "caption": captions[rel],
                        "duration": np.float32(duration), "sample_rate": self.target_rate, "source_path": rel,
                        "id": _item_id(rel), **provenance[rel]}
        if not self.written:
            raise ValueError(f"no usable audio under {self.audio_dir!r}: all {len(self.skipped)} file(s) skipped: "
                             + "; ".join(f"{p} ({r})" for p, r in self.skipped[:MAX_LISTED]))


# ---------------------------------------------------------------------------------------------------- ingest

def ingest(audio_dir: str | os.PathLike, output_dir: str | os.PathLike, *, captions: str | os.PathLike | None = None,
           sidecar_key: str = "caption", missing_caption: str = "error", sample_rate: int = 44100,
           channels: int = 2, overwrite: bool = False, progress: bool = False) -> dict:
    """Builds the dataset in a temporary sibling of ``output_dir`` and renames it into place when complete, so an
    interrupted run never leaves a dataset that looks finished. Returns the report (also ``ingest_report.json``)."""
    _check_settings(missing_caption, sample_rate, channels)
    output_dir = paths.absolute(output_dir)
    _check_output(output_dir, overwrite)
    shown = paths.absolute(audio_dir)  # the report names the source, not a local mirror of it
    local_audio = paths.local_folder(audio_dir)  # a bucket's audio is mirrored into the cache once
    local_captions = None if captions is None else paths.local_copy(captions)
    with paths.staged_directory(output_dir, marker=REPORT_NAME, tag="incomplete") as staging:
        with _tfds_temporaries():
            builder = StableAudioFolder(audio_dir=local_audio, captions=local_captions, sidecar_key=sidecar_key,
                                        missing_caption=missing_caption, sample_rate=sample_rate, channels=channels,
                                        progress=progress, data_dir=staging, file_format="array_record")
        with _quiet_tfds():
            builder.download_and_prepare()
        report = _build_report(builder, output_dir, shown, None if captions is None else paths.absolute(captions),
                               staging)
        shutil.rmtree(os.path.join(staging, "downloads"), ignore_errors=True)  # TFDS's empty download cache
        with open(os.path.join(staging, REPORT_NAME), "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(staging, ITEMS_NAME), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(item, sort_keys=True) + "\n" for item in builder.written)
    return report


def _check_settings(missing_caption, sample_rate, channels) -> None:
    if not isinstance(missing_caption, str):
        raise ValueError(f"missing_caption must be 'error' or a default caption string; got {missing_caption!r}")
    if int(sample_rate) <= 0:
        raise ValueError(f"sample_rate must be positive; got {sample_rate}")
    if not 1 <= int(channels) <= 8:
        raise ValueError(f"channels must be 1..8 (the FLAC storage's limit); got {channels}")


def _is_dataset_dir(path: str) -> bool:
    return paths.isfile(paths.join(path, REPORT_NAME)) or paths.isdir(_dataset_subdir(path))


def _check_output(output_dir: str, overwrite: bool) -> None:
    if not paths.exists(output_dir) or (paths.isdir(output_dir) and not paths.listdir(output_dir)):
        return
    if not _is_dataset_dir(output_dir):  # never delete a folder we did not write, even with overwrite
        raise ValueError(f"output {output_dir!r} exists and is not an ingested dataset; choose a new or empty folder")
    if not overwrite:
        raise ValueError(f"output {output_dir!r} already holds a dataset; pass overwrite=True (--overwrite) to "
                         "rebuild it")


@contextlib.contextmanager
def _tfds_temporaries():
    """A new TFDS builder makes an empty temporary folder it never removes (DatasetInfo.initialize_from_bucket);
    make it in one of ours, removed after."""
    scratch = tempfile.mkdtemp(prefix="stableaudio_jax-tfds-")
    saved, tempfile.tempdir = tempfile.tempdir, scratch
    try:
        yield
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _quiet_tfds():
    """TFDS prints a 'Downloading and preparing' line on stdout and draws its own bars; ours is enough."""
    from tensorflow_datasets.core.utils import tqdm_utils
    was_active = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        tfds.display_progress_bar(was_active)


def _build_report(builder: StableAudioFolder, output_dir: str, audio_dir: str, captions: str | None,
                  staging: str) -> dict:
    settings = builder.caption_settings
    return {
        "audio_dir": audio_dir,
        "output_dir": output_dir,
        "dataset_subdir": os.path.relpath(_dataset_subdir(staging), staging),
        "split": SPLIT,
        "sample_rate": builder.target_rate,
        "channels": builder.target_channels,
        "audio_format": AUDIO_FORMAT,
        "caption_source": "manifest" if settings["captions"] else "sidecar",
        "captions_manifest": captions,
        "sidecar_key": settings["sidecar_key"],
        "default_captions": builder.default_captions,
        "files_found": builder.found,
        "files_written": len(builder.written),
        "files_skipped": len(builder.skipped),
        "skipped": [{"path": p, "reason": r} for p, r in builder.skipped],
        "total_hours": sum(item["duration"] for item in builder.written) / 3600,
        "licenses": _counts(item["license"] or "(none given)" for item in builder.written),
        "items_index": ITEMS_NAME,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _counts(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------------- reading

def _dataset_subdir(output_dir: str) -> str:
    """The dataset's version folder: this version's, else the one an earlier version wrote."""
    root = paths.join(output_dir, StableAudioFolder.name)
    current = paths.join(root, str(StableAudioFolder.VERSION))
    if paths.isdir(current) or not paths.isdir(root):
        return current
    older = [d for d in paths.listdir(root) if paths.isfile(paths.join(root, d, "dataset_info.json"))]
    return paths.join(root, older[-1]) if older else current


class AudioDataset:
    """Random access to an ingested dataset: ``ds[i]`` → {audio float32 [frames, channels] in [-1, 1], caption,
    duration, sample_rate, source_path, id}. Items are in sorted source-path order. A dataset in a bucket is read
    from a local mirror in the cache (array_record reads local files only)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = paths.absolute(output_dir)
        hint = f"run `stableaudio-jax ingest --audio DIR --out {self.output_dir}` first"
        if paths.is_url(self.output_dir):
            if not paths.isfile(paths.join(self.output_dir, REPORT_NAME)):
                raise FileNotFoundError(f"{self.output_dir!r} is not an ingested audio dataset (no {REPORT_NAME}); "
                                        f"{hint}")
            self._local = paths.local_folder(self.output_dir)
        else:
            self._local = self.output_dir
        path = _dataset_subdir(self._local)
        if not os.path.isfile(os.path.join(path, "dataset_info.json")):
            raise FileNotFoundError(f"{self.output_dir!r} is not an ingested audio dataset (no {path}); {hint}")
        try:
            builder = tfds.builder_from_directory(path)
            self._source = builder.as_data_source(split=SPLIT)
        except Exception as e:  # TFDS raises assorted types for damaged metadata; name the folder and the fix
            raise ValueError(f"cannot open the audio dataset in {path!r} ({type(e).__name__}: {e}); {hint}") from e
        metadata = builder.info.metadata or {}
        self.sample_rate, self.channels = int(metadata["sample_rate"]), int(metadata["channels"])
        report = os.path.join(self._local, REPORT_NAME)
        self.report = {}
        if os.path.isfile(report):
            with open(report) as f:
                self.report = json.load(f)
        self._items = None

    def items(self) -> list[dict]:
        """Per example, without its audio: source_path, id, caption, duration, frames, source, license (from
        ``items.jsonl``; datasets ingested before it existed are read once in full)."""
        if self._items is None:
            path = os.path.join(self._local, ITEMS_NAME)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    self._items = [json.loads(line) for line in f if line.strip()]
            else:
                self._items = []
                for i in range(len(self)):
                    item = self[i]
                    audio = item.pop("audio")
                    self._items.append(dict(item, frames=int(audio.shape[0])))
            if len(self._items) != len(self):
                raise ValueError(f"{path}: {len(self._items)} entries for {len(self)} examples; re-run ingest")
        return self._items

    def __len__(self) -> int:
        return len(self._source)

    def read_window(self, index: int, start: int, frames: int) -> np.ndarray:
        """float32 ``[<= frames, channels]`` of example ``index`` from sample ``start`` (FLAC seeks: the rest of
        the file is not decoded)."""
        import soundfile as sf
        data = self._source[index]["audio"]
        audio, _ = sf.read(io.BytesIO(data), start=start, frames=frames, dtype="float32", always_2d=True)
        return audio

    def __getitem__(self, index: int) -> dict:
        index = range(len(self))[index]  # negative indices; IndexError past the end (ends plain iteration)
        record = self._source[index]
        audio, rate = decode_flac(record["audio"])
        return {"audio": audio, "caption": _text(record["caption"]), "duration": float(record["duration"]),
                "sample_rate": int(rate), "source_path": _text(record["source_path"]), "id": _text(record["id"]),
                **{k: _text(record[k]) if k in record else "" for k in PROVENANCE_KEYS}}


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_audio_dataset(output_dir: str | os.PathLike) -> AudioDataset:
    """Opens a dataset written by :func:`ingest` (no TensorFlow needed)."""
    return AudioDataset(output_dir)
