"""The fault suite: every command (but train/evaluate) and the Python API, fed bad input
as a careless or hostile user would.  Each case checks the exit status, a one-line
message without a traceback, and that the good files from before are byte-identical.

The classes of issue 13, with the tests that cover them:
1 failure destroys good output   2 resume   3 paths from data files   4 pixel formats
5 degenerate values   6 tracebacks   7 one bad image aborts a batch   8 option parsing
9 where files go.  SIGKILL and concurrency: tests/test_faults_processes.py.
"""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest
from fault_kit import (
    PHOTO,
    bomb_jpeg,
    bomb_png,
    flip_byte,
    good_images,
    gray16,
    jpeg,
    leftovers,
    make_mpii,
    make_run_folder,
    one_line_error,
    png,
    rgb16,
    run,
    snapshot,
    truncated,
    write_gt,
)
from PIL import Image

from cpm_nb.core import errors, files, paths
from cpm_nb.data import mpii, shards, synthetic
from cpm_nb.data.synthetic_set import SyntheticSpec
from cpm_nb.inference import export
from cpm_nb.inference import predict as P
from cpm_nb.io import images

# --- shared, built once -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return make_run_folder(tmp_path_factory.mktemp("run"))


@pytest.fixture
def synthetic_copy(synthetic_master, tmp_path, monkeypatch):
    """A private copy of the prepared synthetic set: (data root, set folder, tfrecords)."""
    root = tmp_path / "data"
    shutil.copytree(synthetic_master, root)
    monkeypatch.setenv("CPM_NB_DATA", str(root))
    from cpm_nb.core.config import get_profile

    spec = SyntheticSpec.from_profile(get_profile())
    return root, spec.root, spec.tfrecord_dir


@pytest.fixture
def prepared_mpii(tmp_path, capsys):
    """A good `prepare mpii` output: (argv, its tfrecords folder)."""
    argv = make_mpii(tmp_path, good_images())
    code, _, err = run(argv, capsys)
    assert code == 0, err
    return argv, tmp_path / "root" / "tfrecords-32"


def _summary(argv, capsys, *extra):
    code, out, err = run([*argv, *extra, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


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
    one_line_error(err, "No space left on device", str(out))
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


def test_export_that_fails_its_parity_check_keeps_the_previous_export(run_folder, tmp_path,
                                                                      capsys, monkeypatch):
    out = tmp_path / "exported"
    (out / "saved_model").mkdir(parents=True)
    (out / "saved_model" / "saved_model.pb").write_bytes(b"the previous good export")
    (out / "cpm_config.json").write_text("{}\n")
    before = snapshot(out)

    def fake_savedmodel(model, folder):
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"a broken export")
        return folder

    monkeypatch.setattr(export, "export_savedmodel", fake_savedmodel)
    monkeypatch.setattr(export, "savedmodel_runner",
                        lambda folder: lambda x: [np.zeros((1, 8, 8, 16), np.float32)])
    code, _, err = run(["export", "--model", run_folder, "--out", out, "--format",
                        "savedmodel"], capsys)
    assert code == 1
    one_line_error(err, "differs from the Keras model", "nothing was written")
    after = snapshot(out)
    assert {k: after.get(k) for k in before} == before and not leftovers(out)
    assert set(after) == set(before)  # not even the folder's lock file is left


def test_a_failed_command_leaves_an_existing_json_out_alone(tmp_path, capsys):
    gt = tmp_path / "gt.mat"
    write_gt(gt)
    scores = tmp_path / "scores.json"
    scores.write_text('{"mean": 90.0}\n')
    before = snapshot(scores)
    code, _, err = run(["evaluate-mpii", "--annotations", gt, "--predictions",
                        tmp_path / "missing.mat", "--json-out", scores], capsys)
    assert code == 2
    one_line_error(err, "predictions file not found", "missing.mat")
    assert snapshot(scores) == before


def test_atomic_write_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "meta.json"
    files.atomic_write_json(target, {"good": True})
    before = snapshot(target)

    def no_rename(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(files.os, "replace", no_rename)
    with pytest.raises(OSError):
        files.atomic_write_json(target, {"good": False})
    assert snapshot(target) == before and not leftovers(tmp_path)


def test_atomic_output_removes_its_temp_file_when_the_block_fails(tmp_path):
    target = tmp_path / "overlay.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the writer crashed")
    assert target.read_bytes() == b"old" and not leftovers(tmp_path)


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
    summary = _summary(argv, capsys)
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


# === 4. pixel formats ===================================================================================


def _mode_image(kind: str) -> bytes:
    gray = np.tile(np.arange(0, 200, dtype=np.uint8), (160, 1))
    rgba = np.dstack([PHOTO, np.full((160, 200), 255, np.uint8)])
    rgba[:, :100, 3] = 0  # left half transparent
    if kind == "rgb16":
        return rgb16()
    if kind == "gray16":
        return gray16()
    if kind == "palette":
        return png(Image.fromarray(PHOTO).convert("P"))
    if kind == "palette+transparency":
        return png(Image.fromarray(gray).convert("P"), transparency=0)
    if kind == "gray+alpha":
        return png(Image.fromarray(rgba).convert("LA"))
    if kind == "rgba":
        return png(Image.fromarray(rgba))
    if kind == "1-bit":
        return png(Image.fromarray(gray > 100))
    if kind == "cmyk":
        return _save(Image.fromarray(PHOTO).convert("CMYK"), "JPEG")
    if kind == "int32":
        return _save(Image.fromarray(gray.astype(np.int32) * 329), "TIFF")  # 0..65471
    if kind == "float":
        return _save(Image.fromarray(gray.astype(np.float32) / 199), "TIFF")  # 0..1
    raise ValueError(kind)


def _save(image, fmt) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("kind, conversion", [
    ("rgb16", None),  # Pillow itself keeps the high byte of 16-bit RGB
    ("gray16", images.CONVERTED_HIGH_BIT_DEPTH),
    ("int32", images.CONVERTED_HIGH_BIT_DEPTH),
    ("float", images.CONVERTED_HIGH_BIT_DEPTH),
    ("palette", images.CONVERTED_PALETTE),
    ("palette+transparency", images.CONVERTED_ALPHA),
    ("gray+alpha", images.CONVERTED_ALPHA),
    ("rgba", images.CONVERTED_ALPHA),
    ("1-bit", images.CONVERTED_GRAYSCALE),
    ("cmyk", images.CONVERTED_CMYK),
])
def test_every_pixel_format_becomes_8bit_rgb(tmp_path, kind, conversion):
    path = tmp_path / f"{kind}.img"
    path.write_bytes(_mode_image(kind))
    rgb, how = images.load_rgb(path)
    a = np.asarray(rgb)
    assert rgb.mode == "RGB" and a.dtype == np.uint8 and how == conversion
    if kind == "rgb16":
        assert a[0, 0].tolist() == [255, 128, 0]
    if kind in ("gray16", "int32", "float"):  # scaled, not clipped to white
        assert a.min() <= 2 and a.max() >= 250 and 100 < np.median(a) < 156
    if kind in ("rgba", "gray+alpha"):
        assert (a[:, :100] == 255).all()  # transparent -> white


def test_16bit_gray_keeps_its_levels(tmp_path):
    path = tmp_path / "levels.png"
    path.write_bytes(gray16(np.array([[0, 257, 32768, 65535]], np.uint16)))
    assert np.asarray(images.load_rgb(path)[0])[0, :, 0].tolist() == [0, 1, 128, 255]
    assert images.load_image(path)[0, :, 0].tolist() == [0, 1, 128, 255]  # predict's loader too


def test_prepare_converts_and_counts_16bit_palette_and_alpha(tmp_path, capsys):
    images = {"a.jpg": jpeg(), "b16.png": _mode_image("gray16"), "p.png":
              _mode_image("palette"), "t.png": _mode_image("rgba")}
    summary = _summary(make_mpii(tmp_path, images), capsys)
    train = summary["splits"]["train"]
    assert train["kept"] == 3 and train["skipped"] == {}
    assert train["fixed"] == {shards.FIX_HIGH_BIT_DEPTH: 1, shards.FIX_PALETTE: 1,
                              shards.FIX_ALPHA: 1}


# === 5. degenerate values ===============================================================================


def _zero_box(boxes):
    boxes[:, :, 1] = boxes[0, :, 1]  # person 2: both corners equal


def _nan_box(boxes):
    boxes[0, 0, 2] = np.nan  # person 3


def _nan_joint(pos):
    pos[12, 0, 3] = np.nan  # person 4, right shoulder


def _all_missing(missing):
    missing[:] = 1


@pytest.mark.parametrize("change, needles", [
    ({"headboxes_src": _zero_box}, ["1 person (1-based: 2) has a zero-size", "gt.mat"]),
    ({"headboxes_src": _nan_box}, ["1 person (1-based: 3)", "non-finite head box"]),
    ({"pos_gt_src": _nan_joint}, ["1 person (1-based: 4)", "NaN or infinite annotated"]),
    ({"jnt_missing": _all_missing}, ["no annotated joint", "nothing to score"]),
])
def test_evaluate_mpii_refuses_ground_truth_without_a_defined_pckh(tmp_path, capsys, change,
                                                                   needles):
    gt = tmp_path / "gt.mat"
    pos = write_gt(gt, **change)
    pred = tmp_path / "pred.mat"
    from scipy.io import savemat

    savemat(pred, {"preds": np.nan_to_num(np.transpose(pos, (2, 0, 1)))})
    before = snapshot(tmp_path)
    code, out, err = run(["evaluate-mpii", "--annotations", gt, "--predictions", pred], capsys)
    assert code == 2 and out == ""
    one_line_error(err, *needles)
    assert snapshot(tmp_path) == before


def test_a_zero_head_box_without_annotated_joints_counts_for_nothing(tmp_path, capsys):
    def person2_unannotated(missing):
        missing[:, 1] = 1

    gt = tmp_path / "gt.mat"
    pos = write_gt(gt, headboxes_src=_zero_box, jnt_missing=person2_unannotated)
    pred = tmp_path / "pred.mat"
    from scipy.io import savemat

    savemat(pred, {"preds": np.transpose(pos, (2, 0, 1))})
    code, out, err = run(["evaluate-mpii", "--annotations", gt, "--predictions", pred,
                          "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["mean"] == 100.0 and "nan" not in out.lower()


NUMERIC = [
    (["prepare", "mpii", "--root", "{tmp}/r", "--max-people", "-3"], "integer >= 1, got -3"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--max-people", "0"], "integer >= 1, got 0"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--max-people", "many"], "expected an integer"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--input-size", "30"], "a multiple of 8, got 30"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--input-size", "100000"], "from 16 to 2048"),
    (["prepare", "synthetic", "--seed", "-1"], "integer >= 0, got -1"),
    (["predict", "x.jpg", "--model", "{run}", "--out", "{tmp}/o", "--batch-size", "0"],
     "integer from 1 to 256, got 0"),
    (["predict", "x.jpg", "--model", "{run}", "--out", "{tmp}/o", "--scale", "0"],
     "number > 0, got 0"),
    (["predict", "x.jpg", "--model", "{run}", "--out", "{tmp}/o", "--scale", "nan"],
     "number > 0, got nan"),
    (["predict", "x.jpg", "--model", "{run}", "--out", "{tmp}/o", "--center", "inf", "3"],
     "--center: must be a number"),
    (["predict", "x.jpg", "--model", "{run}", "--out", "{tmp}/o", "--min-confidence", "2"],
     "number in [0, 1], got 2"),
    (["evaluate-mpii", "--annotations", "a", "--predictions", "b", "--threshold", "0"],
     "number in (0, 1], got 0"),
    (["evaluate-mpii", "--annotations", "a", "--predictions", "b", "--threshold", "1.5"],
     "number in (0, 1], got 1.5"),
    (["notebooks", "--timeout", "0"], "integer >= 1, got 0"),
]


@pytest.mark.parametrize("argv, message", NUMERIC, ids=[f"{a[0]}{a[-2]}{a[-1]}"
                                                         for a, _ in NUMERIC])
def test_numeric_options_name_their_valid_range(tmp_path, capsys, run_folder, argv, message):
    argv = [a.format(tmp=tmp_path, run=run_folder) for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    one_line_error(err, message)
    assert list(tmp_path.iterdir()) == []  # nothing was done


# === 6. one line, never a traceback ============================================================================


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


OUTPUTS = [
    (["evaluate-mpii", "--annotations", "{gt}", "--predictions", "{gt}", "--json-out",
      "{tmp}"], "--json-out {tmp} is a folder"),
    (["evaluate-mpii", "--annotations", "{gt}", "--predictions", "{gt}", "--json-out",
      "{gt}/s.json"], "{gt} is a file, not a folder"),
    (["predict", "{img}", "--model", "{run}", "--out", "{gt}"], "--out {gt} is a file"),
    (["predict", "{img}", "--model", "{run}", "--out", "{tmp}/o", "--json-out", "{img}"],
     "is both an input image and an output"),
    (["export", "--model", "{run}", "--out", "{gt}"], "--out {gt} is a file"),
    (["prepare", "mpii", "--root", "{gt}", "--no-download"], "--root {gt} is a file"),
    (["prepare", "mpii", "--root", "{tmp}/r", "--out", "{gt}/x", "--no-download"],
     "{gt} is a file, not a folder"),
    (["info", "--json-out", "{gt}/info.json"], "{gt} is a file, not a folder"),
]


@pytest.mark.parametrize("argv, message", OUTPUTS, ids=[f"{a[0]}-{i}"
                                                        for i, (a, _) in enumerate(OUTPUTS)])
def test_unwritable_outputs_fail_before_any_work(tmp_path, capsys, run_folder, argv, message):
    gt = tmp_path / "gt.mat"
    write_gt(gt)
    img = tmp_path / "a.jpg"
    img.write_bytes(jpeg())
    before = snapshot(tmp_path)
    fill = dict(tmp=tmp_path, gt=gt, img=img, run=run_folder)
    code, out, err = run([a.format(**fill) for a in argv], capsys)
    assert code == 2 and out == ""
    one_line_error(err, message.format(**fill))
    assert snapshot(tmp_path) == before and sorted(tmp_path.iterdir()) == [img, gt]


@pytest.mark.parametrize("damage", ["truncated", "empty", "not-a-zip", "bad-config"])
def test_damaged_models_are_one_line(run_folder, tmp_path, capsys, damage):
    model = tmp_path / "run"
    shutil.copytree(run_folder, model)
    keras_file, config = model / "model.keras", model / "cpm_config.json"
    if damage == "truncated":
        keras_file.write_bytes(truncated(keras_file.read_bytes(), 0.6))
    elif damage == "empty":
        keras_file.write_bytes(b"")
    elif damage == "not-a-zip":
        keras_file.write_bytes(b"PK\x03\x04 but not really")
    else:
        config.write_text(config.read_text()[:30])
    img = tmp_path / "a.jpg"
    img.write_bytes(jpeg())
    before = snapshot(tmp_path)
    for argv in (["predict", img, "--model", model, "--out", tmp_path / "o"],
                 ["export", "--model", model, "--out", tmp_path / "e"]):
        code, _, err = run(argv, capsys)
        assert code == 2
        one_line_error(err, str(keras_file if damage != "bad-config" else config))
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("which", ["annotations", "split"])
def test_truncated_mat_files_are_one_line(tmp_path, capsys, which):
    argv = make_mpii(tmp_path, good_images(2))
    path = tmp_path / {"annotations": "ann.mat", "split": "split.mat"}[which]
    path.write_bytes(truncated(path.read_bytes(), 0.5))
    code, _, err = run(argv, capsys)
    assert code == 2
    one_line_error(err, str(path))
    assert not (tmp_path / "root" / "tfrecords-32").exists()


def test_truncated_ground_truth_is_one_line(tmp_path, capsys):
    gt = tmp_path / "gt.mat"
    write_gt(gt)
    gt.write_bytes(truncated(gt.read_bytes(), 0.5))
    code, _, err = run(["evaluate-mpii", "--annotations", gt, "--predictions", gt], capsys)
    assert code == 2
    one_line_error(err, "cannot read annotation file", str(gt))


def test_unreadable_data_files_raise_data_errors(tmp_path):
    bad = tmp_path / "people.json"
    bad.write_text('{"format": "cpm-nb-annotations", "people": [{"image": "a.jpg"}]}')
    with pytest.raises(mpii.MpiiFormatError, match="person record is malformed"):
        mpii.read_json(bad)
    bad.write_text('{"trunc')
    with pytest.raises(errors.DataError, match="people.json is unreadable or corrupt"):
        files.read_json(bad)


# === 7. one bad image never aborts a batch ==========================================================


BAD_IMAGES = {
    "bomb.png": (bomb_png(), "decompression bomb"),
    "medium_bomb.png": (bomb_png(10000, 10000), "decompression bomb"),
    "bomb.jpg": (bomb_jpeg(), "decompression bomb"),
    "cut.jpg": (truncated(jpeg()), "unreadable image file"),
    "empty.png": (b"", "not an image file"),
}


def test_predict_reports_each_bad_image_and_does_the_others(run_folder, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, (data, _) in BAD_IMAGES.items():
        (folder / name).write_bytes(data)
    (folder / "good.jpg").write_bytes(jpeg())
    (folder / "deep.png").write_bytes(gray16())
    out = tmp_path / "out"
    out.mkdir()
    (out / "cut_pose.json").write_text('{"previous": "result"}\n')  # from an earlier good run
    before = snapshot(folder, out)
    images = sorted(folder.iterdir())
    code, stdout, err = run(["predict", *images, "--model", run_folder, "--out", out], capsys)
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == len(BAD_IMAGES)
    for name, (_, reason) in BAD_IMAGES.items():
        line = next(x for x in lines if name in x)
        assert line.startswith("cpm-nb predict: error: ") and reason in line
    assert "2 of 7 image(s) done" in stdout
    assert (out / "good_pose.png").is_file() and (out / "deep_pose.json").is_file()
    assert np.asarray(Image.open(out / "deep_pose.png")).mean() < 250  # not clipped to white
    after = snapshot(folder, out)
    assert {k: after[k] for k in before} == before  # inputs and the old result untouched


def test_predict_many_yields_image_errors_for_bombs(run_folder):
    predictor = P.load_predictor(run_folder)
    results = dict(predictor.predict_many([bomb_png(), PHOTO, bomb_jpeg()], batch_size=2))
    assert isinstance(results[0], images.ImageError) and isinstance(results[2], images.ImageError)
    assert isinstance(results[1], P.Prediction)


def test_prepare_skips_and_counts_bad_images(tmp_path, capsys):
    images = {**good_images(2), **{n: d for n, (d, _) in BAD_IMAGES.items()}}
    summary = _summary(make_mpii(tmp_path, images), capsys)
    train = summary["splits"]["train"]
    assert train["kept"] == 1  # img1.jpg (img0.jpg is the validation person)
    assert train["skipped"] == {shards.SKIP_TOO_LARGE: 3, shards.SKIP_UNREADABLE_IMAGE: 2}


def test_the_image_loader_names_the_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    with pytest.raises(images.ImageError, match="bomb.png.*decompression bomb") as err:
        images.load_rgb(path)
    assert err.value.reason == images.ImageError.TOO_LARGE == shards.SKIP_TOO_LARGE


# === 8. option parsing ======================================================================================


def test_json_never_takes_an_image_as_its_value(run_folder, tmp_path, capsys):
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    a.write_bytes(jpeg())
    b.write_bytes(jpeg(PHOTO[::-1]))
    before = snapshot(a, b)
    code, out, err = run(["predict", "--model", run_folder, "--out", tmp_path / "o", "--json",
                          a, b], capsys)
    assert code == 0, err
    doc = json.loads(out)  # stdout is the JSON and nothing else
    assert [r["image"] for r in doc["results"]] == [str(a), str(b)]
    assert snapshot(a, b) == before


@pytest.mark.parametrize("style", ["space", "equals"])
def test_json_with_a_file_name_points_to_json_out(tmp_path, capsys, style):
    gt = tmp_path / "gt.mat"
    write_gt(gt)
    target = tmp_path / "scores.json"
    opt = ["--json", str(target)] if style == "space" else [f"--json={target}"]
    code, out, err = run(["evaluate-mpii", "--annotations", gt, "--predictions", gt, *opt],
                         capsys)
    assert code == 2 and out == ""
    one_line_error(err, "use --json-out FILE")
    assert not target.exists()


def test_json_and_json_out_are_exclusive(tmp_path, capsys):
    code, _, err = run(["info", "--json", "--json-out", tmp_path / "i.json"], capsys)
    assert code == 2
    one_line_error(err, "not allowed with argument")


def test_json_on_stdout_is_only_the_json(tmp_path, capsys):
    argv = make_mpii(tmp_path, good_images(2))
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0
    assert json.loads(out)["source"] == "mpii"
    assert "reading" in err  # the progress line went to stderr


@pytest.mark.parametrize("argv, profile", [
    (["info", "--json", "--profile", "cpu"], "cpu"),
    (["--profile", "gpu", "info", "--json"], "gpu"),
    (["--profile", "gpu", "info", "--profile", "cpu", "--json"], "cpu"),
])
def test_profile_is_accepted_after_the_subcommand(capsys, argv, profile):
    from cpm_nb.core import config

    try:
        code, out, err = run(argv, capsys)
        assert code == 0, err
        assert json.loads(out)["profile"] == profile
    finally:
        config.set_profile("fast")


def test_profile_after_a_nested_subcommand_and_a_bad_one(synthetic_copy, capsys):
    code, out, err = run(["prepare", "synthetic", "--quiet", "--profile", "fast", "--json"],
                         capsys)
    assert code == 0 and json.loads(out)["profile"] == "fast", err
    code, _, err = run(["info", "--profile", "nonsense"], capsys)
    assert code == 2
    one_line_error(err, "unknown profile 'nonsense'")


@pytest.mark.parametrize("raised, status, message", [
    (KeyboardInterrupt(), 130, "interrupted; outputs are written atomically"),
    (MemoryError(), 2, "out of memory; try a smaller --batch-size"),
    (type("ResourceExhaustedError", (Exception,), {})("OOM when allocating tensor"), 2,
     "out of memory (OOM when allocating tensor); try a smaller --batch-size"),
    (type("DataLossError", (Exception,), {})("corrupted record at 12"), 2,
     "corrupted data (corrupted record at 12); re-create the TFRecords"),
    (PermissionError(errno.EACCES, "Permission denied", "/data/x"), 2,
     "Permission denied: /data/x"),
])
def test_failures_deep_inside_a_command_are_one_line(capsys, monkeypatch, raised, status,
                                                     message):
    from cpm_nb.core import session

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(session, "describe", fail)
    code, out, err = run(["info"], capsys)
    assert code == status and out == ""
    one_line_error(err, "cpm-nb info: error: ", message)


# === 9. where files go ======================================================================================


def test_the_working_directory_is_never_the_data_folder(tmp_path, monkeypatch):
    project = tmp_path / "my_project"  # looks like a checkout, but the package is not in it
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "my-project"\n')
    monkeypatch.chdir(project)
    for var in ("CPM_NB_DATA", "CPM_NB_RUNS", "CPM_NB_FIGURES"):
        monkeypatch.delenv(var, raising=False)
    for folder in (paths.data_root(), paths.runs_root(), paths.figures_root(),
                   synthetic.data_dir()):
        assert not folder.resolve().is_relative_to(project.resolve()), folder


def test_outside_a_checkout_everything_goes_to_the_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "checkout_root", lambda: None)
    monkeypatch.setattr(paths, "COLAB_DRIVE", tmp_path / "no-drive")
    for var in ("CPM_NB_DATA", "CPM_NB_RUNS", "CPM_NB_FIGURES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = tmp_path / "xdg" / "cpm_nb"
    assert paths.cache_root() == cache and paths.data_root() == cache
    assert paths.runs_root() == cache / "runs" and paths.figures_root() == cache / "figures"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored (XDG spec)
    assert paths.cache_root() == paths.Path.home() / ".cache" / "cpm_nb"


def test_environment_variables_choose_the_folders(tmp_path, monkeypatch):
    for var, fn in (("CPM_NB_DATA", paths.data_root), ("CPM_NB_RUNS", paths.runs_root),
                    ("CPM_NB_FIGURES", paths.figures_root)):
        monkeypatch.setenv(var, str(tmp_path / var))
        assert fn() == tmp_path / var


# === the Python API: output checks and locks ===================================================================


@pytest.mark.parametrize("kind, make, message", [
    ("file", "dir", "is a folder"),
    ("dir", "file", "is a file, not a folder"),
    ("file", "under-file", "is a file, not a folder"),
])
def test_check_output_path(tmp_path, kind, make, message):
    thing = tmp_path / "thing"
    if make == "dir":
        thing.mkdir()
    else:
        thing.write_text("x")
    target = thing / "out.json" if make == "under-file" else thing
    with pytest.raises(errors.DataError, match=message):
        files.check_output_path(target, kind, "--out")
    assert files.check_output_path(tmp_path / "new" / "deeper", "dir") == \
        tmp_path / "new" / "deeper"


def test_folder_lock_is_reentrant_in_one_thread(tmp_path):
    with files.locked(tmp_path), files.locked(tmp_path):
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()  # released: no lock file left behind
    with files.locked(tmp_path):  # released: can be taken again
        pass
