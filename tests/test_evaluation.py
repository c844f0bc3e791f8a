"""cpm_nb.evaluation: breakdowns of a validation score (on made-up predictions)."""

import json

import numpy as np
import pytest

from cpm_nb import cli, metrics
from cpm_nb import evaluation as E


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
    dis = E.by_distractors(vp)
    assert [v[1] for v in dis.values()] == [4, 4, 4]
    best, worst = E.best_and_worst(vp, 2)
    assert worst[0] == 5 and 5 not in best
    assert E.person_scores(vp)[5] == 0
    assert set(E.hardest(vp, 4)) == {0, 1, 2, 3}
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
