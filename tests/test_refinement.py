"""cpm_nb.course.refinement: joints that later stages fix, picked by measurement."""

import numpy as np

from cpm_nb.course import refinement
from cpm_nb.evaluation import evaluate as E


def _vp(first, last):
    n = len(first)
    gt = np.tile(np.arange(16, dtype=float)[None, :, None] * 10 + 50, (n, 1, 2))
    head = np.stack([gt[:, 9] - 10, gt[:, 9] + 10], axis=1)  # head size 0.6 * 28.3 = 17 px
    pred = [gt + np.asarray(first)[:, :, None], gt + np.asarray(last)[:, :, None]]
    return E.ValidationPredictions(
        images=np.zeros((n, 64, 64, 3), np.uint8), pred=pred, pred_crop=pred[-1] / 4,
        confidence=np.ones((n, 16)), maps=None, gt=gt, gt_crop=gt / 4,
        visibility=np.full((n, 16), 2), headboxes=head, n_others=np.zeros(n, int),
        scale=np.ones(n))


def test_refined_joints_are_wrong_first_and_right_last():
    first = np.zeros((3, 16))
    last = np.zeros((3, 16))
    first[0, 4] = 30  # person 0, joint 4: 30 px off (1.8 head sizes per axis) -> fixed
    first[1, 2] = 60  # person 1: further off at stage 1, fixed too -> the larger gain
    first[1, 3] = 40
    first[2, 5] = 30
    last[2, 5] = 30  # person 2: never fixed
    found = refinement.refined_joints(_vp(first, last), k=5)
    assert [(i, j) for i, j, _, _ in found] == [(1, 2), (0, 4)]  # one joint per person
    assert found[0][2] > found[1][2] > 0.5 and found[0][3] == 0


def test_peak_cell():
    belief = np.zeros((8, 8))
    belief[2, 5] = 1
    assert refinement.peak_cell(belief) == (2, 5)
