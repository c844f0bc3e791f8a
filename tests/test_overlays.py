"""cpm_nb.course.overlays: picking hard people and drawing the article's confidence maps
(on made-up predictions)."""

import matplotlib
import numpy as np
import pytest

from cpm_nb.core.skeleton import JOINT
from cpm_nb.course import overlays as O
from cpm_nb.evaluation import evaluate as E
from cpm_nb.model import heatmaps

matplotlib.use("Agg")

S, M = 64, 8  # crop and map size (stride 8)


def standing(n):
    """n upright people in crop px: head at the top, ankles at the bottom, limbs straight."""
    xy = {"head_top": (32, 6), "upper_neck": (32, 12), "thorax": (32, 16), "pelvis": (32, 34),
          "r_shoulder": (26, 16), "l_shoulder": (38, 16), "r_elbow": (26, 25),
          "l_elbow": (38, 25), "r_wrist": (26, 33), "l_wrist": (38, 33), "r_hip": (28, 34),
          "l_hip": (36, 34), "r_knee": (28, 46), "l_knee": (36, 46), "r_ankle": (28, 58),
          "l_ankle": (36, 58)}
    one = np.array([xy[name] for name in sorted(JOINT, key=JOINT.get)], float)
    return np.repeat(one[None], n, axis=0)


@pytest.fixture
def vp():
    """8 people; crop px = (original px - 100) / 2, so the crop matrix is known."""
    n = 8
    crop = standing(n)
    vis = np.full((n, 16), 2)
    # 1: left knee bent by 90 degrees (the shin goes sideways)
    crop[1, JOINT["l_ankle"]] = (48, 46)
    # 2: bent like 1 and the right arm raised to the side (90 degrees from down)
    crop[2, JOINT["l_ankle"]] = (48, 46)
    crop[2, JOINT["r_elbow"]], crop[2, JOINT["r_wrist"]] = (16, 16), (8, 16)
    # 3: as 2 but most joints occluded: not eligible, however hard
    crop[3] = crop[2]
    vis[3, 4:] = 1
    # 4: as 2 but the left knee (a mapped joint) occluded: not eligible
    crop[4] = crop[2]
    vis[4, JOINT["l_knee"]] = 1
    # 5: one occluded wrist (a criterion) and another person overlapping
    vis[5, JOINT["r_wrist"]] = 1
    # 6: 4 joints not annotated (12 < 13 annotated): not eligible
    vis[6, :4] = 0
    gt = crop * 2 + 100
    head = np.stack([gt[:, 9] - 8, gt[:, 9] + 8], axis=1)  # head size 0.6 * 22.6 = 13.6 px
    pred = gt.copy()
    others = np.full((n, 1, 16, 2), np.nan)
    others[5, 0] = gt[5] + [20, 0]  # a second person 10 crop px to the right, overlapping
    others[7, 0] = gt[7] + [70, 0]  # a neighbour with joints in the crop, outside the body
    pred[5, :3] = others[5, 0, :3]  # person 5: three joints on the other person
    maps = heatmaps.render_numpy(crop, vis, S, sigma=6.0)
    return E.ValidationPredictions(
        images=np.full((n, S, S, 3), 128, np.uint8), pred=[pred.copy(), pred],
        pred_crop=(pred - 100) / 2, confidence=np.ones((n, 16)), maps=maps.astype(np.float16),
        gt=gt, gt_crop=crop, visibility=vis, headboxes=head, n_others=np.zeros(n, int),
        scale=np.full(n, 0.5), others=others)


def test_crop_matrices_recover_the_crop(vp):
    m = O.crop_matrices(vp)
    np.testing.assert_allclose(m[0], [[0.5, 0, -50], [0, 0.5, -50]], atol=1e-9)
    np.testing.assert_allclose(O.to_crop(m[3], vp.gt[3]), vp.gt_crop[3], atol=1e-9)
    oc = O.others_in_crop(vp)
    np.testing.assert_allclose(oc[5, 0], vp.gt_crop[5] + [10, 0], atol=1e-9)
    assert np.isnan(oc[0]).all()


def test_hardness_measures(vp):
    h = O.hardness(vp)
    assert h["bend"][0] == pytest.approx(0) and h["bend"][1] == pytest.approx(90)
    assert h["raise"][0] == pytest.approx(0) and h["raise"][2] == pytest.approx(90)
    assert h["bent"].tolist() == [False, True, True, True, True, False, False, False]
    assert h["raised"].tolist() == [False, False, True, True, True, False, False, False]
    assert h["overlap"].tolist() == [False] * 5 + [True, False, False]  # 7: not overlapping
    assert h["occluded"][5] and not h["occluded"][3]  # 12 occluded is not "a few"
    assert h["eligible"].tolist() == [True, True, True, False, False, True, False, True]
    assert h["score"].tolist() == [0, 1, 2, 2, 3, 2, 0, 0]
    assert O.describe(h, 2) == "bent 90°, raised 90°"
    assert O.describe(h, 0) == "no criterion"


def test_pick_hard_people_by_measurement(vp):
    # eligible only; most criteria first, ties to the more bent limb (2 before 5)
    assert O.pick_hard_people(vp, 3).tolist() == [2, 5, 1]
    assert O.pick_hard_people(vp, 20).tolist() == [2, 5, 1, 0, 7]
    # only the ground truth decides: another network's predictions pick the same people
    other = E.ValidationPredictions(**{**vp.__dict__, "pred": [vp.gt + 30, vp.gt + 30]})
    assert O.pick_hard_people(other, 3).tolist() == [2, 5, 1]


def test_pick_on_other_person(vp):
    assert O.pick_on_other_person(vp, 2).tolist() == [5]
    vp.pred[-1][5] = vp.gt[5]
    assert O.pick_on_other_person(vp, 2).tolist() == []


def test_blend_maps_is_an_alpha_layer_per_map():
    crop = np.full((S, S, 3), 200, np.uint8)
    maps = np.zeros((M, M, 16), np.float32)
    out = O.blend_maps(crop, maps, O.ARTICLE_MAPS)
    assert out.shape == (S, S, 3) and np.allclose(out, 0.7 * 200 / 255)  # dimmed, no colour
    maps[..., JOINT["l_knee"]] = 1.0  # a certain left knee everywhere: red
    out = O.blend_maps(crop, maps, O.ARTICLE_MAPS)
    assert np.allclose(out, [1, 0, 0])
    maps[..., JOINT["l_knee"]] = 0.5  # half belief: half red over the crop
    out = O.blend_maps(crop, maps, [("l_knee", "red")], grey=False, dim=1.0)
    assert np.allclose(out, 0.5 * 200 / 255 + 0.5 * np.array([1, 0, 0]))
    # later layers go on top; values above 1 or below 0 are clipped
    maps[..., JOINT["r_ankle"]] = 2.0
    maps[..., JOINT["head_top"]] = -1.0
    out = O.blend_maps(crop, maps, O.ARTICLE_MAPS)
    assert np.allclose(out, [0, 0, 1])
    # by joint id as well as by name
    np.testing.assert_array_equal(
        O.blend_maps(crop, maps, [(JOINT["r_ankle"], "blue")]),
        O.blend_maps(crop, maps, [("r_ankle", "blue")]))


def test_plot_article_overlays(vp):
    import matplotlib.pyplot as plt

    idx = O.pick_hard_people(vp, 3)
    fig = O.plot_article_overlays({"2 stages": vp, "6 stages": vp}, idx)
    axes = np.array(fig.axes).reshape(2, 3)
    assert axes[0, 0].get_ylabel() == "2 stages" and axes[1, 0].get_ylabel() == "6 stages"
    assert axes[0, 1].get_title().startswith("#5\n") and "2nd person" in axes[0, 1].get_title()
    assert axes[0, 0].get_xlim() == (-0.5, S - 0.5) and axes[0, 0].get_ylim() == (S - 0.5, -0.5)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:3] == ["belief: head (head top)", "belief: left knee",
                          "belief: right foot (right ankle)"]
    assert "other person's joints" in labels and any("ground truth" in t for t in labels)
    plt.close(fig)
    vp.maps = None
    with pytest.raises(ValueError, match="keep_images"):
        O.plot_article_overlays({"a": vp}, idx)


def test_distractor_examples_and_people_panels(vp):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    O.plot_distractor_examples(vp, [5], axes[:1])
    assert "r_ankle, r_knee, r_hip" in axes[0].get_title()
    assert axes[0].get_xlim() == (-0.5, S - 0.5)
    O.plot_people(vp, [0], axes[1:], scores=E.person_scores(vp))
    assert axes[1].get_title() == "#0: 100 % correct"
    assert axes[1].get_ylim() == (S - 0.5, -0.5)
    assert len(O.people_legend_handles()) == 3
    plt.close(fig)
