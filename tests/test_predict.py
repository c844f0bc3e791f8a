"""cpm_nb.inference.predict (and cpm_nb.io.images, the predict command and benchmark): images, person placement, crop geometry, decoding to original pixels,
multi-scale merging, model checks (safe mode, other configurations) and the CLI."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from cpm_nb.cli import app as cli
from cpm_nb.core import errors, skeleton
from cpm_nb.core.config import resolve_profile
from cpm_nb.data import preprocess
from cpm_nb.inference import predict as P
from cpm_nb.io import images as I
from cpm_nb.model import architecture, heatmaps

SIZE = 64  # the fast profile's crop


@pytest.fixture(scope="module")
def keras():
    from cpm_nb.core.runtime import import_keras

    return import_keras()


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory, keras):
    """A run folder as `cpm-nb train` writes it (untrained fast-profile weights)."""
    from cpm_nb.model import cpm as M
    from cpm_nb.training import config as train_config
    from cpm_nb.training import runs

    cfg = train_config.train_config(resolve_profile("fast"))
    model = M.build_cpm(cfg.model, seed=0)
    out = tmp_path_factory.mktemp("run")
    runs.export(out, model, cfg, {"mean": 0.0}, {"wall_s": 0.0})
    return out


@pytest.fixture(scope="module")
def predictor(run_folder):
    return P.load_predictor(run_folder)


@pytest.fixture
def photo(tmp_path):
    """A 200x150 RGB JPEG and its pixels."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
    path = tmp_path / "photo.jpg"
    Image.fromarray(rgb).save(path, quality=95)
    return path


# --- images ------------------------------------------------------------------------------------


def test_load_image_converts_modes(tmp_path):
    gray = np.tile(np.arange(40, dtype=np.uint8)[None] * 6, (30, 1))
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(np.dstack([gray] * 3)).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, :20, 3] = 255  # right half transparent -> white
    Image.fromarray(rgba).save(tmp_path / "a.png")
    Image.fromarray(np.dstack([gray] * 3)).convert("P").save(tmp_path / "p.png")
    for name in ("g.png", "c.jpg", "a.png", "p.png"):
        img = I.load_image(tmp_path / name)
        assert img.shape == (30, 40, 3) and img.dtype == np.uint8, name
    g = I.load_image(tmp_path / "g.png")
    assert (g[..., 0] == gray).all() and (g[..., 1] == gray).all()
    c = I.load_image(tmp_path / "c.jpg").astype(int)
    assert np.abs(c - np.dstack([gray] * 3)).max() < 12  # CMYK -> RGB restores the grays
    a = I.load_image(tmp_path / "a.png")
    assert (a[:, :20] == [255, 0, 0]).all() and (a[:, 20:] == 255).all()


def test_load_image_arrays_and_exif(tmp_path):
    f = np.linspace(0, 1, 12).reshape(3, 4)
    img = I.load_image(f)  # float gray in 0..1
    assert img.shape == (3, 4, 3) and img[0, 0, 0] == 0 and img[-1, -1, 0] == 255
    assert I.load_image(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    with pytest.raises(I.ImageError, match="image array"):
        I.load_image(np.zeros((5, 6, 2)))
    with pytest.raises(I.ImageError, match="NaN"):
        I.load_image(np.full((5, 6), np.nan))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "r.jpg", exif=exif)
    assert I.load_image(tmp_path / "r.jpg").shape == (40, 30, 3)


def test_bad_image_files(tmp_path):
    (tmp_path / "t.jpg").write_text("not an image")
    with pytest.raises(I.ImageError, match="not an image file"):
        I.load_image(tmp_path / "t.jpg")
    with pytest.raises(I.ImageError, match="not found"):
        I.load_image(tmp_path / "none.png")
    with pytest.raises(I.ImageError, match="folder"):
        I.load_image(tmp_path)
    good = np.full((60, 80, 3), 90, np.uint8)
    Image.fromarray(good).save(tmp_path / "cut.jpg")
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])  # truncated file
    with pytest.raises(I.ImageError, match="unreadable|cannot read|not an image"):
        I.load_image(tmp_path / "cut.jpg")


def test_image_and_model_errors_are_library_errors():
    assert issubclass(I.ImageError, errors.DataError) and I.ImageError is I.ImageError
    assert issubclass(errors.ModelError, errors.ModelError)


# --- the person --------------------------------------------------------------------------------


def test_place_person():
    p = P.place_person(200, 150)
    assert p.center == (100.5, 75.5) and p.scale == pytest.approx(0.75) and p.source == "image"
    p = P.place_person(200, 150, box=(21, 11, 61, 111))
    assert p.center == (41, 61) and p.scale == pytest.approx(0.5) and p.source == "box"
    p = P.place_person(200, 150, center=(50, 60))
    assert p.scale == pytest.approx(0.75) and p.source == "center"
    with pytest.raises(ValueError, match="either"):
        P.place_person(200, 150, center=(1, 1), box=(1, 1, 5, 5))
    with pytest.raises(ValueError, match="x1 < x2"):
        P.place_person(200, 150, box=(50, 10, 20, 40))
    with pytest.raises(ValueError, match="outside"):
        P.place_person(200, 150, center=(250, 60), scale=1)
    with pytest.raises(ValueError, match="positive"):
        P.place_person(200, 150, scale=0)


# --- crops -------------------------------------------------------------------------------------


def test_identity_crop_and_raw_forward_agree(predictor):
    """An S x S image with the person centred at 1 crop px per image px: the crop is the
    image, and the joints are the raw forward pass's decoded maps + 1 (1-based)."""
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    scale = SIZE * preprocess.PERSON_FRACTION / 200  # pixel_scale == 1
    c = ((SIZE + 1) / 2, (SIZE + 1) / 2)
    pred = predictor(img, center=c, scale=scale)
    assert (pred.crop == img).all()
    np.testing.assert_allclose(pred.crop_matrix, np.array([[1, 0, -1], [0, 1, -1], [0, 0, 1]]),
                               atol=1e-12)
    maps = predictor.forward(img[None])[-1][0]
    want, conf = heatmaps.decode(maps)
    np.testing.assert_allclose(pred.joints, want + 1, atol=1e-4)
    np.testing.assert_allclose(pred.confidence, conf, rtol=1e-5)
    assert len(pred.stage_maps) == predictor.stages
    assert pred.stage_maps[0].shape == (SIZE // 8, SIZE // 8, 16)


def _dot_image(w, h, x, y):
    """A dark image with a bright 5x5 square centred on 1-based (x, y)."""
    img = np.full((h, w, 3), 20, np.uint8)
    img[int(y) - 3:int(y) + 2, int(x) - 3:int(x) + 2] = 250
    return img


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_crop_geometry_and_jpeg_draft(tmp_path, fmt):
    """The bright dot lands where the crop matrix sends it, also when the JPEG is
    decoded at a reduced size (draft) because the crop shrinks the image 4x."""
    w, h, x, y = 800, 600, 421.0, 251.0
    path = tmp_path / f"dot.{fmt}"
    Image.fromarray(_dot_image(w, h, x, y)).save(path, quality=98)
    scale = 4 * SIZE * preprocess.PERSON_FRACTION / 200  # 4 image px per crop px
    prep = P.prepare(path, SIZE, center=(401, 301), scale=scale)
    want = preprocess.apply_matrix(prep.matrices[0], np.array([[x, y]]))[0]
    crop = prep.crops[0].astype(float).mean(-1) - 20
    yy, xx = np.mgrid[:SIZE, :SIZE]
    got = np.array([(crop * xx).sum(), (crop * yy).sum()]) / crop.sum()
    np.testing.assert_allclose(got, want, atol=0.35)


def _fake_forward(predictor, joints_orig):
    """A forward pass that returns the ideal maps of ``joints_orig`` for every crop (it reads
    each crop's matrix from the prepared images)."""
    def forward_for(prepared):
        maps = []
        for p in prepared:
            for m in p.matrices:
                jc = preprocess.apply_matrix(m, joints_orig)
                maps.append(heatmaps.render_numpy(jc[None], np.full((1, 16), 2), SIZE,
                                                  sigma=3.0)[0])
        maps = np.stack(maps).astype(np.float32)
        return [maps * 0.5, maps]
    return forward_for


@pytest.mark.parametrize("scales", [(1.0,), (0.8, 1.0, 1.25)])
def test_joints_back_in_original_pixels(predictor, photo, scales):
    rng = np.random.default_rng(2)
    person = dict(center=(101, 76), scale=0.5)
    m = preprocess.crop_matrix(person["center"], person["scale"], SIZE)
    inside = rng.uniform(12, SIZE - 13, (16, 2))  # joints well inside every crop
    truth = heatmaps.to_original(inside, m)
    make = _fake_forward(predictor, truth)
    prep = predictor.prepare(photo, scales=scales, **person)
    assert prep.scales[0] == 1.0 and len(prep.crops) == len(set(scales) | {1.0})
    pred = predictor.finish([prep], make([prep]))[0]
    err = np.linalg.norm(pred.joints - truth, axis=-1) * preprocess.pixel_scale(0.5, SIZE)
    # crop px; resampling the coarse maps of the other scales costs up to ~1/5 of a cell
    assert err.max() < (0.15 if len(scales) == 1 else 1.6), err.max()
    assert (pred.confidence > 0.2).all()  # the peak cell value (sigma 3 px, 8-px cells)
    j2, _ = pred.stage_joints(2)
    np.testing.assert_allclose(j2, pred.joints)


def _dense_merge(maps, factors, stride, mean):
    """The merge written out: one matrix per scale and axis, W[i, k] = the bilinear weight of
    cell k of the scale-f map at the point of cell i of the scale-1 crop."""
    m = maps.shape[1]
    half, centre = (m * stride - 1) / 2, (stride - 1) / 2
    total, cover = 0, 0
    for f, one in zip(factors, maps):
        w = np.zeros((m, m))
        for i in range(m):
            u = (half + f * (i * stride + centre - half) - centre) / stride
            for k in range(m):
                w[i, k] = max(0.0, 1 - abs(u - k))
        total = total + np.einsum("ya,abc,xb->yxc", w, one, w)
        cover = cover + np.outer(w.sum(1), w.sum(1))[..., None]
    return total / (len(factors) if mean == "all" else np.maximum(cover, 1e-6))


@pytest.mark.parametrize("stride, mean", [(8, "covered"), (1, "all"), (8, "all")])
def test_merge_scales_equals_the_dense_reference(stride, mean):
    from cpm_nb.inference import decoding as D

    maps = np.random.default_rng(3).random((3, 8, 8, 4))
    factors = (1.0, 0.7, 1.3)
    np.testing.assert_allclose(D.merge_scales(maps, factors, stride, mean),
                               _dense_merge(maps, factors, stride, mean), atol=1e-12)
    np.testing.assert_allclose(D.merge_scales(maps[:1], (1.0,), stride, mean), maps[0])
    same = np.concatenate([maps[:1], maps[:1]])
    np.testing.assert_allclose(D.merge_scales(same, (1.0, 1.0 + 1e-12), stride), maps[0],
                               atol=1e-9)
    with pytest.raises(ValueError, match="mean"):
        D.merge_scales(maps, factors, stride, "median")


def test_joint_orders_map_onto_mpii():
    """A 14-joint model's joints and maps in MPII order; pelvis and thorax derived."""
    from cpm_nb.inference import decoding as D

    names = [n for n in skeleton.JOINT_NAMES if n not in D.DERIVED_JOINTS][::-1]
    ids = D.mpii_ids(names)
    rng = np.random.default_rng(4)
    joints, conf = rng.uniform(0, 60, (2, 14, 2)), rng.uniform(0, 1, (2, 14))
    out, c = D.to_mpii(joints, conf, ids)
    j = skeleton.JOINT
    for k, name in enumerate(names):
        np.testing.assert_array_equal(out[:, j[name]], joints[:, k])
    np.testing.assert_allclose(out[:, j["pelvis"]], (out[:, j["r_hip"]] + out[:, j["l_hip"]]) / 2)
    assert (c[:, j["thorax"]] == np.minimum(c[:, j["r_shoulder"]], c[:, j["l_shoulder"]])).all()
    maps = rng.random((8, 8, 15))  # + background
    mpii = D.to_mpii_maps(maps, ids)
    assert mpii.shape == (8, 8, 17) and not mpii[..., j["pelvis"]].any()
    np.testing.assert_array_equal(mpii[..., j[names[0]]], maps[..., 0])
    np.testing.assert_array_equal(mpii[..., -1], maps[..., -1])


def test_predict_many_keeps_order_and_reports_bad_images(predictor, photo, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    sources = [photo, tmp_path / "bad.png", np.zeros((50, 40), np.uint8), tmp_path / "no.jpg",
               photo]
    out = list(predictor.predict_many(sources, batch_size=2))
    assert [i for i, _ in out] == list(range(5))
    kinds = [type(r).__name__ for _, r in out]
    assert kinds == ["Prediction", "ImageError", "Prediction", "ImageError", "Prediction"]
    np.testing.assert_allclose(out[0][1].joints, out[4][1].joints)
    single = predictor(photo)
    np.testing.assert_allclose(single.joints, out[0][1].joints, atol=1e-4)


# --- models ------------------------------------------------------------------------------------


def test_load_predictor_folder_and_file(run_folder, predictor):
    assert predictor.input_size == SIZE and predictor.stages == 2
    assert predictor.meta["format"] == "cpm-nb-model"
    from_file = P.load_predictor(run_folder / "model.keras")
    assert from_file.meta == predictor.meta
    img = np.random.default_rng(4).integers(0, 256, (70, 90, 3), dtype=np.uint8)
    np.testing.assert_allclose(from_file(img).joints, predictor(img).joints)


def test_model_errors(tmp_path, run_folder, keras):
    from cpm_nb.model import cpm as M

    with pytest.raises(errors.ModelError, match="not found"):
        P.load_predictor(tmp_path / "nothing")
    with pytest.raises(errors.ModelError, match="no model.keras"):
        P.load_predictor(tmp_path)
    (tmp_path / "x.keras").write_text("garbage")
    with pytest.raises(errors.ModelError, match="not a Keras model file"):
        P.load_predictor(tmp_path / "x.keras")
    (tmp_path / "w.h5").write_text("garbage")
    with pytest.raises(errors.ModelError, match="not a .keras file"):
        P.load_predictor(tmp_path / "w.h5")
    # a cpm_config.json of another configuration
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.keras").write_bytes((run_folder / "model.keras").read_bytes())
    meta = json.loads((run_folder / "cpm_config.json").read_text())
    meta["cpm_config"]["stages"] = 6
    meta["cpm_config"]["input_size"] = 368
    (other / "cpm_config.json").write_text(json.dumps(meta))
    with pytest.raises(errors.ModelError, match="another configuration.*stages 6"):
        P.load_predictor(other)
    # a CPM of another joint set (the released 14-joint + background layout)
    rel = M.build_cpm(architecture.get_config("cpm-mpii-release").replace(input_size=64, stages=1,
                                                               width=0.125), seed=0)
    rel.save(tmp_path / "release.keras")
    with pytest.raises(errors.ModelError, match="15 maps"):
        P.load_predictor(tmp_path / "release.keras")
    # not a CPM at all
    inp = keras.Input((10,))
    keras.Model(inp, keras.layers.Dense(2)(inp)).save(tmp_path / "dense.keras")
    with pytest.raises(errors.ModelError, match="square RGB crops"):
        P.load_predictor(tmp_path / "dense.keras")
    # a Lambda layer: refused by safe mode (no arbitrary code)
    inp = keras.Input((64, 64, 3))
    lam = keras.layers.Lambda(lambda t: t[:, ::8, ::8, :1] * 0 + 1)(inp)
    keras.Model(inp, lam).save(tmp_path / "lambda.keras")
    with pytest.raises(errors.ModelError, match="safe mode"):
        P.load_predictor(tmp_path / "lambda.keras")


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_writes_overlays_and_json(run_folder, photo, tmp_path, capsys):
    gray = tmp_path / "sub" / "photo.png"
    gray.parent.mkdir()
    Image.fromarray(np.full((90, 60), 120, np.uint8)).save(gray)
    out = tmp_path / "out"
    rc = cli.main(["predict", str(photo), str(gray), "--model", str(run_folder), "--out",
                   str(out), "--box", "20", "10", "60", "80", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["failed"] == 0 and "1-based" in doc["pixel_convention"]
    first, second = doc["results"]
    assert first["person"] == {"center": [40.0, 45.0], "scale": 0.35, "from": "box",
                               "box": [20.0, 10.0, 60.0, 80.0]}
    assert [j["name"] for j in first["joints"]] == list(skeleton.JOINT_NAMES)
    assert all(isinstance(j["confidence"], float) for j in first["joints"])
    assert (out / "photo_pose.png").is_file() and (out / "photo_2_pose.png").is_file()
    assert Image.open(out / "photo_pose.png").size == (200, 150)
    saved = json.loads((out / "photo_2_pose.json").read_text())
    assert saved["image"] == str(gray) and saved["width"] == 60


def test_cli_bad_images_do_not_stop_the_batch(run_folder, photo, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    rc = cli.main(["predict", str(bad), str(photo), str(tmp_path / "missing.jpg"), "--model",
                   str(run_folder), "--out", str(tmp_path / "o")])
    cap = capsys.readouterr()
    assert rc == 1
    errors = cap.err.strip().splitlines()
    assert len(errors) == 2 and all(e.startswith("cpm-nb predict: error: ") for e in errors)
    assert "bad.jpg" in errors[0] and "missing.jpg" in errors[1]
    assert "1 of 3 image(s) done" in cap.out
    assert (tmp_path / "o" / "photo_pose.png").is_file()


@pytest.mark.parametrize("argv, message", [
    (["--model", "{tmp}/none"], "model not found"),
    (["--model", "{run}", "--box", "5", "5", "1", "1"], "--box"),
    (["--model", "{run}", "--box", "1", "1", "5", "5", "--scale", "2"], "either --box"),
    (["--model", "{run}", "--scale", "-1"], "argument --scale: must be a number > 0, got -1"),
    (["--model", "{tmp}/cfg"], "another configuration"),
])
def test_cli_usage_and_model_errors(run_folder, photo, tmp_path, capsys, argv, message):
    cfg = tmp_path / "cfg"
    cfg.mkdir()
    (cfg / "model.keras").write_bytes((run_folder / "model.keras").read_bytes())
    meta = json.loads((run_folder / "cpm_config.json").read_text())
    meta["cpm_config"]["input_size"] = 128
    (cfg / "cpm_config.json").write_text(json.dumps(meta))
    argv = [a.format(tmp=tmp_path, run=run_folder) for a in argv]
    rc = cli.main(["predict", str(photo), "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and message in err


def test_cli_help_mentions_conventions(capsys):
    with pytest.raises(SystemExit):
        cli.main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "1-based" in text and "--box" in text and "cpm-nb train --data mpii" in text


def test_bench_predict_smoke(capsys):
    from cpm_nb.model import architecture

    cfg = architecture.from_profile(resolve_profile("fast"))
    args = SimpleNamespace(quick=True, cases=[("fast", cfg, (144, 112), 1, 1)])
    from cpm_nb.bench.predict import bench_predict

    r = bench_predict(args)
    case = r["cases"]["fast"]
    assert case["forward"]["per_s"] > 0 and case["end_to_end"]["per_s"] > 0
    assert case["ratio"] == pytest.approx(case["end_to_end"]["per_s"] / case["forward"]["per_s"])
    assert "ratio end-to-end / forward" in capsys.readouterr().out
