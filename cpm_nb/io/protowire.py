"""The protocol-buffer wire format, the little of it this package reads and writes.

Two file formats here are protocol buffers: TFRecord examples (:mod:`cpm_nb.io.records`)
and Caffe models (:mod:`cpm_nb.caffe.proto`).  Both are read and
written without the ``protobuf`` package: a message is a sequence of fields, each a
varint key ``number << 3 | wire type`` followed by a varint (type 0), 8 bytes
(type 1), a varint length and that many bytes (type 2: strings, sub-messages and
packed repeated numbers) or 4 bytes (type 5).
"""

from __future__ import annotations

from collections.abc import Iterator

from cpm_nb.core.errors import DataError

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5  # wire types


class WireError(DataError):
    """Bytes that are not a well-formed protocol-buffer message."""


def read_varint(buf, pos: int) -> tuple[int, int]:
    """The varint at ``buf[pos:]`` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("a number runs past the end of the data")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise WireError("a number is longer than 10 bytes")


def fields(buf) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one message: an int for varints, bytes
    (a memoryview slice of ``buf``) for length-delimited and fixed-size fields."""
    buf = memoryview(buf) if isinstance(buf, (bytes, bytearray)) else buf
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {pos}")
        if wire == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            value, pos = buf[pos:pos + size], pos + size
        elif wire == LENGTH:
            size, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise WireError(f"wire type {wire} at byte {pos} (not a protobuf message)")
        if pos > end:
            raise WireError(f"field {number} runs past the end of the data")
        yield number, wire, value


def packed_varints(chunk) -> list[int]:
    """The numbers of one packed repeated varint field."""
    out, pos = [], 0
    while pos < len(chunk):
        value, pos = read_varint(chunk, pos)
        out.append(value)
    return out


def varint_bytes(value: int) -> bytes:
    """A varint; a negative int64 is written as its 10-byte two's complement."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def field_bytes(number: int, payload) -> bytes:
    """A field: a varint for an int, length-delimited for bytes."""
    if isinstance(payload, int):
        return varint_bytes(number << 3 | VARINT) + varint_bytes(payload)
    payload = bytes(payload)
    return varint_bytes(number << 3 | LENGTH) + varint_bytes(len(payload)) + payload


def fixed_bytes(number: int, payload: bytes) -> bytes:
    """A fixed-size field: 4 bytes (type 5) or 8 bytes (type 1)."""
    wire = FIXED32 if len(payload) == 4 else FIXED64
    return varint_bytes(number << 3 | wire) + payload
