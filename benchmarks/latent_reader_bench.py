"""Per-host read speed of pre-encoded latents: our CRC-verifying reader against grain's unverified
``grain.experimental.TFRecordIterDataset`` on the same files, in the same run.

  python benchmarks/latent_reader_bench.py --out docs/results/latent_reader.json

Writes ``--files`` shards of SAO-sized records (``--frames`` x ``--channels`` float32 latents + ``--text-length`` x
``--text-dim`` float16 T5 embeddings, ~450 KB a record) to a temporary directory, then times one pass over all of
them as ``--pairs`` interleaved pairs of passes (ours, grain's, ours, ...) after a warm-up pair (so the files
are in the page cache: this measures the CPU cost of the reader, not the disk):

1. ``read``: records/s of raw record bytes, interleaving the files (``cycle_length`` = ``--files``): ours with both
   CRC32C checksums verified vs grain's reader (no checks).
2. ``pipeline``: records/s through the whole training pipeline of one host (shuffle buffer, parse, random crop of
   ``--crop`` frames, batch of ``--batch``): ``latent_dataset`` vs the same stages on grain's reader.

The figures are the per-pair ratios grain seconds / ours (= our records/s over grain's), median and min-max; a
ratio near 1 means checksum verification is close to free.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import tempfile

import grain
import numpy as np

from common import MIN_DOC_PAIRS, environment, interleaved_pairs, write_report

from stableaudio_jax.data.latent_reader import CropLatents, RawRecord, TFRecordFileIterDataset, latent_dataset
from stableaudio_jax.data.latent_records import LatentRecord, read_manifest, write_manifest
from stableaudio_jax.data.tfrecord import TFRecordWriter


def write_dataset(directory: str, args) -> dict:
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((args.frames, args.channels)).astype(np.float32)
    embeddings = rng.standard_normal((args.text_length, args.text_dim)).astype(np.float16)
    shards, size = [], 0
    for f in range(args.files):
        name = f"latents-{f:05d}-of-{args.files:05d}.tfrecord"
        with TFRecordWriter(os.path.join(directory, name)) as writer:
            for w in range(args.records_per_file):
                record = LatentRecord(latents=latents + w, latent_length=args.frames, seconds_start=w * 47.5,
                                      seconds_total=600.0, text_mask=np.arange(args.text_length) < 20,
                                      text_embeddings=embeddings, caption="a caption", source_id=f"file{f}.wav",
                                      window_index=w)
                data = record.to_bytes()
                size = len(data)
                writer.write(data)
        shards.append({"file": name, "records": args.records_per_file})
    n = args.files * args.records_per_file
    write_manifest(directory, {
        "format": "stableaudio-jax/latents", "version": 1, "encoder_config_hash": "bench", "encoder_config": {},
        "latent_channels": args.channels, "latent_frames": args.frames, "sample_rate": 44100,
        "downsampling_ratio": 2048, "text": "embeddings", "text_length": args.text_length, "text_dim": args.text_dim,
        "shards": shards, "records": n})
    return {"records": n, "files": args.files, "record_bytes": size, "dataset_bytes": size * n}


def _files(directory: str) -> list[str]:
    return [os.path.join(directory, s["file"]) for s in read_manifest(directory)["shards"]]


def ours_read(directory: str) -> grain.IterDataset:
    files = [TFRecordFileIterDataset(p) for p in _files(directory)]
    return grain.experimental.InterleaveIterDataset(files, cycle_length=len(files))


def grain_read(directory: str) -> grain.IterDataset:
    files = [grain.experimental.TFRecordIterDataset(p) for p in _files(directory)]
    return grain.experimental.InterleaveIterDataset(files, cycle_length=len(files))


def ours_pipeline(directory: str, args) -> grain.IterDataset:
    return latent_dataset(directory, args.batch, args.crop, num_epochs=1, shuffle_buffer=args.shuffle_buffer,
                          cycle_length=args.files)


def grain_pipeline(directory: str, args) -> grain.IterDataset:
    """The same stages as ``latent_dataset`` (one epoch), on grain's unverified reader."""
    ds = grain_read(directory).map(lambda data: RawRecord("?", -1, data))
    ds = grain.experimental.WindowShuffleIterDataset(ds, window_size=args.shuffle_buffer, seed=0)
    ds = ds.random_map(CropLatents(read_manifest(directory), args.crop), seed=0)
    return ds.batch(args.batch, drop_remainder=True)


def one_pass(make) -> int:
    """Iterates one pass of the dataset ``make()`` builds; returns the elements seen (blocking until done)."""
    return sum(1 for _ in make())


def compare(make_ours, make_grain, per_element: int, pairs: int) -> dict:
    """One pass of ours against one pass of grain's, as interleaved pairs after a warm-up pair (page cache,
    imports, thread start-up). Both passes read the same records, so the ratio grain seconds / our seconds is
    our records/s over grain's."""
    n = one_pass(make_ours) * per_element
    timing = interleaved_pairs(lambda: one_pass(make_ours), lambda: one_pass(make_grain), pairs)
    summary = timing["summary"]
    return dict(timing, records_per_pass=n, ours_verified_records_per_s=n / summary["ours_s"]["median"],
                grain_unverified_records_per_s=n / summary["reference_s"]["median"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--records-per-file", type=int, default=128)
    parser.add_argument("--frames", type=int, default=1024)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--text-length", type=int, default=128)
    parser.add_argument("--text-dim", type=int, default=768)
    parser.add_argument("--crop", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--shuffle-buffer", type=int, default=64)
    parser.add_argument("--pairs", "--repeats", dest="pairs", type=int, default=MIN_DOC_PAIRS,
                        help="timed interleaved pairs (ours, grain) per figure (--repeats: the older name)")
    parser.add_argument("--out", help="write the JSON here (also printed)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="latent-reader-bench-") as directory:
        data = write_dataset(directory, args)
        read = compare(lambda: ours_read(directory), lambda: grain_read(directory), 1, args.pairs)
        pipe = compare(lambda: ours_pipeline(directory, args), lambda: grain_pipeline(directory, args), args.batch,
                       args.pairs)
    read["ours_verified_mb_per_s"] = read["ours_verified_records_per_s"] * data["record_bytes"] / 1e6
    report = {"benchmark": "latent_reader", **environment(False), "grain": importlib.metadata.version("grain"),
              "dataset": {**data, "latents": [args.frames, args.channels, "float32"],
                          "text_embeddings": [args.text_length, args.text_dim, "float16"]},
              "pipeline_settings": {"batch": args.batch, "crop": args.crop, "shuffle_buffer": args.shuffle_buffer,
                                    "cycle_length": args.files},
              "read": read, "pipeline": pipe}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
