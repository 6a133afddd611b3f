"""Per-host read speed of pre-encoded latents: our CRC-verifying reader against grain's unverified
``grain.experimental.TFRecordIterDataset`` on the same files, in the same run.

  python benchmarks/latent_reader_bench.py --out docs/results/latent_reader.json

Writes ``--files`` shards of SAO-sized records (``--frames`` x ``--channels`` float32 latents + ``--text-length`` x
``--text-dim`` float16 T5 embeddings, ~450 KB a record) to a temporary directory, then times one pass over all of
them, median of ``--repeats`` passes after a warm-up pass (so the files are in the page cache: this measures the
CPU cost of the reader, not the disk):

1. ``read``: records/s of raw record bytes, interleaving the files (``cycle_length`` = ``--files``): ours with both
   CRC32C checksums verified vs grain's reader (no checks).
2. ``pipeline``: records/s through the whole training pipeline of one host (shuffle buffer, parse, random crop of
   ``--crop`` frames, batch of ``--batch``): ``latent_dataset`` vs the same stages on grain's reader.

The figures are the ratios ours / grain's; a ratio near 1 means checksum verification is close to free.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import tempfile
import time

import grain
import numpy as np

from common import environment, write_report

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


def records_per_second(make, per_element: int, repeats: int) -> float:
    def one_pass() -> float:
        start = time.perf_counter()
        n = sum(per_element for _ in make())
        return n / (time.perf_counter() - start)
    one_pass()  # warm-up: page cache, imports, thread start-up
    return float(np.median([one_pass() for _ in range(repeats)]))


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the JSON here (also printed)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="latent-reader-bench-") as directory:
        data = write_dataset(directory, args)
        read = {"ours_verified_records_per_s": records_per_second(lambda: ours_read(directory), 1, args.repeats),
                "grain_unverified_records_per_s": records_per_second(lambda: grain_read(directory), 1,
                                                                     args.repeats)}
        pipe = {"ours_verified_records_per_s": records_per_second(lambda: ours_pipeline(directory, args),
                                                                  args.batch, args.repeats),
                "grain_unverified_records_per_s": records_per_second(lambda: grain_pipeline(directory, args),
                                                                     args.batch, args.repeats)}
    for result in (read, pipe):
        result["ours_over_grain"] = result["ours_verified_records_per_s"] / result["grain_unverified_records_per_s"]
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
