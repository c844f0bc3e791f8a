"""Metrics: fixed radius, PCK@alpha, the official MPII PCKh (checked on real data), strict PCP."""

import math

import numpy as np
import pytest

from cpm_nb.core import skeleton
from cpm_nb.evaluation import metrics

# --------------------------------------------------------------------------- toy cases


def _pose(n=1):
    """A simple upright figure, [n, 16, 2], in pixels."""
    base = np.array([
        [40, 190], [40, 150], [45, 110], [75, 110], [80, 150], [80, 190],  # legs
        [60, 110], [60, 60], [60, 50], [60, 20],  # pelvis, thorax, neck, head top
        [20, 110], [25, 85], [40, 60], [80, 60], [95, 85], [100, 110],  # arms
    ], dtype=float)  # fmt: skip
    return np.repeat(base[None], n, axis=0)


def test_fixed_radius_counts_within_25_px_inclusive_and_skips_missing():
    gt = _pose()
    pred = gt.copy()
    pred[0, 0] += [25, 0]  # exactly on the radius: correct
    pred[0, 1] += [18, 18]  # 25.46 px: wrong
    pred[0, 2] += [100, 0]  # far, but not annotated: excluded
    valid = np.ones((1, 16), bool)
    valid[0, 2] = False
    s = metrics.fixed_radius(pred, gt, valid)
    assert s.per_joint[0] == 100 and s.per_joint[1] == 0 and math.isnan(s.per_joint[2])
    assert s.total == pytest.approx(100 * 14 / 15)
    assert metrics.fixed_radius(pred, gt, valid, radius=30).total == 100
    assert list(s.counts) == [1, 1, 0] + [1] * 13


def test_fixed_radius_default_validity_is_finite_ground_truth():
    gt = _pose()
    gt[0, 5] = np.nan
    s = metrics.fixed_radius(_pose(), gt)
    assert s.counts[5] == 0 and s.total == 100


def test_pck_uses_the_per_person_reference_length():
    gt = _pose(2)
    gt[1] *= 2  # the second person is twice as big
    torso = metrics.torso_size(gt)
    np.testing.assert_allclose(torso, [np.hypot(80 - 45, 60 - 110)] * 1 + [2 * np.hypot(35, 50)])
    pred = gt + [12.0, 0.0]  # 12 px off everywhere
    # alpha * torso = 12.2 (person 0) and 24.4 (person 1): all correct at 0.2
    assert metrics.pck(pred, gt, torso, 0.2).total == 100
    # at 0.1: 6.1 px -> person 0 wrong, 12.2 -> person 1 correct
    assert metrics.pck(pred, gt, torso, 0.1).total == 50
    # people without a usable reference length are not counted
    s = metrics.pck(pred, gt, [0.0, torso[1]], 0.1)
    assert s.total == 100 and s.counts.max() == 1
    assert metrics.bbox_size(_pose())[0] == 170


def test_head_size_is_0_6_times_the_headbox_diagonal():
    boxes = np.array([[[10.0, 20.0], [40.0, 60.0]]])  # 30 x 40 box: diagonal 50
    np.testing.assert_allclose(metrics.head_sizes(boxes), [30.0])


def test_pckh_toy_example_inclusive_threshold_groups_and_pooled_mean():
    gt = _pose(2)
    boxes = np.array([[[45.0, 10.0], [75.0, 50.0]]] * 2)  # diagonal 50 -> head size 30
    pred = gt.copy()
    pred[0, 10] += [15.0, 0.0]  # r-wrist exactly 0.5 head size: correct (<=)
    pred[1, 10] += [15.1, 0.0]  # just over: wrong
    pred[0, 15] += [0.0, 4.0]  # l-wrist 0.133: correct at 0.5, wrong at 0.1
    pred[:, 6] += 100  # pelvis and thorax way off: not in the total
    pred[:, 7] += 100
    valid = np.ones((2, 16), bool)
    valid[1, 0] = False  # a missing ankle
    pred[1, 0] = [1e6, 1e6]
    r = metrics.pckh(pred, gt, boxes, valid)
    assert r.per_joint[10] == 50 and r.per_joint[15] == 100 and r.per_joint[0] == 100
    assert r.per_joint[6] == 0 and r.per_joint[7] == 0  # computed, but excluded
    assert r.counts[0] == 1
    assert r.groups["Wrist"] == 75 and r.groups["Ankle"] == 100 and r.groups["Head"] == 100
    counted = 14 * 2 - 1
    assert r.mean == pytest.approx(100 * (counted - 1) / counted)  # pooled over 27 joints
    # at 0.1 (3 px) the 4 px l-wrist and both r-wrists fail
    assert r.mean_at_0_1 == pytest.approx(100 * (counted - 3) / counted)
    assert list(r.groups) == ["Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"]
    # the curve: thresholds 0..0.5, consistent with the table values
    assert len(r.thresholds) == 51 and r.thresholds[10] == 0.1 and r.thresholds[-1] == 0.5
    assert r.curve_total[-1] == r.mean and r.curve_total[10] == r.mean_at_0_1
    assert np.all(np.diff(r.curve_total) >= 0)


def test_pckh_mean_is_count_weighted_not_the_plain_average():
    gt = _pose(4)
    boxes = np.array([[[45.0, 10.0], [75.0, 50.0]]] * 4)
    pred = gt.copy()
    pred[:, 0] += 100  # r-ankle always wrong ...
    valid = np.ones((4, 16), bool)
    valid[1:, 0] = False  # ... but annotated only once
    r = metrics.pckh(pred, gt, boxes, valid)
    assert r.per_joint[0] == 0
    assert r.mean == pytest.approx(100 * 52 / 53)  # pooled: 1 wrong of 53
    plain = np.mean(np.delete(r.per_joint, metrics.PCKH_EXCLUDED))
    assert plain == pytest.approx(100 * 13 / 14) and plain < r.mean


def test_pcp_strict_needs_both_endpoints_within_half_the_limb_length():
    gt = _pose()
    pred = gt.copy()
    # right forearm (10-11): length hypot(5, 25) = 25.5 -> tolerance 12.75
    pred[0, 10] += [12.0, 0.0]  # within
    pred[0, 11] += [0.0, 13.0]  # outside for the forearm ...
    r = metrics.pcp(pred, gt)
    assert r.per_limb["r_forearm"] == 0
    # ... but inside for the longer upper arm (11-12: 29.2 px -> tolerance 14.6)
    assert r.per_limb["r_upper_arm"] == 100 and r.per_limb["l_forearm"] == 100
    assert r.groups["Forearm"] == 50 and r.total == pytest.approx(90.0)
    # loosening the tolerance makes them correct
    assert metrics.pcp(pred, gt, fraction=0.6).total == 100
    # a limb with a missing endpoint is not counted
    valid = np.ones((1, 16), bool)
    valid[0, 11] = False
    r2 = metrics.pcp(pred, gt, valid)
    assert math.isnan(r2.per_limb["r_forearm"]) and r2.counts["r_forearm"] == 0
    assert r2.total == 100


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\[N, J, 2\]"):
        metrics.fixed_radius(np.zeros((2, 16, 2)), np.zeros((3, 16, 2)))
    with pytest.raises(ValueError, match="valid"):
        metrics.fixed_radius(np.zeros((2, 16, 2)), np.zeros((2, 16, 2)), np.ones((2, 15)))


# --------------------------------------------------------------------------- real data


def _independent_pckh(pred, gt, missing, boxes, thr):
    """A straightforward loop re-implementation of the MATLAB toolkit (evaluatePCKh.m,
    computePCK.m, genTablePCK.m), independent of cpm_nb.evaluation.metrics."""
    n = gt.shape[2]
    joints14 = [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 8, 9]  # the toolkit's 14 joints
    hits = {j: 0 for j in joints14}
    seen = {j: 0 for j in joints14}
    for i in range(n):
        head = 0.6 * math.hypot(boxes[1, 0, i] - boxes[0, 0, i], boxes[1, 1, i] - boxes[0, 1, i])
        for j in joints14:
            if missing[j, i]:
                continue
            d = math.hypot(pred[j, 0, i] - gt[j, 0, i], pred[j, 1, i] - gt[j, 1, i]) / head
            seen[j] += 1
            hits[j] += d <= thr
    pck = {j: 100.0 * hits[j] / seen[j] for j in joints14}
    total = 100.0 * sum(hits.values()) / sum(seen.values())
    table = {"Head": (pck[8] + pck[9]) / 2, "Shoulder": (pck[12] + pck[13]) / 2,
             "Elbow": (pck[11] + pck[14]) / 2, "Wrist": (pck[10] + pck[15]) / 2,
             "Hip": (pck[2] + pck[3]) / 2, "Knee": (pck[1] + pck[4]) / 2,
             "Ankle": (pck[0] + pck[5]) / 2}
    return table, total, pck


@pytest.fixture
def reference_mat(mpii_reference):
    import scipy.io

    return scipy.io.loadmat(str(mpii_reference / "detections_our_format.mat"))


def _person_major(d):
    """(pred, gt, head boxes, valid) of the reference file, person-major."""
    gt = np.transpose(d["pos_gt_src"], (2, 0, 1))
    pred = np.transpose(d["pos_pred_src"], (2, 0, 1))
    boxes = np.transpose(d["headboxes_src"], (2, 0, 1))
    return pred, gt, boxes, d["jnt_missing"].T == 0


def test_official_pckh_on_tompson_predictions_matches_an_independent_loop(reference_mat):
    d = reference_mat
    pred, gt, boxes, valid = _person_major(d)
    r = metrics.pckh(pred, gt, boxes, valid)
    args = (d["pos_pred_src"], d["pos_gt_src"], d["jnt_missing"], d["headboxes_src"])
    table, total, per = _independent_pckh(*args, 0.5)
    _, total_01, _ = _independent_pckh(*args, 0.1)
    for name, value in table.items():
        assert r.groups[name] == pytest.approx(value, abs=1e-9), name
    assert r.mean == pytest.approx(total, abs=1e-9)
    assert r.mean_at_0_1 == pytest.approx(total_01, abs=1e-9)
    for j, value in per.items():
        assert r.per_joint[j] == pytest.approx(value, abs=1e-9)
    assert r.n_people == 2958 and int(valid.sum()) == 2958 * 16 - 3088
    # the values themselves (regression guard), official conventions
    assert round(r.mean, 2) == 82.34 and round(r.mean_at_0_1, 2) == 28.97
    expected = {"Head": 96.66, "Shoulder": 92.71, "Elbow": 83.36, "Wrist": 76.74,
                "Hip": 81.93, "Knee": 73.36, "Ankle": 65.45}
    assert {k: round(v, 2) for k, v in r.groups.items()} == expected


def test_how_the_common_python_evaluator_conventions_differ(reference_mat):
    """Documents the numbers other conventions give on the same predictions."""
    d = reference_mat
    pred, gt, boxes, valid = _person_major(d)
    r = metrics.pckh(pred, gt, boxes, valid)
    # "Head" = head top only (the Python evaluators): 95.60 instead of 96.66
    assert round(r.per_joint[skeleton.JOINT["head_top"]], 2) == 95.60
    # the plain average of the 14 joints: 81.46 instead of the official pooled 82.34
    assert round(float(np.mean(np.delete(r.per_joint, metrics.PCKH_EXCLUDED))), 2) == 81.46
    # "Mean@0.1" read one index too far in arange(0, 0.51, 0.01): the total at 0.11
    per_t, total_t = metrics.pckh_curve(pred, gt, boxes, valid, [0.1, 0.11])
    assert round(total_t[0], 2) == 28.97 and round(total_t[1], 2) == 33.14


def test_pckh_curve_is_monotone_and_ends_at_the_table(reference_mat):
    d = reference_mat
    gt = np.transpose(d["pos_gt_src"], (2, 0, 1))
    pred = np.transpose(d["pos_pred_src"], (2, 0, 1))
    boxes = np.transpose(d["headboxes_src"], (2, 0, 1))
    r = metrics.pckh(pred, gt, boxes, d["jnt_missing"].T == 0)
    assert r.curve_total[0] == 0 or r.curve_total[0] < 1
    assert np.all(np.diff(r.curve_total) >= 0)
    assert r.curve_total[-1] == r.mean
    np.testing.assert_allclose(r.curve_per_joint[-1], r.per_joint)
