"""The fault suite, `cpm-nb evaluate-mpii` and ground truth: degenerate values, truncated
files.

Shared fixtures: tests/faults/conftest.py; bad inputs: tests/fault_kit.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fault_kit import (
    one_line_error,
    run,
    snapshot,
    truncated,
    write_gt,
)

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




def test_truncated_ground_truth_is_one_line(tmp_path, capsys):
    gt = tmp_path / "gt.mat"
    write_gt(gt)
    gt.write_bytes(truncated(gt.read_bytes(), 0.5))
    code, _, err = run(["evaluate-mpii", "--annotations", gt, "--predictions", gt], capsys)
    assert code == 2
    one_line_error(err, "cannot read annotation file", str(gt))


def test_nan_predictions_cannot_raise_pckh():
    """NaN on the wrong joints counts them wrong (as pcp and fixed_radius do), so a
    model cannot raise its score by giving up on hard joints."""
    from cpm_nb.evaluation import metrics

    rng = np.random.default_rng(0)
    gt = rng.uniform(50, 350, (40, 16, 2))
    heads = np.stack([gt[:, 9] - 15, gt[:, 9] + 15], axis=1)
    pred = gt + rng.normal(0, 12, gt.shape)
    honest = metrics.pckh(pred, gt, heads)
    wrong = metrics.pckh_distances(pred, gt, heads) > metrics.PCKH_THRESHOLD
    gave_up = pred.copy()
    gave_up[wrong] = np.nan
    cheat = metrics.pckh(gave_up, gt, heads)
    assert 20 < honest.mean < 90
    assert cheat.mean == pytest.approx(honest.mean)
    np.testing.assert_allclose(cheat.per_joint, honest.per_joint)
    np.testing.assert_array_equal(cheat.counts, honest.counts)
    infinite = pred.copy()
    infinite[:, 0] = np.inf  # one joint never predicted: all wrong, still counted
    scored = metrics.pckh(infinite, gt, heads)
    assert scored.per_joint[0] == 0 and scored.counts[0] == 40


def test_ground_truth_that_is_a_device_or_a_silent_pipe_is_refused(tmp_path, capsys,
                                                                  monkeypatch):
    import os

    from cpm_nb.core import files

    monkeypatch.setattr(files, "PIPE_WAIT_S", 0.3)
    fifo = tmp_path / "gt.mat"
    os.mkfifo(fifo)
    for source, message in (("/dev/zero", "is not a regular file"),
                            (fifo, "a pipe that sent nothing")):
        code, _, err = run(["evaluate-mpii", "--annotations", source, "--predictions",
                            source], capsys)
        assert code == 2
        one_line_error(err, f"annotation file {source}", message)
