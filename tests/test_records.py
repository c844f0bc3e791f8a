"""TFRecord files in plain Python (cpm_nb.io.records): CRC-32C through google-crc32c and the
pure-Python fallback, the framing and its damage reports, tf.train.Example encoding, and
TensorFlow reading what this module writes (and the reverse)."""

import struct

import numpy as np
import pytest

from cpm_nb.io import records


def test_crc32c_check_values():
    # the CRC-32C check value (RFC 3720 / iSCSI) and an empty input
    for crc in (records.crc32c, records.crc32c_python):
        assert crc(b"123456789") == 0xE3069283
        assert crc(b"") == 0
        assert crc(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros


def test_google_crc32c_is_used_and_equals_the_python_loop_on_random_data():
    pytest.importorskip("google_crc32c")
    assert records.CRC32C_IMPLEMENTATION == "google-crc32c (C)"
    rng = np.random.default_rng(0)
    for size in (1, 3, 8, 63, 1000, 4097, 65_537):
        data = rng.bytes(size)
        assert records.crc32c(data) == records.crc32c_python(data), size
    assert records.crc32c(memoryview(b"abc")) == records.crc32c_python(b"abc")


def test_without_google_crc32c_the_python_loop_frames_the_same_records(monkeypatch):
    data = np.random.default_rng(1).bytes(5000)
    framed = records.frame(data)
    monkeypatch.setattr(records, "_NATIVE", None)  # as where the package is missing
    assert records.frame(data) == framed


def _write(path, payloads):
    with open(path, "wb") as f:
        for p in payloads:
            f.write(records.frame(p))


def test_frames_round_trip(tmp_path):
    payloads = [b"", b"x", np.random.default_rng(2).bytes(70_000)]
    _write(tmp_path / "a.tfrecord", payloads)
    assert list(records.read_records(tmp_path / "a.tfrecord")) == payloads
    length = struct.pack("<Q", 1)
    assert records.frame(b"x")[:12] == length + struct.pack("<I", records.masked_crc(length))


def test_damage_is_named_with_file_and_offset(tmp_path):
    path = tmp_path / "d.tfrecord"
    _write(path, [b"first", b"second record"])
    good = path.read_bytes()
    second = 16 + len(b"first")  # where the second frame starts

    path.write_bytes(good[:-3])  # truncated
    with pytest.raises(records.RecordError, match=rf"d.tfrecord: truncated record at byte {second}"):
        list(records.read_records(path))
    flipped = bytearray(good)
    flipped[second + 12] ^= 0x01  # a bit of the second record's data
    path.write_bytes(bytes(flipped))
    with pytest.raises(records.RecordError, match=rf"checksum\) at byte {second}"):
        list(records.read_records(path))
    assert len(list(records.read_records(path, verify=False))) == 2  # data CRC skipped
    flipped = bytearray(good)
    flipped[0] ^= 0x40  # the first length
    path.write_bytes(bytes(flipped))
    with pytest.raises(records.RecordError, match="corrupted record length at byte 0"):
        list(records.read_records(path, verify=False))
    path.write_bytes(good[:7])
    with pytest.raises(records.RecordError, match="truncated record header at byte 0"):
        list(records.read_records(path))


FEATURES = {
    "name": b"img 1.jpg",
    "floats": np.array([0.5, -1.25, np.float32(3.1e-8), 1e30], np.float32),
    "ints": np.array([0, 1, -1, 2**40, -2**63], np.int64),
    "one": np.array([7], np.int64),
}


def test_examples_round_trip(tmp_path):
    decoded = records.decode_example(records.encode_example(FEATURES))
    assert set(decoded) == set(FEATURES) and decoded["name"] == FEATURES["name"]
    for key in ("floats", "ints", "one"):
        np.testing.assert_array_equal(decoded[key], FEATURES[key])
        assert decoded[key].dtype == FEATURES[key].dtype
    _write(tmp_path / "e.tfrecord", [records.encode_example(FEATURES)] * 2)
    assert len(records.read_examples(tmp_path / "e.tfrecord")) == 2
    with pytest.raises(records.RecordError, match="not a tf.train.Example"):
        records.decode_example(b"\x0a\x05ab")


def test_tensorflow_reads_what_the_python_writer_writes(tmp_path):
    tf = pytest.importorskip("tensorflow")
    _write(tmp_path / "py.tfrecord", [records.encode_example(FEATURES)] * 3)
    spec = {"name": tf.io.FixedLenFeature([], tf.string),
            "floats": tf.io.FixedLenFeature([4], tf.float32),
            "ints": tf.io.FixedLenFeature([5], tf.int64),
            "one": tf.io.FixedLenFeature([1], tf.int64)}
    seen = 0
    for raw in tf.data.TFRecordDataset(str(tmp_path / "py.tfrecord")):  # checks every CRC
        ex = tf.io.parse_single_example(raw, spec)
        assert ex["name"].numpy() == FEATURES["name"]
        for key in ("floats", "ints", "one"):
            np.testing.assert_array_equal(ex[key].numpy(), FEATURES[key])
        seen += 1
    assert seen == 3


def test_python_reads_what_tensorflow_writes(tmp_path):
    tf = pytest.importorskip("tensorflow")
    feature = {
        "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[FEATURES["name"]])),
        "floats": tf.train.Feature(float_list=tf.train.FloatList(value=FEATURES["floats"])),
        "ints": tf.train.Feature(int64_list=tf.train.Int64List(value=FEATURES["ints"])),
        "one": tf.train.Feature(int64_list=tf.train.Int64List(value=FEATURES["one"])),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as writer:
        writer.write(example)
    raw = (tmp_path / "tf.tfrecord").read_bytes()
    assert raw == records.frame(example)  # the same framing, byte for byte
    (decoded,) = records.read_examples(tmp_path / "tf.tfrecord")
    assert decoded["name"] == FEATURES["name"]
    for key in ("floats", "ints", "one"):
        np.testing.assert_array_equal(decoded[key], FEATURES[key])
