"""cpm_nb.inference.export: the native format is all predict needs; SavedModel and TFLite exports give
the Keras model's outputs (parity within tolerance)."""

import json
import zipfile

import numpy as np
import pytest

from cpm_nb.cli import app as cli
from cpm_nb.core.config import resolve_profile
from cpm_nb.inference import export as E
from cpm_nb.inference import predict as P


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    from cpm_nb.core.runtime import import_keras
    from cpm_nb.model import cpm as M
    from cpm_nb.training import config as train_config
    from cpm_nb.training import runs

    import_keras()
    cfg = train_config.train_config(resolve_profile("fast"))
    model = M.build_cpm(cfg.model, seed=3)
    out = tmp_path_factory.mktemp("run")
    runs.export(out, model, cfg, {"mean": 0.0}, {"wall_s": 0.0})
    return out


def test_native_format_is_self_contained(run_folder, tmp_path):
    """model.keras holds config + weights and no pickled Python; cpm_config.json has what
    predict needs; a copy of just these two files predicts the same."""
    with zipfile.ZipFile(run_folder / "model.keras") as z:
        names = set(z.namelist())
        cfg = json.loads(z.read("config.json"))
    assert {"config.json", "model.weights.h5"} <= names
    layers = {layer["class_name"] for layer in cfg["config"]["layers"]}
    assert "Lambda" not in layers and layers <= {"InputLayer", "Rescaling", "Conv2D",
                                                 "MaxPooling2D", "AveragePooling2D",
                                                 "Concatenate"}
    meta = json.loads((run_folder / "cpm_config.json").read_text())
    for key in ("joints", "input_size", "stages", "normalisation", "cpm_config", "stride"):
        assert key in meta
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("model.keras", "cpm_config.json"):
        (copy / name).write_bytes((run_folder / name).read_bytes())
    img = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
    a, b = P.load_predictor(run_folder)(img), P.load_predictor(copy)(img)
    np.testing.assert_array_equal(a.joints, b.joints)


def test_savedmodel_and_tflite_parity(run_folder, tmp_path):
    predictor = P.load_predictor(run_folder)
    report = E.export_model(predictor.model, tmp_path / "exp", n_check=3, meta=predictor.meta)
    assert (tmp_path / "exp" / "saved_model" / "saved_model.pb").is_file()
    assert json.loads((tmp_path / "exp" / "cpm_config.json").read_text()) == predictor.meta
    sm = report["parity"]["savedmodel"]
    assert sm["ok"] and sm["max_abs_diff"] <= E.MAPS_ATOL, sm
    assert len(sm["max_abs_diff_per_stage"]) == predictor.stages
    if "tflite" in report["skipped"]:
        pytest.skip(f"TFLite not available here: {report['skipped']['tflite']}")
    tfl = report["parity"]["tflite"]
    assert tfl["ok"] and tfl["max_abs_diff"] <= E.MAPS_ATOL, tfl
    assert tfl["max_joint_diff_px"] <= E.JOINTS_ATOL_PX
    assert report["ok"]


def test_parity_detects_a_different_model(run_folder):
    predictor = P.load_predictor(run_folder)
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)

    def shifted(x):
        return [np.asarray(o) + 0.01 for o in predictor.model(x, training=False)]

    def wrong_shape(x):
        return [np.zeros((2, 8, 8, 16), np.float32)]

    r = E.parity(predictor.model, {"shifted": shifted, "wrong": wrong_shape}, images)
    assert not r["shifted"]["ok"] and r["shifted"]["max_abs_diff"] == pytest.approx(0.01, 1e-3)
    assert not r["wrong"]["ok"] and "differ" in r["wrong"]["error"]


def test_export_cli(run_folder, tmp_path, capsys):
    rc = cli.main(["export", "--model", str(run_folder), "--out", str(tmp_path / "e"),
                   "--format", "savedmodel", "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] and list(doc["formats"]) == ["savedmodel"]
    rc = cli.main(["export", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "e")])
    assert rc == 2 and "model not found" in capsys.readouterr().err
