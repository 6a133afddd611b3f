"""Per-host training reader for pre-encoded latents (``stableaudio-jax encode`` output), built on grain.

Pipeline on each host (no TensorFlow)::

    this host's shard files ─▶ verified TFRecord readers (CRC32C checked) ─▶ interleave (cycle_length files)
      ─▶ window shuffle (shuffle_buffer records) ─▶ epochs (file order and shuffle reseeded per epoch)
      ─▶ parse + random crop (seeded per element) ─▶ batch of batch_size (this host's rows of the global batch)

Sharding: with at least as many shard files as hosts, host ``p`` reads files ``[p::process_count]``; with fewer,
every host reads every file and keeps the records whose dataset-wide index (shard offset from the manifest + index
in the file) is ``p`` modulo ``process_count``. Either way each record is read by exactly one host per epoch.

Every position is checkpointable: ``it.get_state()`` is a JSON-able dict (file record index + byte offset, interleave
and shuffle positions, epoch, crop RNG counter) and ``it.set_state(state)`` on a fresh iterator continues the exact
stream.

Corrupt data: ``on_corrupt="raise"`` raises :class:`CorruptRecordError` naming the file, record and byte offset.
``"skip"`` logs a warning, counts it in a :class:`CorruptionLog` (``CORRUPTION_LOG`` unless one is passed;
``latent_dataset(...).corruption_log`` too) and goes on: after a bad data checksum with the next record (the
length framing is still trusted), after a bad length or a truncated file with the next file. Records are read ahead
by prefetch threads, so the count can run a few records ahead of what training has consumed.

Crops keep the timing right (stable-audio-tools PR #219: cropping pre-encoded latents left ``seconds_start``
at the window's start): a crop at latent offset ``o`` reports ``floor(seconds_start + o * downsampling_ratio /
sample_rate)``; ``seconds_total`` is ``ceil`` of the file's duration, integer seconds as the timing conditioners use.

Batch (per host, ``B = batch_size``): ``latents`` [B, crop, C] float32, ``padding_mask`` [B, crop] bool,
``seconds_start`` [B] float32, ``seconds_total`` [B] float32, ``text_mask`` [B, L] bool, and ``text_embeddings``
[B, L, D] float32 or ``text_ids`` [B, L] int32. Strings stay out of training batches (they cannot go to devices);
``with_metadata=True`` adds ``source_id`` and ``caption`` (numpy unicode arrays) and ``window_index`` [B] int64.
"""
from __future__ import annotations

import logging
import math
import os
import threading
from typing import Callable, NamedTuple

import grain
import numpy as np

from stableaudio_jax import paths
from stableaudio_jax.data.latent_records import LatentRecord, read_manifest, validate_manifest
from stableaudio_jax.data.tfrecord import CorruptRecordError, TFRecordReader

logger = logging.getLogger(__name__)


class RawRecord(NamedTuple):
    path: str
    index: int  # record index within the file
    data: bytes


class CorruptionLog:
    """Thread-safe tally of skipped corrupt records (file readers run in grain's prefetch threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.events: list[dict] = []

    def record(self, error: CorruptRecordError) -> None:
        with self._lock:
            self.events.append({"file": error.path, "record": error.record_index, "offset": error.offset,
                                "reason": error.reason})

    @property
    def count(self) -> int:
        return len(self.events)


CORRUPTION_LOG = CorruptionLog()  # the process-wide default


def corrupt_record_count() -> int:
    """Corrupt records skipped so far in this process by readers using the default log."""
    return CORRUPTION_LOG.count


# --- one verified TFRecord file -------------------------------------------------------------------------------

class TFRecordFileIterDataset(grain.IterDataset):
    """The records of one TFRecord file with checksums verified, as :class:`RawRecord`.

    ``row_shard=(count, index, base)`` keeps only the records with ``(base + record_index) % count == index``
    (the others are stepped over with a seek, unread). State: ``{"record_index", "offset", "done"}``."""

    def __init__(self, path: str, *, on_corrupt: str = "raise", row_shard: tuple[int, int, int] | None = None,
                 log: CorruptionLog | None = None):
        super().__init__()
        self.path, self.on_corrupt, self.row_shard = path, on_corrupt, row_shard
        self.log = CORRUPTION_LOG if log is None else log

    def __iter__(self) -> "_TFRecordFileIterator":
        return _TFRecordFileIterator(self)

    def __str__(self) -> str:
        return f"TFRecordFileIterDataset({self.path})"


class _TFRecordFileIterator(grain.DatasetIterator):
    def __init__(self, ds: TFRecordFileIterDataset):
        super().__init__()
        self._ds = ds
        self._reader: TFRecordReader | None = None  # opened on first use: interleave makes iterators ahead
        self._position, self._done = (0, 0), False

    def _owned(self, index: int) -> bool:
        if self._ds.row_shard is None:
            return True
        count, mine, base = self._ds.row_shard
        return (base + index) % count == mine

    def __next__(self) -> RawRecord:
        while not self._done:
            if self._reader is None:
                self._reader = TFRecordReader(self._ds.path)
                self._reader.seek(*self._position)
            index = self._reader.record_index
            try:
                if self._owned(index):
                    data = self._reader.read_next()
                    if data is not None:
                        return RawRecord(self._ds.path, index, data)
                elif self._reader.skip_next():
                    continue
                self._done = True  # clean end of file
            except CorruptRecordError as error:
                self._corrupt(error)
        raise StopIteration

    def _corrupt(self, error: CorruptRecordError) -> None:
        if self._ds.on_corrupt == "raise":
            raise error
        self._ds.log.record(error)
        self._done = not error.resumable
        logger.warning("skipping corrupt data: %s (%s)", error,
                       "continuing with the next record" if error.resumable else "rest of the file dropped")

    def get_state(self) -> dict:
        if self._reader is not None:
            self._position = (self._reader.record_index, self._reader.offset)
        return {"record_index": self._position[0], "offset": self._position[1], "done": int(self._done)}

    def set_state(self, state: dict) -> None:
        self._close_reader()
        self._position, self._done = (int(state["record_index"]), int(state["offset"])), bool(state["done"])

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def close(self) -> None:
        self._close_reader()
        super().close()


# --- epochs -------------------------------------------------------------------------------------------------------

class _EpochsIterDataset(grain.IterDataset):
    """Chains ``make_epoch(0), make_epoch(1), ...`` (``num_epochs`` of them, or endless): unlike grain's repeat,
    each epoch is a new dataset, so file order and shuffling change every epoch."""

    def __init__(self, make_epoch: Callable[[int], grain.IterDataset], num_epochs: int | None, name: str):
        super().__init__()
        self._make_epoch, self._num_epochs, self._name = make_epoch, num_epochs, name

    def __iter__(self) -> "_EpochsIterator":
        return _EpochsIterator(self._make_epoch, self._num_epochs, self._name)


class _EpochsIterator(grain.DatasetIterator):
    def __init__(self, make_epoch, num_epochs, name):
        super().__init__()
        self._make_epoch, self._num_epochs, self._name = make_epoch, num_epochs, name
        self._epoch, self._yielded, self._inner = 0, 0, None

    def __next__(self):
        while self._num_epochs is None or self._epoch < self._num_epochs:
            if self._inner is None:
                self._inner = iter(self._make_epoch(self._epoch))
            try:
                element = next(self._inner)
                self._yielded += 1
                return element
            except StopIteration:
                if self._yielded == 0:  # an endless run would spin here forever
                    raise ValueError(f"{self._name}: epoch {self._epoch} has no records for this host") from None
                self._close_inner()
                self._epoch, self._yielded = self._epoch + 1, 0
        raise StopIteration

    def get_state(self) -> dict:
        inner = None if self._inner is None else self._inner.get_state()
        return {"epoch": self._epoch, "yielded": self._yielded, "inner": inner}

    def set_state(self, state: dict) -> None:
        self._close_inner()
        self._epoch, self._yielded = int(state["epoch"]), int(state["yielded"])
        if state["inner"] is not None:
            self._inner = iter(self._make_epoch(self._epoch))
            self._inner.set_state(state["inner"])

    def _close_inner(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None

    def close(self) -> None:
        self._close_inner()
        super().close()


# --- crops --------------------------------------------------------------------------------------------------------

def crop_record(record: LatentRecord, crop_frames: int, offset: int, downsampling_ratio: int, sample_rate: int,
                with_metadata: bool = False) -> dict:
    """The training example for the crop of ``crop_frames`` latent frames starting at ``offset`` (zero-padded,
    mask 0, past the record's end), with the crop's own timing."""
    window = record.latents[offset:offset + crop_frames]
    latents = np.zeros((crop_frames, record.latents.shape[1]), np.float32)  # one copy: cast and pad together
    latents[:len(window)] = window
    mask = np.zeros(crop_frames, bool)
    mask[:len(window)] = record.padding_mask[offset:offset + crop_frames]
    example = {
        "latents": latents,
        "padding_mask": mask,
        # Python floats (float64): the offset's time is added before flooring, as in the audio-crop path.
        "seconds_start": np.float32(math.floor(record.seconds_start + offset * downsampling_ratio / sample_rate)),
        "seconds_total": np.float32(math.ceil(record.seconds_total)),
        "text_mask": record.text_mask.astype(bool)}
    if record.text_ids is not None:
        example["text_ids"] = record.text_ids.astype(np.int32)
    else:
        example["text_embeddings"] = record.text_embeddings.astype(np.float32)
    if with_metadata:
        example.update(source_id=np.str_(record.source_id), caption=np.str_(record.caption),
                       window_index=np.int64(record.window_index))
    return example


class CropLatents(grain.transforms.RandomMap):
    """:class:`RawRecord` → a training example: parse, check the shapes against the manifest, random crop."""

    def __init__(self, manifest: dict, crop_frames: int, with_metadata: bool = False):
        self.crop_frames, self.with_metadata = crop_frames, with_metadata
        self.ratio, self.rate = int(manifest["downsampling_ratio"]), int(manifest["sample_rate"])
        self.channels, self.text = int(manifest["latent_channels"]), manifest["text"]
        self.text_shape = (manifest["text_length"],) + ((manifest["text_dim"],) if self.text == "embeddings" else ())

    def _check(self, record: LatentRecord, where: str) -> None:
        if record.latents.shape[1] != self.channels:
            raise ValueError(f"{where}: latents have {record.latents.shape[1]} channels, the manifest says "
                             f"{self.channels}")
        text = record.text_embeddings if self.text == "embeddings" else record.text_ids
        if text is None or text.shape != self.text_shape:
            found = "the other text form" if text is None else f"shape {list(text.shape)}"
            raise ValueError(f"{where}: text {self.text} has {found}, the manifest says {list(self.text_shape)}")

    def random_map(self, raw: RawRecord, rng: np.random.Generator) -> dict:
        where = f"{raw.path} record {raw.index}"
        record = LatentRecord.from_bytes(raw.data, where=where)
        self._check(record, where)
        offset = int(rng.integers(0, max(record.latent_length - self.crop_frames, 0) + 1))
        return crop_record(record, self.crop_frames, offset, self.ratio, self.rate, self.with_metadata)


# --- the dataset --------------------------------------------------------------------------------------------------

def host_shards(shards: list[dict], process_index: int, process_count: int) -> list[tuple[str, tuple | None]]:
    """This host's ``(file, row_shard)`` pairs: whole files when there are enough of them, else every file with a
    row shard keyed on the dataset-wide record index."""
    if len(shards) >= process_count:
        return [(s["file"], None) for s in shards[process_index::process_count]]
    bases = np.cumsum([0] + [int(s["records"]) for s in shards])[:-1]
    return [(s["file"], (process_count, process_index, int(b))) for s, b in zip(shards, bases)]


def _seed(*parts: int) -> int:
    # 31 bits: grain's window shuffle adds the window index to its seed.
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0] >> 1)


def latent_dataset(directory: str | os.PathLike, batch_size: int, crop_frames: int, *, seed: int = 0,
                   process_index: int = 0, process_count: int = 1, shuffle_buffer: int = 256,
                   on_corrupt: str = "raise", num_epochs: int | None = None, latent_channels: int | None = None,
                   encoder_config_hash: str | None = None, cycle_length: int = 8, drop_remainder: bool = True,
                   with_metadata: bool = False, corruption_log: CorruptionLog | None = None) -> grain.IterDataset:
    """This host's stream of batches of random latent crops (see the module docstring). ``num_epochs=None`` is
    endless; a finite run ends with a partial batch unless ``drop_remainder``."""
    if on_corrupt not in ("raise", "skip"):
        raise ValueError(f"on_corrupt is {on_corrupt!r}, expected 'raise' or 'skip'")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is outside [0, {process_count})")
    if batch_size < 1 or crop_frames < 1:
        raise ValueError(f"batch_size {batch_size} and crop_frames {crop_frames} must be positive")
    directory = paths.absolute(directory)
    manifest = read_manifest(directory)
    validate_manifest(manifest, directory, latent_channels=latent_channels, encoder_config_hash=encoder_config_hash)
    shards = host_shards(manifest["shards"], process_index, process_count)
    files = [f for f, _ in shards]
    logger.info("process %d of %d reads %d of %d shard files of %s%s: %s", process_index, process_count, len(files),
                len(manifest["shards"]), directory, " (every file, its own rows)" if shards and shards[0][1] else "",
                ", ".join(files[:4]) + (f", ... {files[-1]}" if len(files) > 4 else ""))
    log = CORRUPTION_LOG if corruption_log is None else corruption_log

    def make_epoch(epoch: int) -> grain.IterDataset:
        order = np.random.default_rng(_seed(seed, process_index, epoch, 0)).permutation(len(shards))
        files = [TFRecordFileIterDataset(paths.join(directory, shards[i][0]), on_corrupt=on_corrupt,
                                         row_shard=shards[i][1], log=log) for i in order]
        ds = grain.experimental.InterleaveIterDataset(files, cycle_length=min(cycle_length, len(files)))
        if shuffle_buffer > 1:
            ds = grain.experimental.WindowShuffleIterDataset(ds, window_size=shuffle_buffer,
                                                             seed=_seed(seed, process_index, epoch, 1))
        return ds

    name = f"{directory} (process {process_index} of {process_count})"
    ds = _EpochsIterDataset(make_epoch, num_epochs, name)
    ds = ds.random_map(CropLatents(manifest, crop_frames, with_metadata), seed=_seed(seed, process_index, 2))
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds.corruption_log = log
    return ds


# --- synthetic batches --------------------------------------------------------------------------------------------

class _IndexedIterDataset(grain.IterDataset):
    """``fn(0), fn(1), ...`` forever; the state is the next index."""

    def __init__(self, fn: Callable[[int], dict]):
        super().__init__()
        self._fn = fn

    def __iter__(self) -> "_IndexedIterator":
        return _IndexedIterator(self._fn)


class _IndexedIterator(grain.DatasetIterator):
    def __init__(self, fn):
        super().__init__()
        self._fn, self._next = fn, 0

    def __next__(self) -> dict:
        self._next += 1
        return self._fn(self._next - 1)

    def get_state(self) -> dict:
        return {"next": self._next}

    def set_state(self, state: dict) -> None:
        self._next = int(state["next"])


def synthetic_latent_dataset(batch_size: int, crop_frames: int, latent_channels: int, text_length: int,
                             text_dim: int | None, seed: int = 0, vocab_size: int = 32128) -> grain.IterDataset:
    """Endless random batches with the keys and dtypes of :func:`latent_dataset` (no files; for benchmarks).
    ``text_dim=None`` gives the ``text_ids`` form. Batch ``n`` depends only on ``(seed, n)``."""
    def batch(step: int) -> dict:
        rng = np.random.default_rng([seed, step])
        total = rng.integers(1, 300, batch_size)
        lengths = rng.integers(1, text_length + 1, batch_size)
        out = {"latents": rng.standard_normal((batch_size, crop_frames, latent_channels), np.float32),
               "padding_mask": np.ones((batch_size, crop_frames), bool),
               "seconds_start": np.floor(rng.random(batch_size) * total).astype(np.float32),
               "seconds_total": total.astype(np.float32),
               "text_mask": np.arange(text_length)[None, :] < lengths[:, None]}
        if text_dim is None:
            out["text_ids"] = rng.integers(2, vocab_size, (batch_size, text_length)).astype(np.int32)
        else:
            out["text_embeddings"] = rng.standard_normal((batch_size, text_length, text_dim), np.float32)
        return out

    return _IndexedIterDataset(batch)
