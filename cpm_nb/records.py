"""TFRecord files without TensorFlow: read and write ``tf.train.Example`` records and
TensorBoard scalar events in plain Python.

The prepared data (``cpm-nb prepare``) is stored as TFRecord shards of
``tf.train.Example`` protocol buffers.  Where TensorFlow is installed, ``tf.data``
reads them (the fast path, :mod:`cpm_nb.pipeline`); this module is the reference
reader and writer for machines with only JAX and Keras (for example the GPU
machines this course is measured on), and the format spelled out for learners.

The TFRecord framing, for every record::

    uint64 length | uint32 masked_crc32c(length) | bytes data[length] | uint32 masked_crc32c(data)

(little endian; ``masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8``).  The Example
message is ``Features features = 1`` -> ``map<string, Feature> feature = 1`` ->
one of ``BytesList bytes_list = 1``, ``FloatList float_list = 2``,
``Int64List int64_list = 3``, each ``repeated ... value = 1`` (numbers packed).

TensorBoard event files use the same framing around ``Event`` messages
(``double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5``
with ``Summary.Value{string tag = 1; float simple_value = 2}``): :class:`ScalarWriter`
writes them, so training logs scalars on any Keras backend.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path

import numpy as np


class RecordError(ValueError):
    """A TFRecord file that is truncated or corrupted."""


# --- CRC-32C (Castagnoli), as TFRecord frames use it ---------------------------------------


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --- TFRecord framing ----------------------------------------------------------------------


def frame(data: bytes) -> bytes:
    """One TFRecord frame around ``data``."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc(length)) + data
            + struct.pack("<I", masked_crc(data)))


def read_records(path, verify: bool = True):
    """Yield the records of a TFRecord file; :class:`RecordError` names the file and offset
    of a truncated or corrupted frame.  ``verify=False`` skips the data checksums (the
    length checksums are always checked)."""
    path = Path(path)
    with open(path, "rb") as f:
        offset = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise RecordError(f"{path}: truncated record header at byte {offset}")
            (length,) = struct.unpack("<Q", head[:8])
            if struct.unpack("<I", head[8:])[0] != masked_crc(head[:8]):
                raise RecordError(f"{path}: corrupted record length at byte {offset}")
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise RecordError(f"{path}: truncated record at byte {offset}")
            if verify and struct.unpack("<I", tail)[0] != masked_crc(data):
                raise RecordError(f"{path}: corrupted record (checksum) at byte {offset}")
            offset += 16 + length
            yield data


def write_records(path, records) -> None:
    """Write ``records`` (bytes) as a TFRecord file (not atomic: callers write to a temp name)."""
    with open(path, "wb") as f:
        for data in records:
            f.write(frame(data))


# --- protocol-buffer wire format (the few pieces Example and Event need) --------------------


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64 -> two's complement, 10 bytes
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise RecordError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _fields(buf: bytes):
    """Yield ``(field number, wire type, value)``; value is bytes (type 2), an int (types 0,
    1, 5: the raw little-endian integer)."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
            if len(value) < n:
                raise RecordError("truncated field")
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise RecordError(f"unsupported wire type {wire}")
        yield number, wire, value


# --- tf.train.Example -----------------------------------------------------------------------


def encode_example(features: dict) -> bytes:
    """Serialise ``{name: value}`` as a ``tf.train.Example``: ``bytes``/``str`` values become
    a BytesList, float arrays a FloatList, integer arrays an Int64List."""
    entries = []
    for name, value in features.items():
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, bytes):
            feature = _field(1, _field(1, value))
        else:
            array = np.atleast_1d(np.asarray(value))
            if array.dtype.kind == "f":
                packed = array.astype("<f4").tobytes()
                feature = _field(2, _field(1, packed))
            else:
                packed = b"".join(_varint(int(v)) for v in array.ravel())
                feature = _field(3, _field(1, packed))
        entries.append(_field(1, _field(1, name.encode()) + _field(2, feature)))
    return _field(1, b"".join(entries))


def _decode_feature(buf: bytes):
    for kind, _, payload in _fields(buf):
        values = [v for n, w, v in _fields(payload) if n == 1] if payload else []
        if kind == 1:
            return values[0] if len(values) == 1 else values
        if kind == 2:
            return np.frombuffer(b"".join(values), "<f4").astype(np.float32)
        if kind == 3:
            out = []
            for v in values:
                if isinstance(v, bytes):  # packed
                    pos = 0
                    while pos < len(v):
                        x, pos = _read_varint(v, pos)
                        out.append(x)
                else:
                    out.append(v)
            ints = np.array(out, dtype=np.uint64).astype(np.int64)
            return ints
    return None


def decode_example(data: bytes) -> dict:
    """``{name: value}`` of a serialised ``tf.train.Example`` (bytes, float32 or int64 arrays)."""
    out = {}
    for number, _, features in _fields(data):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(features):
            if entry_number != 1:
                continue
            key, value = None, b""
            for n, _, v in _fields(entry):
                if n == 1:
                    key = v.decode()
                elif n == 2:
                    value = v
            out[key] = _decode_feature(value)
    return out


def read_examples(path, verify: bool = True) -> list[dict]:
    """Every Example of a TFRecord file, decoded; errors name the file."""
    try:
        return [decode_example(r) for r in read_records(path, verify)]
    except RecordError as err:
        message = str(err)
        raise RecordError(message if str(path) in message else f"{path}: {message}") from None


# --- TensorBoard scalars ---------------------------------------------------------------------


class ScalarWriter:
    """Append TensorBoard scalar events to ``folder/events.out.tfevents.*`` (no TensorFlow
    needed to write; ``tensorboard --logdir folder`` to view)."""

    def __init__(self, folder):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self.path = folder / name
        self._file = open(self.path, "ab")
        self._write(_field(3, b"brain.Event:2"), step=0)

    def _write(self, body: bytes, step: int) -> None:
        event = (_varint(1 << 3 | 1) + struct.pack("<d", time.time())
                 + _varint(2 << 3) + _varint(int(step)) + body)
        self._file.write(frame(event))

    def scalar(self, tag: str, value: float, step: int) -> None:
        summary_value = _field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value)
        self._write(_field(5, _field(1, summary_value)), step)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()
