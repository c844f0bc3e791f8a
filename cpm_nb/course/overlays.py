"""Pictures of a validation pass: the source article's confidence-map figure and friends.

The source article shows, for a few hard people, three belief maps of the last stage
laid over the image in colour -- the **head** (head top) yellow, the **left knee** red
and the **right foot** (right ankle) blue (:data:`ARTICLE_MAPS`) --
one row for a 2-stage and one for a 6-stage network.  This module makes that figure
from :class:`cpm_nb.evaluation.evaluate.ValidationPredictions`:

* :func:`hardness` measures, from the ground truth only, what makes a pose hard (bent
  limbs, raised limbs, crossed limbs, a second person overlapping, a few occluded
  joints) and whether the person is visible enough to show;
  :func:`pick_hard_people` ranks by those measurements.  Because only the ground truth
  is used, two networks evaluated on the same folder get the *same* people.
* :func:`blend_maps` upsamples the belief maps to the crop
  (:func:`cpm_nb.model.heatmaps.upsample`: bilinear, on the cell centres
  :func:`cpm_nb.model.heatmaps.decode` uses) and lays them over the dimmed crop as
  coloured alpha layers; the map value is the opacity (the maps are trained towards
  Gaussians of peak 1, so a faint blob is a weak belief).
* :func:`plot_article_overlays` draws the grid (rows: networks, columns: people) with
  ground-truth markers and a colour key.

For the distractor analysis of notebook 06, :func:`pick_on_other_person` finds the crops
where predictions landed on another person, and :func:`plot_distractor_examples`
draws them (target ground truth, the other person's joints, the prediction);
:func:`plot_people` draws predicted and true skeletons on crops, limited to the crop.
:func:`show_predictions` runs a model on a few crops and draws its skeletons over the
ground truth; :func:`prediction_figure` shows one :class:`~cpm_nb.inference.predict.Prediction`
with the article's three maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cpm_nb.core import skeleton
from cpm_nb.course.viz import draw_skeleton, fit_to_crop
from cpm_nb.evaluation import evaluate as evaluation
from cpm_nb.model import heatmaps

J = skeleton.JOINT
# The source article's confidence-map figure: head yellow, left knee red, right foot blue.
ARTICLE_MAPS = (("head_top", "yellow"), ("l_knee", "red"), ("r_ankle", "blue"))
ARTICLE_JOINTS = tuple(J[name] for name, _ in ARTICLE_MAPS)
ARTICLE_LABELS = {"head_top": "head (head top)", "l_knee": "left knee",
                  "r_ankle": "right foot (right ankle)"}

# Thresholds of pick_hard_people's criteria (degrees, joint counts).
BENT_DEG = 60.0  # an elbow or knee bent by at least this much (0 = straight)
RAISED_DEG = 75.0  # an upper arm or thigh at least this far from pointing straight down
MIN_ANNOTATED = 13  # eligible: at least 13 of the 16 joints annotated ...
MAX_OCCLUDED = 3  # ... at most 3 of them occluded, and the three mapped joints visible
CRITERIA = ("bent", "raised", "crossed", "overlap", "occluded")


# --- crop coordinates -------------------------------------------------------------------------


def crop_matrices(vp) -> np.ndarray:
    """[N, 2, 3] the affine map original px -> crop px of every person: the crop matrices
    :func:`cpm_nb.evaluation.evaluate.collect` kept, else fitted (least squares, exact up to float32
    rounding) to the annotated ground truth in both frames, NaN for a person with fewer
    than 3 annotated joints."""
    if getattr(vp, "crop_matrix", None) is not None:
        return np.asarray(vp.crop_matrix, float)[:, :2]
    out = np.full((vp.n, 2, 3), np.nan)
    for i in range(vp.n):
        v = vp.valid[i]
        if v.sum() < 3:
            continue
        a = np.c_[vp.gt[i][v], np.ones(int(v.sum()))]
        m, *_ = np.linalg.lstsq(a, vp.gt_crop[i][v], rcond=None)
        out[i] = m.T
    return out


def to_crop(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Points ``[..., 2]`` in original px to crop px with one ``[2, 3]`` matrix."""
    xy = np.asarray(xy, float)
    return xy @ matrix[:, :2].T + matrix[:, 2]


def others_in_crop(vp) -> np.ndarray:
    """[N, K, 16, 2] the distractors' joints (:attr:`ValidationPredictions.others`) in
    crop px (NaN where not annotated); ``K = 0`` when the split had no annotations."""
    if vp.others is None:
        return np.full((vp.n, 0, 16, 2), np.nan)
    m = crop_matrices(vp)
    return np.stack([to_crop(m[i], vp.others[i]) for i in range(vp.n)])


# --- what makes a pose hard -----------------------------------------------------------------


def _bend(a, b, c) -> np.ndarray:
    """[N] degrees the chain a-b-c turns at b (0 = straight), NaN where undefined."""
    u, v = b - a, c - b
    nu, nv = np.linalg.norm(u, axis=-1), np.linalg.norm(v, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (u * v).sum(-1) / (nu * nv)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def _from_down(a, b) -> np.ndarray:
    """[N] degrees between the limb a->b and straight down (image y), 0..180."""
    d = b - a
    return np.degrees(np.abs(np.arctan2(d[..., 0], d[..., 1])))


def hardness(vp) -> dict[str, np.ndarray]:
    """Per person, from the ground truth in the crop (degrees, counts, flags):

    * ``bend``: the largest bend at an elbow or knee (0 = straight limb);
    * ``raise``: the largest angle of an upper arm or thigh from straight down;
    * ``crossed``: left and right wrists/elbows/knees/ankles on the wrong sides
      (:func:`cpm_nb.evaluation.evaluate.limbs_crossed`);
    * ``overlap``: another person has a joint inside the box of this person's joints
      (the crop holds an overlapping second person, not just a neighbour at the edge);
    * ``annotated``, ``occluded``: joint counts;
    * ``eligible``: visible enough to show -- at least :data:`MIN_ANNOTATED` joints
      annotated, at most :data:`MAX_OCCLUDED` occluded, and the three mapped joints
      (head top, left knee, right ankle) visible and inside the crop;
    * the criteria met (``bent``, ``raised``, ``crossed``, ``overlap``, ``occluded``:
      1 to :data:`MAX_OCCLUDED` occluded joints) and ``score``, their count.
    """
    g, valid, vis = vp.gt_crop.astype(float), vp.valid, vp.visibility
    bend = np.full(vp.n, np.nan)
    for a, b, c in (("shoulder", "elbow", "wrist"), ("hip", "knee", "ankle")):
        for side in "rl":
            ja, jb, jc = (J[f"{side}_{x}"] for x in (a, b, c))
            ok = valid[:, ja] & valid[:, jb] & valid[:, jc]
            v = np.where(ok, _bend(g[:, ja], g[:, jb], g[:, jc]), np.nan)
            bend = np.fmax(bend, v)
    raised = np.full(vp.n, np.nan)
    for a, b in (("shoulder", "elbow"), ("hip", "knee")):
        for side in "rl":
            ja, jb = J[f"{side}_{a}"], J[f"{side}_{b}"]
            ok = valid[:, ja] & valid[:, jb]
            raised = np.fmax(raised, np.where(ok, _from_down(g[:, ja], g[:, jb]), np.nan))
    others = others_in_crop(vp)
    overlap = np.zeros(vp.n, bool)
    for i in range(vp.n):
        own = g[i][valid[i]]
        pts = others[i].reshape(-1, 2)
        pts = pts[np.isfinite(pts).all(1)]
        if len(own) and len(pts):
            lo, hi = own.min(0), own.max(0)
            overlap[i] = ((pts >= lo) & (pts <= hi)).all(1).any()
    size = vp.images.shape[1] if vp.images is not None else np.inf
    mapped = list(ARTICLE_JOINTS)
    inside = ((g[:, mapped] >= 0) & (g[:, mapped] <= size - 1)).all((1, 2))
    annotated, occluded = valid.sum(1), (vis == 1).sum(1)
    eligible = ((annotated >= MIN_ANNOTATED) & (occluded <= MAX_OCCLUDED)
                & (vis[:, mapped] == 2).all(1) & inside)
    crit = {"bent": np.nan_to_num(bend) >= BENT_DEG,
            "raised": np.nan_to_num(raised) >= RAISED_DEG,
            "crossed": evaluation.limbs_crossed(vp.gt, valid), "overlap": overlap,
            "occluded": (occluded >= 1) & (occluded <= MAX_OCCLUDED)}
    score = sum(crit[k].astype(int) for k in CRITERIA)
    return {"bend": bend, "raise": raised, "annotated": annotated, "occluded_count": occluded,
            "eligible": eligible, **crit, "score": score}


def pick_hard_people(vp, k: int = 3) -> np.ndarray:
    """Up to ``k`` hard but visible people, by measurement (:func:`hardness`): among the
    eligible people (enough joints annotated, few occluded, the three mapped joints
    visible in the crop), the most criteria met (bent limb, raised limb, crossed limbs,
    an overlapping second person, a few occluded joints); ties go to the more bent
    limb.  Only the ground truth is used, so every network evaluated on the same folder
    gets the same people.  Fewer than ``k`` when fewer are eligible."""
    h = hardness(vp)
    ids = np.flatnonzero(h["eligible"])
    order = np.lexsort((-np.nan_to_num(h["bend"][ids]), -h["score"][ids]))
    return ids[order][:k]


def describe(h: dict, i: int) -> str:
    """The criteria person ``i`` meets, in words (for a panel title)."""
    words = {"bent": f"bent {h['bend'][i]:.0f}°", "raised": f"raised {h['raise'][i]:.0f}°",
             "crossed": "crossed", "overlap": "2nd person",
             "occluded": f"{h['occluded_count'][i]} occluded"}
    return ", ".join(words[c] for c in CRITERIA if h[c][i]) or "no criterion"


# --- the article's overlay ------------------------------------------------------------------


def blend_maps(crop: np.ndarray, maps: np.ndarray, joints_colours: Sequence,
               dim: float = 0.7, grey: bool = True) -> np.ndarray:
    """The crop (uint8 ``[S, S, 3]``; in grey -- its luminance -- when ``grey``, so that
    colour means belief only; dimmed by ``dim``) with the belief maps of
    ``joints_colours`` -- ``(joint id or name, matplotlib colour)`` pairs -- upsampled
    (:func:`cpm_nb.model.heatmaps.upsample`) and laid over it one after the other as
    coloured alpha layers:
    ``out = out * (1 - a) + a * colour`` with opacity ``a = clip(map, 0, 1)``.  The map
    value itself is the opacity (no rescaling per map): the maps are trained towards
    Gaussians of peak 1, so a faint colour is a weak belief.  Float RGB in 0..1."""
    from matplotlib.colors import to_rgb

    size = crop.shape[0]
    out = np.asarray(crop, np.float64) / 255.0 * dim
    if grey:
        out = np.repeat((out @ [0.299, 0.587, 0.114])[..., None], 3, axis=-1)
    for joint, colour in joints_colours:
        j = J[joint] if isinstance(joint, str) else int(joint)
        a = np.clip(heatmaps.upsample(maps[..., j], size), 0.0, 1.0)[..., None]
        out = out * (1 - a) + a * np.asarray(to_rgb(colour))[None, None]
    return np.clip(out, 0.0, 1.0)


def article_legend_handles(with_others: bool = False) -> list:
    """The colour key of :func:`plot_article_overlays`."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=f"belief: {ARTICLE_LABELS[name]}")
               for name, c in ARTICLE_MAPS]
    handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="w", mew=1.5, ms=9,
                          label="ground truth (ring in the joint's colour)"))
    handles.append(Line2D([], [], ls="", marker="+", color="w", mew=1.5, ms=9,
                          label="prediction (peak of the map)"))
    if with_others:
        handles.append(Line2D([], [], ls="", marker="x", color="orange", mew=1.2, ms=6,
                              label="other person's joints"))
    return handles


def plot_article_overlays(rows: dict, idx, axes=None, titles: bool = True):
    """The source article's figure: for each network of ``rows`` (``label ->``
    :class:`ValidationPredictions` of the same folder; one row each) and each person of
    ``idx`` (one column each), the last stage's head-top (yellow), left-knee (red) and
    right-ankle (blue) belief maps blended over the crop (:func:`blend_maps`), with rings
    on the true joints, crosses on the predicted ones, the other people's joints in the
    crop (orange x) and a colour key.  Returns the figure."""
    import matplotlib.pyplot as plt

    idx = list(np.atleast_1d(idx))
    labels = list(rows)
    if axes is None:
        fig, axes = plt.subplots(len(labels), len(idx), squeeze=False,
                                 figsize=(2.9 * len(idx), 3.0 * len(labels) + 0.9),
                                 layout="constrained")
    else:
        axes = np.asarray(axes).reshape(len(labels), len(idx))
        fig = axes[0, 0].figure
    first = rows[labels[0]]
    h = hardness(first)
    others = others_in_crop(first)
    any_others = False
    for r, label in enumerate(labels):
        vp = rows[label]
        if vp.images is None or vp.maps is None:
            raise ValueError(f"{label}: collect(..., keep_images=True) keeps the crops and maps")
        for c, i in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(blend_maps(vp.images[i], vp.maps[i], ARTICLE_MAPS))
            pts = others[i].reshape(-1, 2)
            pts = pts[np.isfinite(pts).all(1)]
            if len(pts):
                any_others = True
                ax.plot(pts[:, 0], pts[:, 1], "x", color="orange", ms=4, mew=0.9, alpha=0.8)
            for name, colour in ARTICLE_MAPS:
                j = J[name]
                if vp.valid[i, j]:
                    ax.plot(*vp.gt_crop[i, j], "o", mfc="none", mec=colour, mew=1.8, ms=10)
                    ax.plot(*vp.gt_crop[i, j], "o", mfc="none", mec="k", mew=0.6, ms=12)
                ax.plot(*vp.pred_crop[i, j], "+", color="w", mew=1.5, ms=9)
            fit_to_crop(ax, vp.images.shape[1])
            conf = vp.confidence[i, list(ARTICLE_JOINTS)]
            ax.set_xlabel("peak head / knee / foot: " + " / ".join(f"{v:.2f}" for v in conf),
                          fontsize=7)
            if titles and r == 0:
                ax.set_title(f"#{i}\n{describe(h, i)}", fontsize=8)
        axes[r, 0].set_ylabel(label, fontsize=10)
    fig.legend(handles=article_legend_handles(any_others), loc="outside lower center",
               ncol=3, fontsize=8, facecolor="0.3", labelcolor="w")
    return fig


# --- distractors: predictions on the other person ---------------------------------------------


def pick_on_other_person(vp, k: int = 2, stage: int = -1) -> np.ndarray:
    """Up to ``k`` people with the most joints predicted on another person in their crop
    (:func:`cpm_nb.evaluation.evaluate.on_other_person`), most first; none when no prediction
    landed on another person."""
    hits = evaluation.on_other_person(vp, stage).sum(1)
    ids = np.flatnonzero(hits > 0)
    return ids[np.argsort(-hits[ids], kind="stable")][:k]


def plot_distractor_examples(vp, idx, axes, stage: int = -1) -> None:
    """Crops where predictions landed on another person: the target's ground truth
    (white rings, faint skeleton), the other person's joints (orange x), every
    predicted joint (small dots) and those on the other person (large red crosses,
    joined to the target's true joint), limited to the crop, with a legend."""
    from matplotlib.lines import Line2D

    hit = evaluation.on_other_person(vp, stage)
    others = others_in_crop(vp)
    m = crop_matrices(vp)
    for ax, i in zip(axes, idx):
        size = vp.images.shape[1]
        ax.imshow(vp.images[i])
        v = vp.valid[i]
        draw_skeleton(ax, vp.gt_crop[i], v, linewidth=1, markersize=0, alpha=0.5)
        ax.plot(*vp.gt_crop[i][v].T, "o", mfc="none", mec="w", mew=1.2, ms=6)
        pts = others[i].reshape(-1, 2)
        pts = pts[np.isfinite(pts).all(1)]
        ax.plot(pts[:, 0], pts[:, 1], "x", color="orange", mew=1.5, ms=7)
        pred = to_crop(m[i], vp.pred[stage][i])
        ax.plot(*pred[v].T, ".", color="deepskyblue", ms=7)
        for j in np.flatnonzero(hit[i]):
            ax.plot(*np.c_[vp.gt_crop[i, j], pred[j]], "-", color="red", lw=1)
            ax.plot(*pred[j], "X", color="red", mec="k", mew=0.5, ms=11)
        fit_to_crop(ax, size)
        names = ", ".join(skeleton.JOINT_NAMES[j] for j in np.flatnonzero(hit[i]))
        ax.set_title(f"#{i}: on the other person:\n{names}", fontsize=8)
    handles = [Line2D([], [], ls="", marker="o", mfc="none", mec="k", label="target, truth"),
               Line2D([], [], ls="", marker="x", color="orange", label="other person"),
               Line2D([], [], ls="", marker=".", color="deepskyblue", ms=9, label="prediction"),
               Line2D([], [], ls="-", marker="X", color="red", label="on the other person")]
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)


# --- skeletons ---------------------------------------------------------------------------------


def plot_people(vp, idx, axes, scores=None) -> None:
    """Crops with the ground truth (thin white skeleton and rings) under the predicted
    skeleton of the last stage (coloured, thick), limited to the crop (joints outside
    it do not stretch the panel); ``scores`` [N] (% joints correct) go in the titles."""
    from cpm_nb.course.viz import draw_skeleton

    for ax, i in zip(axes, idx):
        size = vp.images.shape[1]
        v = vp.valid[i]
        ax.imshow(vp.images[i])
        for a, b in skeleton.LIMBS:
            if v[a] and v[b]:
                ax.plot(*vp.gt_crop[i, [a, b]].T, "-", color="w", lw=1.2, alpha=0.9)
        ax.plot(*vp.gt_crop[i][v].T, "o", mfc="none", mec="w", mew=1.0, ms=5)
        draw_skeleton(ax, vp.pred_crop[i], v, linewidth=2.2, markersize=5)
        fit_to_crop(ax, size)
        if scores is not None:
            ax.set_title(f"#{i}: {scores[i]:.0f} % correct", fontsize=9)


def people_legend_handles() -> list:
    """The key of :func:`plot_people`."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], color="0.5", lw=1.2, marker="o", mfc="none", mec="0.5",
                   label="ground truth (white)"),
            Line2D([], [], color=skeleton.JOINT_COLORS[1], lw=2.2, marker="o", mec="k",
                   label="prediction, right side (warm)"),
            Line2D([], [], color=skeleton.JOINT_COLORS[4], lw=2.2, marker="o", mec="k",
                   label="prediction, left side (cool)")]


# --- a model's predictions -------------------------------------------------------------------


def show_predictions(model, images, joints, visibility, axes, stage: int = -1) -> None:
    """Crops with ``model``'s predicted skeleton of ``stage`` (solid) over the ground truth
    (faint)."""
    maps = model.belief_maps(images)[stage][..., : model.cpm_config.num_joints]
    pred, _ = heatmaps.decode(maps)
    for ax, im, p, j, v in zip(axes, images, pred, joints, visibility):
        ax.imshow(im)
        draw_skeleton(ax, j, v > 0, linewidth=1, markersize=2, alpha=0.35)
        draw_skeleton(ax, p, v > 0, linewidth=1.5, markersize=3)
        fit_to_crop(ax, im.shape[0])
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="0.3", lw=1.5, label="prediction (solid)"),
               Line2D([], [], color="0.3", lw=1, alpha=0.35, label="ground truth (faint)")]
    axes[0].legend(handles=handles, loc="lower left", fontsize=7, framealpha=0.8)


def prediction_figure(pred, title: str | None = None):
    """One :class:`~cpm_nb.inference.predict.Prediction`: the pose on the image, and the last
    stage's belief maps of the head, the left knee and the right ankle over the crop in the
    source article's colours (yellow, red, blue).  Returns the figure."""
    import matplotlib.pyplot as plt

    from cpm_nb.course.viz import draw_prediction, maps_overlay

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), layout="constrained")
    draw_prediction(axes[0], pred, title=title)
    colours = [colour for _, colour in ARTICLE_MAPS]
    axes[1].imshow(maps_overlay(pred.crop, pred.stage_maps[-1], ARTICLE_JOINTS, colours))
    axes[1].set(xticks=[], yticks=[], title="head (yellow), left knee (red), right ankle (blue)")
    return fig
