"""TFRecord framing and Example protos in pure Python: checksums against an independent CRC32C, round trips,
and corrupt or truncated files caught with the file, record and byte offset in the message."""
import os
import struct

import numpy as np
import pytest

from stableaudio_jax.data.tfrecord import (CorruptRecordError, TFRecordWriter, count_records, iter_records,
                                           make_example, masked_crc32c, parse_example)


def _reference_crc32c(data: bytes) -> int:
    """Bit-by-bit CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), straight from the definition."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _reference_masked(data: bytes) -> int:
    crc = _reference_crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def test_crc_matches_independent_reference():
    assert _reference_crc32c(b"123456789") == 0xE3069283  # the published CRC-32C check value
    assert masked_crc32c(b"") == _reference_masked(b"") == 0xA282EAD8
    for data in (b"123456789", b"stable audio", bytes(range(256)), np.random.default_rng(0).bytes(1000)):
        assert masked_crc32c(data) == _reference_masked(data)


def test_framing_is_byte_exact(tmp_path):
    path = tmp_path / "one.tfrecord"
    with TFRecordWriter(path) as w:
        w.write(b"abc")
    length = struct.pack("<Q", 3)
    expected = length + struct.pack("<I", _reference_masked(length)) + b"abc" + struct.pack("<I",
                                                                                         _reference_masked(b"abc"))
    assert path.read_bytes() == expected


def _write(path, payloads):
    with TFRecordWriter(path) as w:
        for p in payloads:
            w.write(p)
    return path


PAYLOADS = [b"", b"x", bytes(range(256)) * 5, b"last record"]


def test_round_trip_indices_offsets_and_count(tmp_path):
    path = _write(tmp_path / "a.tfrecord", PAYLOADS)
    got = list(iter_records(path))
    assert [d for _, _, d in got] == PAYLOADS
    assert [i for i, _, _ in got] == [0, 1, 2, 3]
    offsets = np.cumsum([0] + [16 + len(p) for p in PAYLOADS])[:-1]
    assert [o for _, o, _ in got] == offsets.tolist()
    assert count_records(path) == 4
    assert count_records(_write(tmp_path / "empty.tfrecord", [])) == 0


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_flipped_payload_byte_names_file_record_and_offset(tmp_path):
    path = _write(tmp_path / "bad.tfrecord", PAYLOADS)
    record2 = 16 + 16 + 1  # offset of record 2
    _flip(path, record2 + 12 + 100)
    assert [d for _, _, d in iter_records(path, verify=False)][2] != PAYLOADS[2]  # only the checksum notices
    with pytest.raises(CorruptRecordError, match=r"bad\.tfrecord: record 2 at byte offset 33: data checksum") as e:
        list(iter_records(path))
    assert e.value.resumable and (e.value.record_index, e.value.offset) == (2, 33)
    assert count_records(path) == 4  # count only walks (verified) lengths


def test_flipped_length_byte(tmp_path):
    path = _write(tmp_path / "bad.tfrecord", PAYLOADS)
    _flip(path, 16 + 1)  # record 1's length field
    with pytest.raises(CorruptRecordError, match=r"record 1 at byte offset 16: length checksum") as e:
        list(iter_records(path))
    assert not e.value.resumable
    with pytest.raises(CorruptRecordError, match="length checksum"):
        count_records(path)


@pytest.mark.parametrize("cut", [5, 20])  # inside record 3's header / inside its data
def test_truncated_file(tmp_path, cut):
    path = _write(tmp_path / "cut.tfrecord", PAYLOADS)
    start3 = sum(16 + len(p) for p in PAYLOADS[:3])
    path.write_bytes(path.read_bytes()[:start3 + cut])
    with pytest.raises(CorruptRecordError, match=rf"cut\.tfrecord: record 3 at byte offset {start3}: truncated"):
        list(iter_records(path))
    with pytest.raises(CorruptRecordError, match="truncated"):
        count_records(path)
    assert [d for _, _, d in _first(path, 3)] == PAYLOADS[:3]  # the records before the cut still read


def _first(path, n):
    it = iter_records(path)
    return [next(it) for _ in range(n)]


def test_writer_writes_to_the_given_path_only(tmp_path):
    path = tmp_path / "w.tfrecord"
    w = TFRecordWriter(path)
    w.write(b"a")
    w.flush()
    assert path.stat().st_size == 17 and w.records == 1
    w.close()
    assert os.listdir(tmp_path) == ["w.tfrecord"]


def test_example_round_trip():
    data = make_example({"blob": b"\x00\x01ab\x00", "text": "ünï", "many": [b"a\x00", b"", b"c"],
                         "ints": np.array([1, -2, 2 ** 40]), "one": 7, "floats": [0.5, -1.25], "f": 3.0,
                         "flags": np.array([True, False])})
    f = parse_example(data)
    assert f["blob"] == [b"\x00\x01ab\x00"] and f["text"] == ["ünï".encode()]
    assert f["many"] == [b"a\x00", b"", b"c"]  # trailing NULs survive (no numpy bytes arrays)
    assert f["ints"].dtype == np.int64 and f["ints"].tolist() == [1, -2, 2 ** 40]
    assert f["one"].tolist() == [7] and f["flags"].tolist() == [1, 0]
    assert f["floats"].dtype == np.float32 and f["floats"].tolist() == [0.5, -1.25] and f["f"].tolist() == [3.0]
    with pytest.raises(TypeError, match="complex"):
        make_example({"z": np.array([1j])})
