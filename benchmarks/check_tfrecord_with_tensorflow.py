"""Checks that our pure-Python TFRecord / tf.train.Example files are what TensorFlow itself reads and writes.

  python3 -m venv /tmp/tfvenv && /tmp/tfvenv/bin/pip install tensorflow-cpu numpy ml_dtypes google-crc32c \
      tensorflow-datasets
  PYTHONPATH=. /tmp/tfvenv/bin/python benchmarks/check_tfrecord_with_tensorflow.py \
      --out docs/results/tfrecord_tensorflow_check.json

TensorFlow is not a dependency of the project (1.5 GB); this script runs in a throw-away environment.

1. Writes LatentRecords (float32 / float16 / bfloat16 latents, text embeddings and token-id forms) with our writer,
   reads them with ``tf.data.TFRecordDataset`` (which verifies both CRC32C checksums) and
   ``tf.io.parse_single_example``, and compares every feature with what was written.
2. Flips one byte of a record's data: TensorFlow must refuse the file (its checksum check sees what ours sees).
3. Writes records with ``tf.io.TFRecordWriter`` and reads them back with our verifying reader: same bytes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import ml_dtypes
import numpy as np

from stableaudio_jax.data.latent_records import LatentRecord
from stableaudio_jax.data.tfrecord import TFRecordWriter, iter_records, masked_crc32c


def _records() -> list[LatentRecord]:
    rng = np.random.default_rng(0)
    out = []
    for i, dtype in enumerate([np.float32, np.float16, ml_dtypes.bfloat16, np.float32]):
        frames, channels, length = 32, 8, 7
        ids = i == 3
        out.append(LatentRecord(
            latents=rng.standard_normal((frames, channels)).astype(dtype), latent_length=frames - 5 * i,
            seconds_start=12.5 * i, seconds_total=123.456 + i, text_mask=np.arange(length) < 4 + i,
            text_embeddings=None if ids else rng.standard_normal((length, 16)).astype(dtype),
            text_ids=rng.integers(0, 32000, length) if ids else None,
            caption=f"caption {i} ünïcode", source_id=f"dir/file_{i}.wav", window_index=i))
    return out


def _tf_features(tf, ids: bool) -> dict:
    f = {name: tf.io.FixedLenFeature([], tf.string) for name in
         ("latents", "latents_dtype", "padding_mask", "text_mask", "caption", "source_id")}
    f.update(latents_shape=tf.io.FixedLenFeature([2], tf.int64), latent_length=tf.io.FixedLenFeature([], tf.int64),
             window_index=tf.io.FixedLenFeature([], tf.int64), seconds_start=tf.io.FixedLenFeature([], tf.float32),
             seconds_total=tf.io.FixedLenFeature([], tf.float32))
    if ids:
        f["text_ids"] = tf.io.VarLenFeature(tf.int64)
    else:
        f.update(text_embeddings=tf.io.FixedLenFeature([], tf.string),
                 text_embeddings_shape=tf.io.FixedLenFeature([2], tf.int64),
                 text_embeddings_dtype=tf.io.FixedLenFeature([], tf.string))
    return f


def _compare(tf, parsed: dict, record: LatentRecord) -> list[str]:
    """The features TensorFlow decoded that differ from the record (empty when all agree)."""
    dtypes = {b"float32": tf.float32, b"float16": tf.float16, b"bfloat16": tf.bfloat16}
    bad = []
    latents = tf.io.decode_raw(parsed["latents"], dtypes[parsed["latents_dtype"].numpy()], little_endian=True)
    latents = tf.reshape(latents, parsed["latents_shape"]).numpy()
    checks = {
        "latents": np.array_equal(latents.astype(np.float32), record.latents.astype(np.float32)),
        "latents_dtype": parsed["latents_dtype"].numpy().decode() == np.dtype(record.latents.dtype).name,
        "latent_length": int(parsed["latent_length"]) == record.latent_length,
        "padding_mask": np.array_equal(tf.io.decode_raw(parsed["padding_mask"], tf.uint8).numpy(),
                                       record.padding_mask.astype(np.uint8)),
        "text_mask": np.array_equal(tf.io.decode_raw(parsed["text_mask"], tf.uint8).numpy(),
                                    record.text_mask.astype(np.uint8)),
        "seconds_start": float(parsed["seconds_start"]) == np.float32(record.seconds_start),
        "seconds_total": float(parsed["seconds_total"]) == np.float32(record.seconds_total),
        "caption": parsed["caption"].numpy().decode("utf-8") == record.caption,
        "source_id": parsed["source_id"].numpy().decode("utf-8") == record.source_id,
        "window_index": int(parsed["window_index"]) == record.window_index}
    if record.text_ids is not None:
        checks["text_ids"] = np.array_equal(tf.sparse.to_dense(parsed["text_ids"]).numpy(), record.text_ids)
    else:
        emb = tf.io.decode_raw(parsed["text_embeddings"], dtypes[parsed["text_embeddings_dtype"].numpy()])
        emb = tf.reshape(emb, parsed["text_embeddings_shape"]).numpy()
        checks["text_embeddings"] = np.array_equal(emb.astype(np.float32),
                                                   record.text_embeddings.astype(np.float32))
    bad.extend(name for name, ok in checks.items() if not ok)
    return bad


def ours_to_tensorflow(tf, directory: str) -> dict:
    records = _records()
    path = os.path.join(directory, "ours.tfrecord")
    with TFRecordWriter(path) as writer:
        for r in records:
            writer.write(r.to_bytes())
    mismatches = {}
    read = 0
    for i, raw in enumerate(tf.data.TFRecordDataset(path)):
        parsed = tf.io.parse_single_example(raw, _tf_features(tf, records[i].text_ids is not None))
        read += 1
        if bad := _compare(tf, parsed, records[i]):
            mismatches[i] = bad
    return {"records_written": len(records), "records_read_by_tensorflow": read, "mismatched_features": mismatches,
            "latent_dtypes": [np.dtype(r.latents.dtype).name for r in records]}


def corrupted_rejected_by_tensorflow(tf, directory: str) -> dict:
    path = os.path.join(directory, "corrupt.tfrecord")
    with TFRecordWriter(path) as writer:
        for r in _records():
            writer.write(r.to_bytes())
    data = bytearray(open(path, "rb").read())
    data[40] ^= 0x01  # inside the first record's data
    open(path, "wb").write(bytes(data))
    try:
        n = sum(1 for _ in tf.data.TFRecordDataset(path))
        return {"tensorflow_rejected_flipped_byte": False, "records_read": n}
    except tf.errors.DataLossError as e:
        return {"tensorflow_rejected_flipped_byte": True, "tensorflow_error": str(e).splitlines()[0][:200]}


def tensorflow_to_ours(tf, directory: str) -> dict:
    path = os.path.join(directory, "theirs.tfrecord")
    payloads = [b"", b"a", bytes(range(256)) * 17] + [r.to_bytes() for r in _records()]
    with tf.io.TFRecordWriter(path) as writer:
        for p in payloads:
            writer.write(p)
    ours = [data for _, _, data in iter_records(path, verify=True)]
    parsed_ok = all(LatentRecord.from_bytes(p).source_id == r.source_id for p, r in zip(ours[3:], _records()))
    return {"records_written_by_tensorflow": len(payloads), "records_read_by_us": len(ours),
            "identical_bytes": ours == payloads, "parsed_by_latent_record": parsed_ok}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the JSON here (also printed)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as directory:
        report = {"check": "tfrecord_with_tensorflow", "versions": {"tensorflow": tf.__version__,
                                                                    "numpy": np.__version__},
                  "masked_crc32c_of_empty": masked_crc32c(b""),
                  "ours_read_by_tensorflow": ours_to_tensorflow(tf, directory),
                  "corruption": corrupted_rejected_by_tensorflow(tf, directory),
                  "tensorflow_read_by_us": tensorflow_to_ours(tf, directory)}
    ok = (report["ours_read_by_tensorflow"]["records_read_by_tensorflow"] == 4
          and not report["ours_read_by_tensorflow"]["mismatched_features"]
          and report["corruption"]["tensorflow_rejected_flipped_byte"]
          and report["tensorflow_read_by_us"]["identical_bytes"]
          and report["tensorflow_read_by_us"]["parsed_by_latent_record"])
    report["ok"] = bool(ok)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
