"""The fault suite, `cpm-nb convert-caffe` and the Caffe readers: values checked for
meaning (finite weights, integer sizes in range, plain unique layer names, joint names),
crafted files as one line, non-regular inputs refused, outputs checked before any work,
and a conversion that fails its parity check never written.

Shared fixtures: tests/faults/conftest.py; bad inputs: tests/fault_kit.py."""

from __future__ import annotations

import os

import numpy as np
import pytest
from fault_kit import one_line_error, run, snapshot

from cpm_nb.caffe import net as caffe_net
from cpm_nb.caffe import proto as caffe_proto
from cpm_nb.io import protowire
from cpm_nb.model import architecture

SMALL = architecture.get_config("cpm-mpii-release").replace(
    name="small", input_size=64, width=0.125, stages=2, center_sigma=21.0 * 64 / 368)


def _files(folder, layers=None, text=None):
    """A deploy prototxt and caffemodel of SMALL in ``folder`` (``layers``: the weights,
    to damage; ``text``: a change to the prototxt's text)."""
    folder.mkdir(parents=True, exist_ok=True)
    proto = folder / "deploy.prototxt"
    deploy = caffe_net.deploy_prototxt(SMALL)
    proto.write_text(text(deploy) if text else deploy)
    weights = folder / "weights.caffemodel"
    weights.write_bytes(caffe_proto.caffemodel_bytes(
        layers if layers is not None else caffe_net.random_weights(SMALL, 0)))
    return proto, weights


def _convert(tmp_path, capsys, proto, weights, *extra):
    before = snapshot(tmp_path)
    code, out, err = run(["convert-caffe", "--prototxt", proto, "--caffemodel", weights,
                          "--out", tmp_path / "run", *extra], capsys)
    assert code == 2 and out == ""
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()
    return err


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_naming_the_layer(tmp_path, capsys, value):
    layers = caffe_net.random_weights(SMALL, 0)
    name, kind, blobs = layers[0]
    blobs = [b.copy() for b in blobs]
    blobs[0].flat[3] = value
    proto, weights = _files(tmp_path / "in", [(name, kind, blobs), *layers[1:]])
    err = _convert(tmp_path, capsys, proto, weights)
    one_line_error(err, f"layer {name!r}", "NaN or infinite")


def _raw_layer(name: str, blob: bytes) -> bytes:
    body = (protowire.field_bytes(1, name.encode()) + protowire.field_bytes(2, b"Convolution")
            + protowire.field_bytes(7, blob))
    return protowire.field_bytes(100, body)


@pytest.mark.parametrize("blob, message", [
    (protowire.field_bytes(7, protowire.field_bytes(1, b"\x03")) +
     protowire.field_bytes(5, b"\x00" * 13), "not a whole number of 4-byte floats"),
    (protowire.field_bytes(7, 5) + protowire.field_bytes(5, b"\x00" * 20),
     "blob shape sent as a number"),
    (protowire.field_bytes(7, protowire.field_bytes(1, protowire.varint_bytes(1 << 40)))
     + protowire.field_bytes(5, b""), "dimension out of range"),
])
def test_crafted_blobs_are_one_line(tmp_path, capsys, blob, message):
    """Fields that parse but mean nothing: a data field not a multiple of 4 bytes, a
    BlobShape sent as a varint, a dimension of 2^40."""
    proto, weights = _files(tmp_path / "in")
    weights.write_bytes(_raw_layer("conv1_1", blob))
    err = _convert(tmp_path, capsys, proto, weights)
    one_line_error(err, str(weights), message)
    assert "memory" not in err


@pytest.mark.parametrize("change, message", [
    (lambda t: t.replace("kernel_size: 3", "kernel_size: 9.5", 1), "must be an integer"),
    (lambda t: t.replace("kernel_size: 3", "kernel_size: 0", 1), "must be from 1"),
    (lambda t: t.replace("kernel_size: 9\n    stride: 8", "kernel_size: 9\n    stride: 0"),
     "stride must be from 1"),
    (lambda t: t.replace("input_dim: 64", "input_dim: 1e400", 1), "input_dim must be"),
    (lambda t: t.replace("input_dim: 64", "input_dim: -64", 1), "input_dim must be"),
    (lambda t: t + "a { " * 2000 + "}" * 2000, "nested more than"),
    (lambda t: t.replace('name: "conv1_2"', 'name: "conv1/2"', 1), "'conv1/2' is empty or"),
    (lambda t: t.replace('name: "conv1_2"', 'name: "conv1_1"', 1), "appears twice"),
    (lambda t: t.replace('name: "conv1_2"', 'name: ""', 1), "is empty or"),
])
def test_prototxt_values_are_checked_for_meaning(tmp_path, capsys, change, message):
    proto, weights = _files(tmp_path / "in", text=change)
    err = _convert(tmp_path, capsys, proto, weights)
    one_line_error(err, "deploy.prototxt", message)


@pytest.mark.parametrize("joints, message", [
    ("head,head" + ",j" * 13, "'head' is given twice"),
    ("a,,b" + ",j%d" * 0, "is empty"),
    ("", "is empty"),
])
def test_joint_names_must_be_unique_and_non_empty(tmp_path, capsys, joints, message):
    if "twice" in message:
        joints = ",".join(["head", "head"] + [f"j{i}" for i in range(13)])
    proto, weights = _files(tmp_path / "in")
    err = _convert(tmp_path, capsys, proto, weights, "--joints", joints)
    one_line_error(err, message)


def test_dev_zero_and_a_folder_are_refused_not_read(tmp_path, capsys):
    proto, _ = _files(tmp_path / "in")
    for weights, message in (("/dev/zero", "not a regular file"), (tmp_path, "is a folder")):
        err = _convert(tmp_path, capsys, proto, weights)
        line = one_line_error(err, str(weights), message)
        assert "memory" not in line and "batch-size" not in line


def test_a_fifo_without_a_writer_is_given_up(tmp_path, capsys, monkeypatch):
    from cpm_nb.core import files

    monkeypatch.setattr(files, "PIPE_WAIT_S", 0.3)
    proto, _ = _files(tmp_path / "in")
    fifo = tmp_path / "in" / "weights.fifo"
    os.mkfifo(fifo)
    err = _convert(tmp_path, capsys, proto, fifo)
    one_line_error(err, str(fifo), "a pipe that sent nothing")


def test_out_that_is_a_file_fails_before_the_conversion(tmp_path, capsys, monkeypatch):
    from cpm_nb.caffe import convert

    def never(*args, **kwargs):
        raise AssertionError("converted before checking --out")

    monkeypatch.setattr(convert, "convert", never)
    proto, weights = _files(tmp_path / "in")
    target = tmp_path / "a-file"
    target.write_text("keep me")
    code, _, err = run(["convert-caffe", "--prototxt", proto, "--caffemodel", weights,
                        "--out", target], capsys)
    assert code == 2 and target.read_text() == "keep me"
    one_line_error(err, "--out", "is a file, not a folder")


@pytest.mark.parametrize("onto", ["caffemodel", "prototxt"])
def test_json_out_onto_an_input_is_refused(tmp_path, capsys, onto):
    proto, weights = _files(tmp_path / "in")
    target = weights if onto == "caffemodel" else proto
    err = _convert(tmp_path, capsys, proto, weights, "--json-out", target)
    one_line_error(err, "--json-out", "would overwrite its own input")


def test_a_parity_miss_fails_and_writes_nothing(tmp_path, capsys, monkeypatch):
    pytest.importorskip("cv2")
    from cpm_nb.caffe import convert

    def off(run, *args, **kwargs):
        assert (run / "model.keras").is_file()  # checked where it was built: staging
        return [{"stage": "stage1", "max_abs_diff": 0.5, "map_range": 1.0, "relative": 0.49}]

    monkeypatch.setattr(convert, "parity", off)
    proto, weights = _files(tmp_path / "in")
    err = _convert(tmp_path, capsys, proto, weights, "--check")
    one_line_error(err, "--check", "0.49 of the map range", "nothing was written")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]  # no staging left
