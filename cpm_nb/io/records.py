"""TFRecord files without TensorFlow: read and write ``tf.train.Example`` records in
plain Python.

The prepared data (``cpm-nb prepare``) is stored as TFRecord shards of
``tf.train.Example`` protocol buffers (their fields: :mod:`cpm_nb.data.schema`).  This
module writes them everywhere and reads them where TensorFlow is not installed (for
example the GPU machines with only JAX and Keras this course is measured on); where it
is, ``tf.data`` reads the same files (the fast path, :mod:`cpm_nb.data.pipeline`).  It is
also the format spelled out for learners.

The TFRecord framing, for every record::

    uint64 length | uint32 masked_crc32c(length) | bytes data[length] | uint32 masked_crc32c(data)

(little endian; ``masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8``).  The Example
message is ``Features features = 1`` -> ``map<string, Feature> feature = 1`` ->
one of ``BytesList bytes_list = 1``, ``FloatList float_list = 2``,
``Int64List int64_list = 3``, each ``repeated ... value = 1`` (numbers packed).

The CRC-32C checksums are computed by ``google-crc32c`` (C code, hardware CRC
instructions where the CPU has them); :func:`crc32c_python`, the table-driven loop
that defines them, is the fallback where that package or its C extension is missing
(about 6 MB/s: ``python -m cpm_nb.bench records`` prints both rates).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from cpm_nb.io import protowire
from cpm_nb.io.protowire import field_bytes


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


def crc32c_python(data) -> int:
    """CRC-32C of ``data`` in plain Python: the reference, and the fallback."""
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _native_crc32c():
    """``google_crc32c.value`` when its C extension is installed, else None."""
    try:
        import google_crc32c
    except ImportError:
        return None
    if getattr(google_crc32c, "implementation", "c") != "c":
        return None  # its own pure-Python build: no faster than ours
    return google_crc32c.value


_NATIVE = _native_crc32c()
CRC32C_IMPLEMENTATION = "google-crc32c (C)" if _NATIVE is not None else "Python"


def crc32c(data) -> int:
    """CRC-32C (Castagnoli) of ``data`` (bytes), as TFRecord frames use it."""
    if _NATIVE is not None:
        return _NATIVE(bytes(data))
    return crc32c_python(data)


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


# --- tf.train.Example -----------------------------------------------------------------------


def encode_example(features: dict) -> bytes:
    """Serialise ``{name: value}`` as a ``tf.train.Example``: ``bytes``/``str`` values become
    a BytesList, float arrays a FloatList, integer arrays an Int64List."""
    entries = []
    for name, value in features.items():
        if isinstance(value, str):
            value = value.encode()
        if isinstance(value, bytes):
            feature = field_bytes(1, field_bytes(1, value))
        else:
            array = np.atleast_1d(np.asarray(value))
            if array.dtype.kind == "f":
                feature = field_bytes(2, field_bytes(1, array.astype("<f4").tobytes()))
            else:
                packed = b"".join(protowire.varint_bytes(int(v)) for v in array.ravel())
                feature = field_bytes(3, field_bytes(1, packed))
        entries.append(field_bytes(1, field_bytes(1, name.encode()) + field_bytes(2, feature)))
    return field_bytes(1, b"".join(entries))


def _decode_feature(buf):
    for kind, _, payload in protowire.fields(buf):
        values = [v for n, _, v in protowire.fields(payload) if n == 1]
        if kind == 1:
            return bytes(values[0]) if len(values) == 1 else [bytes(v) for v in values]
        if kind == 2:
            return np.frombuffer(b"".join(bytes(v) for v in values), "<f4").astype(np.float32)
        if kind == 3:
            ints = []
            for n, wire, v in protowire.fields(payload):
                if n == 1:
                    ints.extend(protowire.packed_varints(v) if wire == protowire.LENGTH else [v])
            return np.array(ints, dtype=np.uint64).astype(np.int64)
    return None


def decode_example(data: bytes) -> dict:
    """``{name: value}`` of a serialised ``tf.train.Example`` (bytes, float32 or int64 arrays)."""
    out = {}
    try:
        for number, _, features in protowire.fields(data):
            if number != 1:
                continue
            for entry_number, _, entry in protowire.fields(features):
                if entry_number != 1:
                    continue
                key, value = None, b""
                for n, _, v in protowire.fields(entry):
                    if n == 1:
                        key = bytes(v).decode()
                    elif n == 2:
                        value = v
                out[key] = _decode_feature(value)
    except (protowire.WireError, UnicodeDecodeError) as err:
        raise RecordError(f"not a tf.train.Example ({err})") from None
    return out


def read_examples(path, verify: bool = True) -> list[dict]:
    """Every Example of a TFRecord file, decoded; errors name the file."""
    try:
        return [decode_example(r) for r in read_records(path, verify)]
    except RecordError as err:
        message = str(err)
        raise RecordError(message if str(path) in message else f"{path}: {message}") from None
