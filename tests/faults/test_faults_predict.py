"""The fault suite, `cpm-nb predict` and the image loader: every pixel format, one bad image
never aborts a batch, bombs.

Shared fixtures: tests/faults/conftest.py; bad inputs: tests/fault_kit.py."""

from __future__ import annotations

import numpy as np
import pytest
from fault_kit import (
    BAD_IMAGES,
    PHOTO,
    bomb_jpeg,
    bomb_png,
    gray16,
    jpeg,
    json_summary,
    make_mpii,
    one_line_error,
    png,
    rgb16,
    run,
    snapshot,
)
from PIL import Image

from cpm_nb.data import shards
from cpm_nb.inference import predict as P
from cpm_nb.io import images

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
    summary = json_summary(make_mpii(tmp_path, images), capsys)
    train = summary["splits"]["train"]
    assert train["kept"] == 3 and train["skipped"] == {}
    assert train["fixed"] == {shards.FIX_HIGH_BIT_DEPTH: 1, shards.FIX_PALETTE: 1,
                              shards.FIX_ALPHA: 1}




# === 7. one bad image never aborts a batch ==========================================================




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




def test_the_image_loader_names_the_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png())
    with pytest.raises(images.ImageError, match="bomb.png.*decompression bomb") as err:
        images.load_rgb(path)
    assert err.value.reason == images.ImageError.TOO_LARGE == shards.SKIP_TOO_LARGE


# === geometry from the decoded, oriented image ================================================


def _exif_jpeg(array, orientation: int) -> bytes:
    import io

    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


def test_exif_rotated_photo_is_placed_as_the_user_sees_it(tmp_path):
    """Orientation 6 (a phone held upright): stored 200x160, seen 160x200.  Centre, scale
    and a --box are in the seen frame, and the crop equals the crop of the same photo
    stored upright."""
    stored = PHOTO  # [160, 200, 3]
    seen = np.ascontiguousarray(np.rot90(stored, k=-1))  # what orientation 6 displays
    rotated, upright = tmp_path / "rotated.jpg", tmp_path / "upright.jpg"
    rotated.write_bytes(_exif_jpeg(stored, 6))
    upright.write_bytes(jpeg(seen, quality=95))
    a, b = P.prepare(rotated, 64), P.prepare(upright, 64)
    assert a.image_size == b.image_size == (160, 200)
    assert a.person.center == b.person.center == (80.5, 100.5)
    assert a.person.scale == b.person.scale == 1.0
    assert np.abs(a.crops.astype(int) - b.crops.astype(int)).mean() < 4  # JPEG noise only
    boxed = P.prepare(rotated, 64, box=(20, 150, 140, 195))  # y beyond the stored height
    assert boxed.person.center == (80.0, 172.5)


# === values checked for meaning =====================================================================


@pytest.mark.parametrize("argv, message", [
    (["--scale", "1e300"], "does not fit the 200x160 image"),
    (["--scale", "1e-6"], "does not fit the 200x160 image"),
])
def test_an_absurd_scale_is_refused_per_image(run_folder, tmp_path, capsys, argv, message):
    img = tmp_path / "a.jpg"
    img.write_bytes(jpeg())
    code, out, err = run(["predict", img, "--model", run_folder, "--out", tmp_path / "o",
                          *argv], capsys)
    assert code == 1
    one_line_error(err, str(img), message)
    assert not list((tmp_path / "o").glob("*.json"))


def test_scale_factors_are_bounded():
    with pytest.raises(ValueError, match="from 0.1 to 10"):
        P.scale_factors([1e300])


# === non-regular files =======================================================================


def test_a_fifo_without_a_writer_does_not_hang_the_batch(run_folder, tmp_path, capsys,
                                                        monkeypatch):
    import os

    from cpm_nb.core import files

    monkeypatch.setattr(files, "PIPE_WAIT_S", 0.3)
    fifo, good = tmp_path / "stuck.jpg", tmp_path / "good.jpg"
    os.mkfifo(fifo)
    good.write_bytes(jpeg())
    code, out, err = run(["predict", fifo, good, "/dev/zero", "--model", run_folder,
                          "--out", tmp_path / "o"], capsys)
    assert code == 1 and "2 failed" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert "a pipe that sent nothing" in lines[0] and "not a regular file" in lines[1]
    assert (tmp_path / "o" / "good_pose.json").is_file()


def test_an_image_from_a_pipe_is_read(run_folder, tmp_path, capsys):
    """`cpm-nb predict <(cat photo.jpg)`: the pipe is read (up to a cap) and predicted."""
    import os
    import threading

    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    data = jpeg()

    def writer():
        with open(fifo, "wb") as f:
            f.write(data)

    thread = threading.Thread(target=writer)
    thread.start()
    code, out, err = run(["predict", fifo, "--model", run_folder, "--out", tmp_path / "o"],
                         capsys)
    thread.join(5)
    assert code == 0, err
    assert (tmp_path / "o" / "photo_pose.json").is_file()


def test_an_export_folder_is_named_as_such(tmp_path, capsys):
    folder = tmp_path / "exported"
    (folder / "saved_model").mkdir(parents=True)
    img = tmp_path / "a.jpg"
    img.write_bytes(jpeg())
    code, _, err = run(["predict", img, "--model", folder, "--out", tmp_path / "o"], capsys)
    assert code == 2
    one_line_error(err, "is an export folder", "pass the run folder it was exported from")
