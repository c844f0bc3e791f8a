"""The protocol-buffer wire format of cpm_nb.io.protowire, checked against the protobuf
package's own encoder (well-known wrapper messages: one field number 1 each)."""

import struct

import numpy as np
import pytest
from google.protobuf import wrappers_pb2

from cpm_nb.io import protowire as W


@pytest.mark.parametrize("value", [1, 127, 128, 300, 2**31, 2**63 - 1, -1, -2**63])
def test_varints_are_what_protobuf_writes_for_int64(value):
    ours = W.field_bytes(1, value)
    assert ours == wrappers_pb2.Int64Value(value=value).SerializeToString()
    ((number, wire, read),) = W.fields(ours)
    assert (number, wire) == (1, W.VARINT)
    assert read == value % 2**64  # negative int64: its 64-bit two's complement


def test_zero_is_written_and_read_back():  # (protobuf itself leaves default values out)
    assert list(W.fields(W.field_bytes(1, 0))) == [(1, W.VARINT, 0)]


def test_length_and_fixed_fields_are_what_protobuf_writes():
    assert W.field_bytes(1, b"abc") == wrappers_pb2.BytesValue(value=b"abc").SerializeToString()
    assert W.fixed_bytes(1, struct.pack("<d", 1.5)) == \
        wrappers_pb2.DoubleValue(value=1.5).SerializeToString()
    assert W.fixed_bytes(1, struct.pack("<f", -2.25)) == \
        wrappers_pb2.FloatValue(value=-2.25).SerializeToString()
    message = wrappers_pb2.StringValue(value="ünïcode" * 40).SerializeToString()  # 2-byte length
    ((number, wire, value),) = W.fields(message)
    assert (number, wire, bytes(value).decode()) == (1, W.LENGTH, "ünïcode" * 40)


def test_fields_read_a_mixed_message_in_order():
    body = (W.field_bytes(1, 7) + W.field_bytes(2, b"nested " + W.field_bytes(1, 3))
            + W.fixed_bytes(3, b"\x01\x02\x03\x04") + W.fixed_bytes(4, bytes(range(8))))
    got = [(n, w, v if isinstance(v, int) else bytes(v)) for n, w, v in W.fields(body)]
    assert got == [(1, W.VARINT, 7), (2, W.LENGTH, b"nested " + W.field_bytes(1, 3)),
                   (3, W.FIXED32, b"\x01\x02\x03\x04"), (4, W.FIXED64, bytes(range(8)))]


def test_packed_varints_round_trip():
    rng = np.random.default_rng(0)
    values = [int(v) for v in rng.integers(0, 2**40, 200)] + [0, 1, 2**63]
    packed = b"".join(W.varint_bytes(v) for v in values)
    assert W.packed_varints(packed) == values


@pytest.mark.parametrize("data, message", [
    (b"\x08", "runs past the end"),  # a varint field without its value
    (b"\x08" + b"\xff" * 11, "longer than 10 bytes"),
    (b"\x0a\x05ab", "runs past the end"),  # 5 bytes announced, 2 there
    (b"\x0d\x01\x02", "runs past the end"),  # a fixed32 cut short
    (b"\x0b", "wire type 3"),  # groups: not in any message here
    (b"\x00\x01", "field number 0"),
])
def test_malformed_messages_are_wire_errors(data, message):
    with pytest.raises(W.WireError, match=message):
        list(W.fields(data))
