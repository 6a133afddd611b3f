"""Pre-encoded latent records and the per-host reader: schema round trips, manifest checks, every record read by
exactly one host (in-process and with two real jax.distributed processes), exact resume, crop timing, corrupt data."""
import json
import math
import os
import socket
import subprocess
import sys
from collections import Counter

import ml_dtypes
import numpy as np
import pytest
from helpers import assert_interleaved_pairs

from stableaudio_jax.data.latent_reader import CorruptionLog, latent_dataset, synthetic_latent_dataset
from stableaudio_jax.data.latent_records import (LatentRecord, config_hash, read_manifest, validate_manifest,
                                                 write_manifest)
from stableaudio_jax.data.tfrecord import (CorruptRecordError, TFRecordWriter, iter_records, make_example,
                                           parse_example)

WORKER = os.path.join(os.path.dirname(__file__), "latent_reader_worker.py")


def _record(i, *, frames=16, channels=4, latent_length=None, text="ids", text_length=3, text_dim=5,
            dtype=np.float32, seconds_start=None, seconds_total=100.0, source_id="s", window_index=0):
    # Row r of the latents holds r*channels .. r*channels+channels-1: a crop's offset is readable from its values.
    latents = np.arange(frames * channels, dtype=np.float32).reshape(frames, channels).astype(dtype)
    rng = np.random.default_rng(i)
    return LatentRecord(
        latents=latents, latent_length=frames if latent_length is None else latent_length,
        seconds_start=float(window_index) if seconds_start is None else seconds_start, seconds_total=seconds_total,
        text_mask=np.arange(text_length) < 2,
        text_ids=rng.integers(0, 100, text_length) if text == "ids" else None,
        text_embeddings=rng.standard_normal((text_length, text_dim)).astype(dtype) if text != "ids" else None,
        caption=f"caption {i}", source_id=source_id, window_index=window_index)


def write_dataset(directory, files=3, per_file=6, *, text="ids", frames=16, channels=4, text_length=3, text_dim=5,
                  ratio=2048, rate=44100, **record_kwargs):
    os.makedirs(directory, exist_ok=True)
    shards, n = [], 0
    for f in range(files):
        name = f"latents-{f:05d}-of-{files:05d}.tfrecord"
        with TFRecordWriter(os.path.join(directory, name)) as writer:
            for w in range(per_file):
                writer.write(_record(n, frames=frames, channels=channels, text=text, text_length=text_length,
                                     text_dim=text_dim, source_id=f"file{f}.wav", window_index=w,
                                     **record_kwargs).to_bytes())
                n += 1
        shards.append({"file": name, "records": per_file})
    write_manifest(directory, {
        "format": "stableaudio-jax/latents", "version": 1, "encoder_config_hash": "0123456789abcdef",
        "latent_channels": channels, "latent_frames": frames, "sample_rate": rate, "downsampling_ratio": ratio,
        "text": text, "text_length": text_length, "text_dim": text_dim if text == "embeddings" else None,
        "shards": shards, "records": n, "encoder_config": {"vae": "test"}})
    return str(directory)


def _ids(ds):
    return [(str(s), int(w)) for batch in ds for s, w in zip(batch["source_id"], batch["window_index"])]


def _epoch(directory, process_index, process_count, **kwargs):
    return _ids(latent_dataset(directory, 4, 8, process_index=process_index, process_count=process_count,
                               num_epochs=1, drop_remainder=False, with_metadata=True, **kwargs))


# --- records and manifest -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("text", ["ids", "embeddings"])
def test_latent_record_round_trip(dtype, text):
    rec = _record(3, dtype=dtype, text=text, latent_length=11, seconds_start=12.75, seconds_total=301.5,
                  source_id="a/ü.flac", window_index=9)
    rec.latents = (np.random.default_rng(0).standard_normal(rec.latents.shape) * 3).astype(dtype)
    back = LatentRecord.from_bytes(rec.to_bytes(), where="x")
    assert back.latents.dtype == np.dtype(dtype) and back.latents.shape == (16, 4)
    np.testing.assert_array_equal(back.latents.view(np.uint8), rec.latents.view(np.uint8))  # bit exact
    assert back.latent_length == 11 and back.padding_mask.tolist() == [True] * 11 + [False] * 5
    assert (back.seconds_start, back.seconds_total, back.window_index) == (12.75, 301.5, 9)
    assert back.source_id == "a/ü.flac" and back.caption == "caption 3"
    assert back.text_mask.tolist() == [True, True, False]
    if text == "ids":
        assert back.text_embeddings is None and back.text_ids.tolist() == rec.text_ids.tolist()
    else:
        assert back.text_ids is None and back.text_embeddings.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(back.text_embeddings.view(np.uint8), rec.text_embeddings.view(np.uint8))


def test_latent_record_errors_name_the_feature_and_place():
    good = parse_example(_record(0).to_bytes())
    features = {k: (v if isinstance(v, list) else v.tolist()) for k, v in good.items()}
    broken = make_example({k: v for k, v in features.items() if k != "latent_length"})
    with pytest.raises(ValueError, match=r"shard-7\.tfrecord record 4: missing feature 'latent_length'"):
        LatentRecord.from_bytes(broken, where="shard-7.tfrecord record 4")
    wrong_shape = make_example({**features, "latents_shape": [16, 5]})
    with pytest.raises(ValueError, match=r"here: latents has 256 bytes, but shape \[16, 5\] of float32 needs 320"):
        LatentRecord.from_bytes(wrong_shape, where="here")
    with pytest.raises(ValueError, match=r"here: text_mask has shape \(4,\), expected \(3,\)"):
        LatentRecord.from_bytes(make_example({**features, "text_mask": b"\x01" * 4}), where="here")
    with pytest.raises(ValueError, match="latents_dtype"):
        LatentRecord.from_bytes(make_example({**features, "latents_dtype": 3}), where="here")


def test_manifest_round_trip_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"manifest\.json does not exist.*stableaudio-jax encode"):
        read_manifest(tmp_path)
    directory = write_dataset(tmp_path / "ds", files=2, per_file=2, channels=64)
    manifest = read_manifest(directory)
    assert manifest["records"] == 4 and [s["records"] for s in manifest["shards"]] == [2, 2]
    assert not [n for n in os.listdir(directory) if ".tmp" in n]  # the atomic write left no temporary file
    validate_manifest(manifest, directory, latent_channels=64, encoder_config_hash="0123456789abcdef")
    path = os.path.join(directory, "manifest.json")
    with pytest.raises(ValueError, match=rf"{path}: latents have 64 channels but the model's io_channels is 4"):
        validate_manifest(manifest, directory, latent_channels=4)
    with pytest.raises(ValueError, match=rf"{path}: manifest encoder_config_hash 0123456789abcdef differs from this "
                                         r"run's fedcba9876543210: the latents were encoded with a different VAE"):
        validate_manifest(manifest, directory, encoder_config_hash="fedcba9876543210")
    with pytest.raises(ValueError, match=rf"{path}: missing field 'latent_channels'"):
        validate_manifest({k: v for k, v in manifest.items() if k != "latent_channels"}, directory)
    with pytest.raises(ValueError, match=r"records is 5 but the shards hold 4"):
        validate_manifest({**manifest, "records": 5}, directory)
    with pytest.raises(ValueError, match="io_channels is 4"):  # the reader validates before reading
        latent_dataset(tmp_path / "ds", 2, 4, latent_channels=4)
    os.remove(os.path.join(directory, manifest["shards"][1]["file"]))
    with pytest.raises(ValueError, match=r"shard 'latents-00001-of-00002\.tfrecord' is listed but .* does not exist"):
        validate_manifest(manifest, directory)


def test_record_that_disagrees_with_its_manifest(tmp_path):
    directory = write_dataset(tmp_path, files=1, per_file=2)
    write_manifest(directory, {**read_manifest(directory), "latent_channels": 8})
    with pytest.raises(ValueError, match=r"latents-00000-of-00001\.tfrecord record [01]: latents have 4 channels, "
                                         r"the manifest says 8"):
        next(iter(latent_dataset(directory, 2, 4)))


def test_config_hash():
    a = config_hash({"vae": {"latent_dim": 64, "strides": (2, 4)}, "t5": "base"})
    assert a == config_hash({"t5": "base", "vae": {"strides": [2, 4], "latent_dim": 64}})  # canonical
    assert len(a) == 16 and int(a, 16) >= 0
    assert a != config_hash({"vae": {"latent_dim": 32, "strides": (2, 4)}, "t5": "base"})


# --- sharding over hosts ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("files,count", [(5, 2), (5, 3), (2, 3), (1, 2), (6, 3), (70, 64), (16, 64)])
def test_each_record_read_by_exactly_one_host(tmp_path, files, count):
    """Simulated process indices, up to a 64-host pod: whole files per host, or rows when files are fewer."""
    directory = write_dataset(tmp_path, files=files, per_file=7)
    per_host = [_epoch(directory, p, count, shuffle_buffer=4) for p in range(count)]
    everything = Counter(x for host in per_host for x in host)
    expected = {(f"file{f}.wav", w) for f in range(files) for w in range(7)}
    assert set(everything) == expected and set(everything.values()) == {1}
    if files < count:  # row sharding: balanced to one record
        assert max(map(len, per_host)) - min(map(len, per_host)) <= 1


def test_epochs_reshuffle_and_cover(tmp_path):
    directory = write_dataset(tmp_path, files=3, per_file=8)
    two = _ids(latent_dataset(directory, 4, 8, num_epochs=2, shuffle_buffer=8, with_metadata=True))
    first, second = two[:24], two[24:]
    assert sorted(first) == sorted(second) and len(set(first)) == 24
    assert first != second  # file order and shuffle are reseeded per epoch
    again = _ids(latent_dataset(directory, 4, 8, num_epochs=2, shuffle_buffer=8, with_metadata=True))
    assert again == two  # and deterministic
    other = _ids(latent_dataset(directory, 4, 8, num_epochs=2, shuffle_buffer=8, with_metadata=True, seed=1))
    assert other != two


def test_host_without_records_is_an_error(tmp_path):
    directory = write_dataset(tmp_path, files=1, per_file=1)
    with pytest.raises(ValueError, match=r"process 1 of 2\): epoch 0 has no records for this host"):
        next(iter(latent_dataset(directory, 1, 4, process_index=1, process_count=2)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_real_processes_read_disjoint_complete_epochs(tmp_path):
    many = write_dataset(tmp_path / "many", files=3, per_file=5)  # file sharding (3 files, 2 hosts)
    one = write_dataset(tmp_path / "one", files=1, per_file=9)  # row sharding
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen([sys.executable, WORKER, str(i), "2", str(port), str(tmp_path / f"out{i}.json"),
                               many, one], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    outs = [json.load(open(tmp_path / f"out{i}.json")) for i in range(2)]
    assert [o["process_index"] for o in outs] == [0, 1]
    for directory, files, per_file in ((many, 3, 5), (one, 1, 9)):
        seen = [{tuple(x) for x in o["seen"][directory]} for o in outs]
        assert all(len(s) == len(o["seen"][directory]) for s, o in zip(seen, outs))  # no repeats on a host
        assert not seen[0] & seen[1] and seen[0] and seen[1]
        assert seen[0] | seen[1] == {(f"file{f}.wav", w) for f in range(files) for w in range(per_file)}


# --- resume, crops, corruption, synthetic -------------------------------------------------------------------------

def test_exact_resume(tmp_path):
    directory = write_dataset(tmp_path, files=3, per_file=6, text="embeddings")  # 18 records per epoch
    make = lambda: iter(latent_dataset(directory, 4, 8, shuffle_buffer=5, seed=7))
    it = make()
    for _ in range(3):  # 12 records: mid-epoch, mid shuffle window
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
    expected = [next(it) for _ in range(5)]  # crosses into the second epoch
    resumed = make()
    resumed.set_state(state)
    for want, got in zip(expected, [next(resumed) for _ in range(5)]):
        assert want.keys() == got.keys()
        for key in want:
            np.testing.assert_array_equal(want[key], got[key], err_msg=key)
    assert not all(np.array_equal(expected[0]["latents"], e["latents"]) for e in expected[1:])


def test_crop_timing_matches_offset(tmp_path):
    # One window: 100 frames, 90 valid, starting 10 s into a 123.4 s file; 2048x downsampling at 44.1 kHz.
    directory = write_dataset(tmp_path, files=1, per_file=1, frames=100, latent_length=90, seconds_start=10.0,
                              seconds_total=123.4)
    batch = next(iter(latent_dataset(directory, 200, 8, shuffle_buffer=1)))
    offsets = (batch["latents"][:, 0, 0] / 4).astype(int)
    assert offsets.min() >= 0 and offsets.max() <= 82 and len(set(offsets.tolist())) > 30
    for crop, o in zip(batch["latents"], offsets):
        np.testing.assert_array_equal(crop, np.arange(o * 4, o * 4 + 32, dtype=np.float32).reshape(8, 4))
    np.testing.assert_array_equal(batch["seconds_start"], [math.floor(10 + o * 2048 / 44100) for o in offsets])
    assert set(batch["seconds_start"].tolist()) == {10.0, 11.0, 12.0, 13.0}  # not stuck at the window's start
    assert (batch["seconds_total"] == 124.0).all()
    np.testing.assert_array_equal(batch["padding_mask"], (offsets[:, None] + np.arange(8)) < 90)
    assert batch["padding_mask"].all()  # offsets stay within the valid frames


def test_short_record_is_zero_padded(tmp_path):
    directory = write_dataset(tmp_path / "a", files=1, per_file=1, frames=5, seconds_start=3.5, seconds_total=4.2)
    batch = next(iter(latent_dataset(directory, 3, 8, shuffle_buffer=1)))
    want = np.concatenate([np.arange(20, dtype=np.float32).reshape(5, 4), np.zeros((3, 4), np.float32)])
    for crop in batch["latents"]:
        np.testing.assert_array_equal(crop, want)
    assert batch["padding_mask"].tolist() == [[True] * 5 + [False] * 3] * 3
    assert batch["seconds_start"].tolist() == [3.0] * 3 and batch["seconds_total"].tolist() == [5.0] * 3
    # Padding inside the window (latent_length < frames): masked and never the crop's start.
    directory = write_dataset(tmp_path / "b", files=1, per_file=1, frames=16, latent_length=6)
    batch = next(iter(latent_dataset(directory, 3, 8, shuffle_buffer=1)))
    assert (batch["latents"][:, 0, 0] == 0).all() and batch["padding_mask"].tolist() == [[True] * 6 + [False] * 2] * 3


def test_batch_keys_and_dtypes(tmp_path):
    directory = write_dataset(tmp_path, files=2, per_file=3, text="embeddings", text_length=6, text_dim=10,
                              dtype=np.float16)
    batch = next(iter(latent_dataset(directory, 4, 8)))
    spec = {k: (v.shape, v.dtype) for k, v in batch.items()}
    assert spec == {"latents": ((4, 8, 4), np.float32), "padding_mask": ((4, 8), bool),
                    "seconds_start": ((4,), np.float32), "seconds_total": ((4,), np.float32),
                    "text_embeddings": ((4, 6, 10), np.float32), "text_mask": ((4, 6), bool)}
    synthetic = next(iter(synthetic_latent_dataset(4, 8, 4, 6, 10)))
    assert {k: (v.shape, v.dtype) for k, v in synthetic.items()} == spec


def _corrupt_dataset(tmp_path):
    directory = write_dataset(tmp_path, files=3, per_file=4)
    shard = lambda f: os.path.join(directory, f"latents-{f:05d}-of-00003.tfrecord")
    offsets = lambda f: [o for _, o, _ in iter_records(shard(f))]
    data = bytearray(open(shard(1), "rb").read())
    data[offsets(1)[2] + 40] ^= 0xFF  # file 1, record 2: bad data checksum
    open(shard(1), "wb").write(bytes(data))
    cut = offsets(2)[1] + 30
    data = open(shard(2), "rb").read()
    open(shard(2), "wb").write(data[:cut])  # file 2: truncated inside record 1
    return directory


def test_corrupt_records_raise_or_are_skipped_and_counted(tmp_path):
    directory = _corrupt_dataset(tmp_path)
    with pytest.raises(CorruptRecordError, match=r"latents-0000[12]-of-00003\.tfrecord: record [12] at byte offset"):
        _epoch(directory, 0, 1)
    log = CorruptionLog()
    ds = latent_dataset(directory, 4, 8, num_epochs=1, drop_remainder=False, with_metadata=True, on_corrupt="skip",
                        corruption_log=log)
    assert ds.corruption_log is log
    seen = _ids(ds)
    assert sorted(seen) == sorted([("file0.wav", w) for w in range(4)] + [("file1.wav", w) for w in (0, 1, 3)]
                                  + [("file2.wav", 0)])
    assert log.count == 2
    events = sorted((e["file"][-26:], e["record"], e["reason"].split()[0]) for e in log.events)
    assert events == [("latents-00001-of-00003.tfrecord"[-26:], 2, "data"),
                      ("latents-00002-of-00003.tfrecord"[-26:], 1, "truncated")]


def test_synthetic_dataset_is_deterministic_and_resumable():
    a = iter(synthetic_latent_dataset(2, 8, 4, 5, None, seed=1))
    first = [next(a) for _ in range(3)]
    assert first[0]["text_ids"].dtype == np.int32 and first[0]["text_ids"].shape == (2, 5)
    assert "text_embeddings" not in first[0] and first[0]["text_mask"].dtype == bool
    b = iter(synthetic_latent_dataset(2, 8, 4, 5, None, seed=1))
    b.set_state(json.loads(json.dumps({"next": 2})))
    np.testing.assert_array_equal(next(b)["latents"], first[2]["latents"])
    assert not np.array_equal(first[0]["latents"], first[1]["latents"])
    other = next(iter(synthetic_latent_dataset(2, 8, 4, 5, None, seed=2)))
    assert not np.array_equal(other["latents"], first[0]["latents"])


def test_benchmark_script_writes_json(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "bench.json"
    cmd = [sys.executable, os.path.join(root, "benchmarks", "latent_reader_bench.py"), "--files", "2",
           "--records-per-file", "6", "--frames", "32", "--channels", "4", "--text-length", "8", "--text-dim", "16",
           "--crop", "16", "--batch", "2", "--shuffle-buffer", "4", "--repeats", "2", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=300,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["dataset"]["records"] == 12 and report["dataset"]["record_bytes"] > 32 * 4 * 4
    assert report["read"]["records_per_pass"] == 12 and report["pipeline"]["records_per_pass"] == 12  # 6 batches
    for part in ("read", "pipeline"):  # ours and grain's, one pass each, as interleaved pairs
        assert_interleaved_pairs(report[part], 2)
        summary = report[part]["summary"]
        assert np.isclose(report[part]["ours_verified_records_per_s"], 12 / summary["ours_s"]["median"])
