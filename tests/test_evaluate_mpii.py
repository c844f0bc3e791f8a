"""`cpm-nb evaluate-mpii`: the official PCKh from .mat files, and clear errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from cpm_nb.cli import app as cli
from cpm_nb.core import skeleton


def _names_cell():
    cell = np.empty((1, 16), dtype=object)
    for i, n in enumerate(skeleton.SHORT_NAMES):
        cell[0, i] = np.array([n])
    return cell


def _write_gt(path, n=5, seed=0, **override):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(100, 400, (16, 2, n))
    missing = np.zeros((16, n), np.uint8)
    missing[0, 0] = 1
    boxes = np.stack([pos[9] - 20, pos[9] + 20])  # 2x2xN around the head top: diag 56.6
    data = {"pos_gt_src": pos, "jnt_missing": missing, "headboxes_src": boxes,
            "dataset_joints": _names_cell()}
    data.update(override)
    data = {k: v for k, v in data.items() if v is not None}
    scipy.io.savemat(path, data)
    return pos, missing


def _run(argv, capsys):
    code = cli.main(["evaluate-mpii", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def gt_file(tmp_path):
    path = tmp_path / "gt.mat"
    pos, missing = _write_gt(path)
    return path, pos, missing


def test_perfect_predictions_score_100_and_json_has_the_documented_keys(gt_file, tmp_path,
                                                                        capsys):
    path, pos, _ = gt_file
    pred = tmp_path / "pred.mat"
    preds = np.transpose(pos, (2, 0, 1)).copy()  # N x 16 x 2
    preds[0, 0] += 1000  # the missing joint may be anything
    scipy.io.savemat(pred, {"preds": preds})
    out_json = tmp_path / "scores.json"
    code, out, err = _run(["--annotations", str(path), "--predictions", str(pred),
                           "--json-out", str(out_json)], capsys)
    assert code == 0, err
    assert "Mean@0.1" in out and "PCKh@0.5" in out
    data = json.loads(out_json.read_text())
    assert set(data["pckh"]) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"}
    assert data["mean"] == 100.0 and data["mean_at_0.1"] == 100.0
    assert all(v == 100.0 for v in data["pckh"].values())
    assert list(data["per_joint"]) == list(skeleton.SHORT_NAMES)
    assert data["per_joint"]["pelv"] is None and data["per_joint"]["thor"] is None
    assert sum(v is not None for v in data["per_joint"].values()) == 14
    assert data["counts"]["rank"] == 4 and data["n_people"] == 5


def test_16x2xN_predictions_give_the_same_scores_as_Nx16x2(gt_file, tmp_path, capsys):
    path, pos, _ = gt_file
    rng = np.random.default_rng(1)
    noisy = pos + rng.normal(0, 15, pos.shape)
    a, b = tmp_path / "a.mat", tmp_path / "b.mat"
    scipy.io.savemat(a, {"preds": np.transpose(noisy, (2, 0, 1))})
    scipy.io.savemat(b, {"preds": noisy})
    results = []
    for p in (a, b):
        code, out, _ = _run(["--annotations", str(path), "--predictions", str(p), "--json"],
                            capsys)
        assert code == 0
        results.append(json.loads(out))
    assert results[0] == results[1]
    assert 0 < results[0]["mean"] < 100


@pytest.mark.parametrize("preds,message", [
    (np.zeros((5, 16, 3)), "preds must be Nx16x2 or 16x2xN"),
    (np.zeros((5, 14, 2)), "got 5x14x2"),
    (np.zeros((4, 16, 2)), "holds 4 people but the annotations hold 5"),
    (np.zeros((16, 2, 6)), "holds 6 people"),
])
def test_bad_prediction_shapes_are_named(gt_file, tmp_path, capsys, preds, message):
    path, _, _ = gt_file
    pred = tmp_path / "pred.mat"
    scipy.io.savemat(pred, {"preds": preds})
    code, out, err = _run(["--annotations", str(path), "--predictions", str(pred)], capsys)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_nan_predictions_are_rejected(gt_file, tmp_path, capsys):
    path, pos, _ = gt_file
    preds = np.transpose(pos, (2, 0, 1)).copy()
    preds[3, 12, 1] = np.nan
    pred = tmp_path / "pred.mat"
    scipy.io.savemat(pred, {"preds": preds})
    code, _, err = _run(["--annotations", str(path), "--predictions", str(pred)], capsys)
    assert code == 2
    assert "NaN" in err and "person 3, joint 12 rsho" in err


def test_missing_variables_are_named(gt_file, tmp_path, capsys):
    path, pos, _ = gt_file
    pred = tmp_path / "pred.mat"
    scipy.io.savemat(pred, {"predictions": np.zeros((5, 16, 2))})
    code, _, err = _run(["--annotations", str(path), "--predictions", str(pred)], capsys)
    assert code == 2 and "variable 'preds' is missing" in err and "predictions" in err
    gt2 = tmp_path / "gt2.mat"
    _write_gt(gt2, headboxes_src=None)
    scipy.io.savemat(pred, {"preds": np.zeros((5, 16, 2))})
    code, _, err = _run(["--annotations", str(gt2), "--predictions", str(pred)], capsys)
    assert code == 2 and "variable 'headboxes_src' is missing" in err


@pytest.mark.parametrize("override,message", [
    ({"pos_gt_src": np.zeros((14, 2, 5))}, "pos_gt_src must be 16x2xN"),
    ({"jnt_missing": np.zeros((16, 4))}, "jnt_missing must be 16x5"),
    ({"headboxes_src": np.zeros((2, 2, 3))}, "headboxes_src must be 2x2x5"),
])
def test_bad_annotation_shapes_are_named(tmp_path, capsys, override, message):
    gt = tmp_path / "gt.mat"
    _write_gt(gt, **override)
    pred = tmp_path / "pred.mat"
    scipy.io.savemat(pred, {"preds": np.zeros((5, 16, 2))})
    code, _, err = _run(["--annotations", str(gt), "--predictions", str(pred)], capsys)
    assert code == 2 and message in err


def test_missing_file_and_bad_threshold(gt_file, tmp_path, capsys):
    path, _, _ = gt_file
    code, _, err = _run(["--annotations", str(path), "--predictions",
                         str(tmp_path / "nope.mat")], capsys)
    assert code == 2 and "predictions file not found" in err
    code, _, err = _run(["--annotations", str(path), "--predictions", str(path),
                         "--threshold", "0"], capsys)
    assert code == 2 and "--threshold" in err


# --------------------------------------------------------------------------- real file


def test_shared_reference_file_prints_the_table(mpii_reference, capsys):
    f = str(mpii_reference / "detections_our_format.mat")
    code, out, err = _run(["--annotations", f, "--predictions", f], capsys)
    assert code == 0, err
    assert "2958 people; predictions from variable 'pos_pred_src'" in out
    header, row = out.strip().splitlines()[-2:]
    assert header.split() == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle",
                              "Mean", "Mean@0.1"]
    assert row.split() == ["PCKh@0.5", "96.66", "92.71", "83.36", "76.74", "81.93", "73.36",
                           "65.45", "82.34", "28.97"]


def test_preds_written_from_the_shared_file_give_the_same_result(mpii_reference, tmp_path,
                                                                 capsys):
    f = mpii_reference / "detections_our_format.mat"
    src = scipy.io.loadmat(str(f))["pos_pred_src"]
    pred = tmp_path / "pred.mat"
    scipy.io.savemat(pred, {"preds": np.transpose(src, (2, 0, 1))})
    code, out, _ = _run(["--annotations", str(f), "--predictions", str(pred), "--json"],
                        capsys)
    assert code == 0
    data = json.loads(out)
    assert round(data["mean"], 2) == 82.34 and round(data["mean_at_0.1"], 2) == 28.97
    assert round(data["pckh"]["Head"], 2) == 96.66
    assert len(data["curve"]["thresholds"]) == 51


def test_the_installed_command_line_entry_point(mpii_reference):
    f = str(mpii_reference / "detections_our_format.mat")
    out = subprocess.run([sys.executable, "-m", "cpm_nb", "evaluate-mpii", "--annotations", f,
                          "--predictions", f], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "82.34" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "cpm_nb", "evaluate-mpii", "--annotations", f,
                          "--predictions", "/nonexistent.mat"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
