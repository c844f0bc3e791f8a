"""cpm_nb.evaluation.evaluate: breakdowns of a validation score (on made-up predictions)."""

import json

import numpy as np
import pytest

from cpm_nb.cli import app as cli
from cpm_nb.evaluation import evaluate as E
from cpm_nb.evaluation import metrics


@pytest.fixture
def vp():
    rng = np.random.default_rng(0)
    n, s = 12, 64
    gt = rng.uniform(40, 200, (n, 16, 2))
    head = np.stack([gt[:, 9] - 10, gt[:, 9] + 10], axis=1)  # head size 0.6 * 28.3 = 17 px
    vis = np.full((n, 16), 2)
    vis[:4, :3] = 1  # occluded joints
    vis[0, 15] = 0  # a missing joint
    noise = rng.normal(0, 3, (n, 16, 2))
    stage1 = gt + 4 * noise
    final = gt + noise
    final[5] += 60  # one person entirely wrong
    others = np.array([0, 1, 2] * 4)
    return E.ValidationPredictions(
        images=np.zeros((n, s, s, 3), np.uint8), pred=[stage1, final],
        pred_crop=final / 4, confidence=np.ones((n, 16)),
        maps=np.zeros((n, 8, 8, 16), np.float16), gt=gt, gt_crop=gt / 4, visibility=vis,
        headboxes=head, n_others=others, scale=np.full(n, 0.8))


def test_summary_matches_metrics(vp):
    s = E.metric_summary(vp)
    assert s["pckh@0.5"] == pytest.approx(metrics.pckh(vp.final, vp.gt, vp.headboxes,
                                                       vp.valid).mean)
    assert s["article_radius"] == pytest.approx(
        metrics.fixed_radius(vp.final, vp.gt, vp.valid, 25).total)
    assert s["radius_in_head_sizes"] == pytest.approx(25 / (0.6 * np.hypot(20, 20)))
    # the article's 25 px at 368 px: 25 / 234 of the person's height (160 px here)
    assert s["rescaled_radius_px"] == pytest.approx(25 / 234.2 * 160)
    assert E.ARTICLE_HEAD_SIZE_PX == pytest.approx(29.2750)


def test_breakdowns(vp):
    stages = E.per_stage(vp)
    assert len(stages["all joints"]) == 2 and stages["all joints"][1] > stages["all joints"][0]
    occ = E.by_occlusion(vp)
    assert occ["occluded joints"][1] == 12 and occ["people, 1-2 occluded"][1] == 0
    assert occ["people, 3+ occluded"][1] == 4
    dis = E.by_distractors(vp)  # no annotations: "in the crop" falls back to "in the image"
    assert [v[1] for v in dis.values()][:3] == [4, 0, 8]
    best, worst = E.best_and_worst(vp, 2)
    assert worst[0] == 5 and 5 not in best
    assert E.person_scores(vp)[5] == 0
    rows = E.per_joint_rows(vp)
    assert rows[15][-1] == 11 and len(rows) == 16
    assert "not in the PCKh mean" in E.format_per_joint(rows)


def test_mpii_files_round_trip(vp, tmp_path, capsys):
    gt_file, pred_file = E.write_mpii_files(vp, tmp_path)
    rc = cli.main(["evaluate-mpii", "--annotations", str(gt_file), "--predictions",
                   str(pred_file), "--json"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    want = metrics.pckh(vp.final, vp.gt, vp.headboxes, vp.valid)
    assert doc["mean"] == pytest.approx(want.mean) and doc["n_people"] == vp.n


def test_distractors_in_the_crop_and_joints_on_them(vp):
    """A distractor is a person with a joint inside the crop; a prediction that is wrong
    for the target but on the other person's same joint is counted as following it."""
    others = np.full((vp.n, 1, 16, 2), np.nan)
    others[1, 0] = vp.gt[1] + 200  # far away: all its joints are listed, it still counts
    others[2, 0, :8] = vp.gt[2, :8] + 40  # the first 8 joints of someone next to person 2
    vp.others = others
    assert vp.distracted.tolist() == [False, True, True] + [False] * 9
    vp.pred[-1][2, :4] = others[2, 0, :4]  # person 2: four joints on the other person
    hit = E.on_other_person(vp)
    assert hit[2, :4].all() and hit.sum() == 4
    s = E.summarize(vp)
    assert s["distractor_definition"] == "another person with a joint inside the crop"
    assert s["errors_per_stage"]["on_other_person"][-1] == pytest.approx(100 * 4 / 32)


def test_left_right_swaps_and_crossed_limbs(vp):
    from cpm_nb.core.skeleton import JOINT, flip_permutation

    flip = flip_permutation()
    r, l_ = JOINT["r_wrist"], JOINT["l_wrist"]
    vp.pred[-1][3, r] = vp.gt[3, l_]  # person 3: right wrist predicted on the left one
    vp.gt[4, :, 0] = np.arange(16) * 0  # person 4: everything on one vertical line
    swaps = E.left_right_swaps(vp)
    assert swaps[3, r] and not swaps[3, l_]
    assert flip[r] == l_
    gt = np.zeros((1, 16, 2))
    valid = np.ones((1, 16), bool)
    for name, x in (("r_shoulder", 0), ("l_shoulder", 10), ("r_elbow", 0), ("l_elbow", 10),
                    ("r_wrist", 12), ("l_wrist", -2), ("r_hip", 2), ("l_hip", 8),
                    ("r_knee", 2), ("l_knee", 8), ("r_ankle", 2), ("l_ankle", 8)):
        gt[0, JOINT[name], 0] = x
    assert E.limbs_crossed(gt, valid).tolist() == [True]  # the wrists cross
    gt[0, JOINT["r_wrist"], 0], gt[0, JOINT["l_wrist"], 0] = -2, 12
    assert E.limbs_crossed(gt, valid).tolist() == [False]
