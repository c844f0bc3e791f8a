"""The fault suite, `cpm-nb prepare` and the data caches: failures keep the old set, names
stay in their folder, damaged shards and metadata are rebuilt, bad images are skipped and
counted.

Shared fixtures: tests/faults/conftest.py; bad inputs: tests/fault_kit.py."""

from __future__ import annotations

import errno
import json

import pytest
from fault_kit import (
    BAD_IMAGES,
    flip_byte,
    good_images,
    jpeg,
    json_summary,
    leftovers,
    make_mpii,
    one_line_error,
    run,
    snapshot,
    truncated,
)

from cpm_nb.core import errors, files
from cpm_nb.data import shards, synthetic
from cpm_nb.io import images

# === 1. a failure never destroys earlier good output ===============================================


def test_prepare_mpii_disk_full_mid_split_keeps_the_old_shards(prepared_mpii, capsys,
                                                               monkeypatch):
    argv, out = prepared_mpii
    before = snapshot(out)
    calls = []
    real = shards._process_image

    def full(*args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(out))
        return real(*args)

    monkeypatch.setattr(shards, "_process_image", full)
    code, _, err = run(argv, capsys)
    assert code == 2
    one_line_error(err, "no space left on the disk while writing", str(out), "free some space")
    assert snapshot(out) == before and not leftovers(out)


def test_prepare_synthetic_failure_mid_render_keeps_the_old_set(synthetic_copy, capsys,
                                                                monkeypatch):
    root, _, _ = synthetic_copy
    before = snapshot(root)
    calls = []
    real = synthetic._generate_one

    def broken(job):
        calls.append(1)
        if len(calls) == 10:
            raise OSError(errno.EIO, "Input/output error", "images/train/000009.jpg")
        return real(job)

    monkeypatch.setattr(synthetic, "_generate_one", broken)
    code, _, err = run(["prepare", "synthetic", "--force", "--quiet"], capsys)
    assert code == 2
    one_line_error(err, "Input/output error", "000009.jpg")
    assert snapshot(root) == before and not leftovers(root)



def test_an_interrupted_split_commit_is_rolled_forward(tmp_path, monkeypatch):
    """A crash after a split's journal was written: the next write finishes the commit,
    so meta.json always describes the shards on disk."""
    data = synthetic.generate(tmp_path / "set", 6, 2, 64, seed=3)
    out = tmp_path / "tfr"
    shards.write_tfrecords(data.val, data.image_dir, out, "val", 64)
    real = shards._apply

    def crash(out_dir, journal):
        raise OSError(errno.EIO, "simulated crash while committing", str(journal))

    monkeypatch.setattr(shards, "_apply", crash)
    with pytest.raises(OSError):
        shards.write_tfrecords(data.train, data.image_dir, out, "train", 64)
    assert (out / ".commit-train.json").is_file()
    monkeypatch.setattr(shards, "_apply", real)
    with files.locked(out):
        shards.recover(out)
    assert not (out / ".commit-train.json").exists() and not leftovers(out)
    meta = shards.read_meta(out)
    assert meta["splits"]["train"]["kept"] == len(data.train)
    shards.check_shards(out, "train", deep=True)
    shards.check_shards(out, "val", deep=True)


def test_temp_shards_of_a_dead_writer_are_removed(tmp_path):
    data = synthetic.generate(tmp_path / "set", 2, 2, 64, seed=3)
    out = tmp_path / "tfr"
    out.mkdir()
    (out / ".train-00000-of-00001.tfrecord.deadbeef.tmp").write_bytes(b"half a shard")
    shards.write_tfrecords(data.train, data.image_dir, out, "train", 64)
    assert not leftovers(out)


# === 3. names read from data files stay inside their folder =========================================


@pytest.mark.parametrize("name", ["../outside.jpg", "sub/../../outside.jpg", "ABSOLUTE"])
def test_prepare_refuses_image_names_outside_the_image_folder(tmp_path, capsys, monkeypatch,
                                                              name):
    (tmp_path / "outside.jpg").write_bytes(jpeg())  # a readable image, outside --images
    name = str(tmp_path / "outside.jpg") if name == "ABSOLUTE" else name
    argv = make_mpii(tmp_path, good_images(2), names=["img0.jpg", "img1.jpg", name])
    opened = []
    real = images.open_image
    monkeypatch.setattr(images, "open_image", lambda p: opened.append(str(p)) or real(p))
    summary = json_summary(argv, capsys)
    assert summary["splits"]["train"]["kept"] == 1
    assert summary["splits"]["train"]["skipped"] == {shards.SKIP_ESCAPING_NAME: 1}
    assert not any("outside" in p for p in opened)


@pytest.mark.parametrize("name, ok", [
    ("a/b.jpg", True), ("./a/./b.jpg", True), ("../x.jpg", False), ("a/../../x.jpg", False),
    ("/etc/passwd", False), ("", False), ("a\0b.jpg", False),
])
def test_inside_keeps_names_in_their_folder(tmp_path, name, ok):
    if ok:
        assert files.inside(tmp_path, name).resolve().is_relative_to(tmp_path.resolve())
    else:
        with pytest.raises(files.EscapingPathError, match="data.json"):
            files.inside(tmp_path, name, "data.json")



def test_a_truncated_shard_is_found_and_written_again(synthetic_copy, capsys):
    _, _, tfr = synthetic_copy
    shard = next(tfr.glob("train-*.tfrecord"))
    good = shard.read_bytes()
    shard.write_bytes(truncated(good, 0.7))
    code, out, err = run(["prepare", "synthetic", "--quiet"], capsys)
    assert code == 0, err
    assert "re-written: TFRecord shard" in out and shard.name in out
    assert shard.read_bytes() == good  # the same deterministic shard again


def test_a_bit_flipped_shard_is_found_and_written_again(synthetic_copy, capsys):
    _, _, tfr = synthetic_copy
    shard = next(tfr.glob("val-*.tfrecord"))
    good = shard.read_bytes()
    flip_byte(shard)
    code, out, err = run(["prepare", "synthetic", "--quiet", "--json"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["written"] and "is corrupted" in summary["repaired"]
    assert shard.read_bytes() == good


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_check_shards_names_the_damaged_shard_and_the_fix(synthetic_copy, damage):
    _, _, tfr = synthetic_copy
    shard = next(tfr.glob("train-*.tfrecord"))
    if damage == "truncate":
        shard.write_bytes(truncated(shard.read_bytes(), 0.5))
    elif damage == "flip":
        flip_byte(shard, 0.3)
    else:
        shard.unlink()
    with pytest.raises(errors.DataError) as caught:
        shards.check_shards(tfr, "train", deep=True, fix="run `cpm-nb prepare synthetic`")
    message = str(caught.value)
    assert shard.name in message and "cpm-nb prepare synthetic" in message
    assert "\n" not in message


@pytest.mark.parametrize("target", ["tfrecords/meta.json", "set/meta.json", "set/train.json"])
def test_corrupt_cache_metadata_is_rebuilt(synthetic_copy, capsys, target):
    _, folder, tfr = synthetic_copy
    path = {"tfrecords": tfr, "set": folder}[target.split("/")[0]] / target.split("/")[1]
    good = snapshot(folder)
    path.write_text(path.read_text()[:40])
    code, _, err = run(["prepare", "synthetic", "--quiet"], capsys)
    assert code == 0, err
    after = snapshot(folder)
    pixels = (".jpg", ".tfrecord")  # the JSON files carry timings, the pixels must not change
    assert {k: v for k, v in after.items() if k.endswith(pixels)} == \
        {k: v for k, v in good.items() if k.endswith(pixels)}
    assert after.keys() == good.keys()



@pytest.mark.parametrize("which", ["annotations", "split"])
def test_truncated_mat_files_are_one_line(tmp_path, capsys, which):
    argv = make_mpii(tmp_path, good_images(2))
    path = tmp_path / {"annotations": "ann.mat", "split": "split.mat"}[which]
    path.write_bytes(truncated(path.read_bytes(), 0.5))
    code, _, err = run(argv, capsys)
    assert code == 2
    one_line_error(err, str(path))
    assert not (tmp_path / "root" / "tfrecords-32").exists()



def test_prepare_skips_and_counts_bad_images(tmp_path, capsys):
    images = {**good_images(2), **{n: d for n, (d, _) in BAD_IMAGES.items()}}
    summary = json_summary(make_mpii(tmp_path, images), capsys)
    train = summary["splits"]["train"]
    assert train["kept"] == 1  # img1.jpg (img0.jpg is the validation person)
    assert train["skipped"] == {shards.SKIP_TOO_LARGE: 3, shards.SKIP_UNREADABLE_IMAGE: 2}
