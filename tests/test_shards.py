"""The prepared shards (cpm_nb.data.shards) and their record schema (cpm_nb.data.schema):
one table that the Python writer, the tf.data reader and the NumPy reader all follow,
tf.data reading exactly what the Python writer wrote (and the reverse), the summary,
worker-independent output, checksums, progress and the folder lock."""

import numpy as np
import pytest

from cpm_nb.core import errors
from cpm_nb.data import schema, shards, synthetic
from cpm_nb.io import records

SIZE = 64


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    data = synthetic.generate(root / "syn", 24, 8, SIZE, seed=1)
    out = root / "tfr"
    summaries = {s: shards.write_tfrecords(people, data.image_dir, out, s, SIZE)
                 for s, people in (("train", data.train), ("val", data.val))}
    return data, out, summaries


def random_values(rng) -> dict:
    values = {}
    for field in schema.FIELDS:
        if field.kind == "bytes":
            values[field.name] = rng.bytes(int(rng.integers(0, 300)))
        elif field.kind == "float":
            values[field.name] = rng.normal(0, 100, field.shape).astype(np.float32)
        else:
            values[field.name] = rng.integers(-2**40, 2**40, field.shape, dtype=np.int64)
    return values


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want) == set(schema.BY_NAME)
    for name, value in want.items():
        if schema.BY_NAME[name].kind == "bytes":
            assert got[name] == value, name
        else:
            assert got[name].shape == value.shape and got[name].dtype == value.dtype, name
            np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_the_schema_round_trips_in_python():
    rng = np.random.default_rng(0)
    for _ in range(5):
        values = random_values(rng)
        assert_same(schema.decode(schema.encode(values)), values)


def test_the_schema_refuses_what_does_not_follow_it():
    values = random_values(np.random.default_rng(1))
    with pytest.raises(ValueError, match="'joints' needs 32 values"):
        schema.encode({**values, "joints": np.zeros(30)})
    with pytest.raises(ValueError, match="'n_others' is missing"):
        schema.encode({k: v for k, v in values.items() if k != "n_others"})
    with pytest.raises(ValueError, match="not fields of the record schema"):
        schema.encode({**values, "extra": b""})
    other = records.encode_example({"joints": np.zeros(32, np.float32)})
    with pytest.raises(errors.DataError, match="shard-7: field 'image' is missing"):
        schema.decode(other, "shard-7")


def test_tf_data_reads_exactly_what_the_python_writer_writes(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(2)
    written = [random_values(rng) for _ in range(4)]
    writer = shards._ShardWriter(tmp_path / "py.tfrecord")  # the writer prepare uses
    for values in written:
        writer.write(schema.encode(values))
    writer.close()
    ds = tf.data.TFRecordDataset(str(tmp_path / "py.tfrecord")).map(
        lambda r: schema.tf_parse(r, tf))
    read = [{k: v.numpy() for k, v in ex.items()} for ex in ds]
    assert len(read) == len(written)
    for got, want in zip(read, written):
        assert_same(got, want)


def test_python_reads_exactly_what_tensorflow_writes(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(3)
    written = [random_values(rng) for _ in range(3)]

    def feature(field, value):
        if field.kind == "bytes":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        if field.kind == "float":
            return tf.train.Feature(float_list=tf.train.FloatList(value=value.ravel()))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=value.ravel()))

    with tf.io.TFRecordWriter(str(tmp_path / "tf.tfrecord")) as w:
        for values in written:
            features = {f.name: feature(f, values[f.name]) for f in schema.FIELDS}
            w.write(tf.train.Example(features=tf.train.Features(feature=features))
                    .SerializeToString())
    read = [schema.decode(r) for r in records.read_records(tmp_path / "tf.tfrecord")]
    for got, want in zip(read, written, strict=True):
        assert_same(got, want)


def test_summary_meta_and_records(prepared):
    data, out, summaries = prepared
    assert summaries["train"]["kept"] == len(data.train)
    assert summaries["val"]["skipped"] == {}
    meta = shards.read_meta(out)
    assert meta["input_size"] == SIZE and meta["context_size"] == 2 * SIZE
    assert shards.count_examples(out, "val") == len(data.val)
    (shard,) = out.glob("val-*.tfrecord")
    assert shards.check_records(shard) == len(data.val)
    by_key = {p.key: p for p in data.val}
    for raw in records.read_records(shard):
        record = schema.decode(raw, shard.name)
        person = by_key[(int(record["img_index"][0]), int(record["person_index"][0]))]
        assert record["image_name"].decode() == person.image
        np.testing.assert_allclose(record["center"], person.objpos, rtol=1e-6)
        assert record["scale"][0] == pytest.approx(person.scale, rel=1e-6)
    assert not (out / ".lock").exists()  # the folder's lock went with the job


def test_shards_do_not_depend_on_the_number_of_workers(prepared, tmp_path):
    data, _, _ = prepared
    outs = []
    for workers in (1, 3):
        out = tmp_path / f"w{workers}"
        shards.write_tfrecords(data.val, data.image_dir, out, "val", SIZE, workers=workers)
        outs.append(sorted((f.name, f.read_bytes()) for f in out.glob("*.tfrecord")))
    assert outs[0] == outs[1]


def test_a_flipped_bit_is_found_naming_the_shard(prepared, tmp_path):
    _, out, _ = prepared
    shard = next(out.glob("train-*.tfrecord"))
    damaged = bytearray(shard.read_bytes())
    damaged[len(damaged) // 2] ^= 0x10
    (tmp_path / shard.name).write_bytes(bytes(damaged))
    with pytest.raises(errors.DataError, match=rf"{shard.name} is corrupted after \d+ records"):
        shards.check_records(tmp_path / shard.name, fix="prepare again")


def test_headless_progress_is_lines_on_stderr(prepared, tmp_path, capsys, monkeypatch):
    data, _, _ = prepared
    monkeypatch.setenv("CPM_NB_STATIC", "1")
    shards.write_tfrecords(data.val, data.image_dir, tmp_path / "p", "val", SIZE, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert err and err[-1].startswith(f"cropping val: {len(data.val)}/{len(data.val)} people (")
