"""TFRecord files and ``tf.train.Example`` protos, written and read in pure Python (no TensorFlow at run time).

A TFRecord file is a sequence of records, each framed as::

    uint64 length (little-endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data

with ``mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32)``. Files written here are read by
``tf.data.TFRecordDataset`` (checked by ``benchmarks/check_tfrecord_with_tensorflow.py``), and the reader verifies
both checksums, which grain's ``TFRecordIterDataset`` does not: a flipped bit on disk becomes an error naming the
file, record and byte offset instead of silently wrong latents.

Examples use the wire-compatible proto shipped by tensorflow-datasets (package ``tensorflow_copy``, so it never
clashes with TensorFlow's own ``tensorflow.Example`` when both are imported).
"""
from __future__ import annotations

import os
import struct
from typing import Iterator

import google_crc32c
import numpy as np
from tensorflow_datasets.proto import tf_example_pb2, tf_feature_pb2

from stableaudio_jax import paths

_HEADER = struct.Struct("<QI")  # length, masked crc of the length
_CRC = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


class CorruptRecordError(ValueError):
    """A TFRecord whose checksum does not match, or a file that ends in the middle of a record.

    ``resumable`` is True when only the data was bad (its length checksum held): the reader has stepped over the
    record and may go on. A bad length or a truncated file leaves no trustworthy way to find the next record."""

    def __init__(self, path: str, record_index: int, offset: int, reason: str, resumable: bool = False):
        super().__init__(f"{path}: record {record_index} at byte offset {offset}: {reason}")
        self.path, self.record_index, self.offset, self.reason = path, record_index, offset, reason
        self.resumable = resumable


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record, framed (header + data + data checksum)."""
    length = struct.pack("<Q", len(data))
    return length + _CRC.pack(masked_crc32c(length)) + data + _CRC.pack(masked_crc32c(data))


class TFRecordWriter:
    """Appends framed records to ``path`` (created or truncated). Atomic publication (tmp + rename) is the
    caller's job: this writes to the path it is given."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._file = paths.open(self.path, "wb")  # a bucket object is uploaded in parts and appears at close
        self.records = 0

    def write(self, data: bytes) -> None:
        self._file.write(frame(bytes(data)))
        self.records += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            if not paths.is_url(self.path):
                os.fsync(self._file.fileno())  # the caller renames after close: the data must be on disk first
            self._file.close()

    def __enter__(self) -> "TFRecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TFRecordReader:
    """Sequential reader positioned at (record index, byte offset); both are exact resume points."""

    def __init__(self, path: str | os.PathLike, verify: bool = True):
        self.path, self.verify = os.fspath(path), verify
        self._file = paths.open(self.path, "rb")  # bucket objects stream with read-ahead and seek
        self.size = paths.size(self.path)
        self.record_index, self.offset = 0, 0

    def seek(self, record_index: int, offset: int) -> None:
        self._file.seek(offset)
        self.record_index, self.offset = record_index, offset

    def _error(self, what: str, resumable: bool = False) -> CorruptRecordError:
        return CorruptRecordError(self.path, self.record_index, self.offset, what, resumable)

    def _header(self) -> int | None:
        """The next record's data length (checked), or None at a clean end of file."""
        header = self._file.read(_HEADER.size)
        if not header:
            return None
        if len(header) < _HEADER.size:
            raise self._error(f"truncated file: {len(header)} header bytes of {_HEADER.size} before end of file")
        length, length_crc = _HEADER.unpack(header)
        if self.verify and masked_crc32c(header[:8]) != length_crc:
            # A wrong length cannot be trusted to find the next record: the rest of the file is unreadable.
            raise self._error(f"length checksum mismatch (length field reads {length})")
        end = self.offset + _HEADER.size + length + _CRC.size
        if end > self.size:
            raise self._error(f"truncated file: record of {length} bytes needs {end} bytes, file has {self.size}")
        return length

    def read_next(self) -> bytes | None:
        """The next record's data, or None at the end of the file."""
        length = self._header()
        if length is None:
            return None
        data = self._file.read(length)
        (data_crc,) = _CRC.unpack(self._file.read(_CRC.size))
        bad = self.verify and masked_crc32c(data) != data_crc
        error = self._error(f"data checksum mismatch ({length} bytes)", resumable=True) if bad else None
        self._advance(length)  # past the record either way: a trusted length still frames the next one
        if error:
            raise error
        return data

    def skip_next(self) -> bool:
        """Steps over the next record without reading its data (only the length checksum is verified)."""
        length = self._header()
        if length is None:
            return False
        self._file.seek(length + _CRC.size, os.SEEK_CUR)
        self._advance(length)
        return True

    def _advance(self, length: int) -> None:
        self.record_index += 1
        self.offset += _HEADER.size + length + _CRC.size

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "TFRecordReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_records(path: str | os.PathLike, verify: bool = True) -> Iterator[tuple[int, int, bytes]]:
    """Yields ``(record_index, byte_offset, data)`` for every record of a TFRecord file."""
    with TFRecordReader(path, verify) as reader:
        while True:
            index, offset = reader.record_index, reader.offset
            data = reader.read_next()
            if data is None:
                return
            yield index, offset, data


def count_records(path: str | os.PathLike) -> int:
    """Number of records, walking the headers with seeks (length checksums verified, data not read)."""
    with TFRecordReader(path, verify=True) as reader:
        while reader.skip_next():
            pass
        return reader.record_index


# --- tf.train.Example ---------------------------------------------------------------------------------------------

def _feature(value) -> tf_example_pb2.Feature:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return tf_feature_pb2.Feature(bytes_list=tf_feature_pb2.BytesList(value=[bytes(value)]))
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (bytes, str)):
        # Not through numpy: a numpy bytes array would drop trailing NUL bytes.
        items = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value]
        return tf_feature_pb2.Feature(bytes_list=tf_feature_pb2.BytesList(value=items))
    array = np.asarray(value)
    if array.dtype.kind in "iub":
        return tf_feature_pb2.Feature(int64_list=tf_feature_pb2.Int64List(value=array.astype(np.int64).reshape(-1)))
    if array.dtype.kind == "f":
        return tf_feature_pb2.Feature(float_list=tf_feature_pb2.FloatList(value=array.astype(np.float32).reshape(-1)))
    raise TypeError(f"cannot store a value of dtype {array.dtype} in a tf.train.Example feature")


def make_example(features: dict) -> bytes:
    """Serialised Example from ``{name: bytes | str | int(s) | float(s)}`` (ints → int64_list, floats →
    float_list, bytes/str → bytes_list; scalars become one-element lists)."""
    proto = tf_example_pb2.Example(
        features=tf_feature_pb2.Features(feature={name: _feature(v) for name, v in features.items()}))
    # deterministic: the feature map in key order. Otherwise protobuf writes it in its hash order, which differs
    # between processes: the same latents would be other bytes, and a resumed encode's shard would not match
    return proto.SerializeToString(deterministic=True)


def parse_example(data: bytes) -> dict:
    """``{name: list[bytes] | int64 array | float32 array}`` from a serialised Example."""
    proto = tf_example_pb2.Example.FromString(data)
    out = {}
    for name, feature in proto.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            out[name] = list(feature.bytes_list.value)
        elif kind == "int64_list":
            out[name] = np.asarray(feature.int64_list.value, dtype=np.int64)
        elif kind == "float_list":
            out[name] = np.asarray(feature.float_list.value, dtype=np.float32)
        else:
            out[name] = []
    return out
