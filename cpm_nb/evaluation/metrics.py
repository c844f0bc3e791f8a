"""Pose-estimation metrics: the article's fixed radius, PCK@alpha, the official MPII PCKh, strict PCP.

All functions take predictions and ground truth as ``[N, J, 2]`` (x, y) arrays
in the *same* pixel frame (crop or original image: the metrics only use
distances) and a per-joint validity mask ``[N, J]`` (``True`` = annotated).
Joints that are not annotated are excluded from every count (never counted
as wrong).  Percentages are in percent.

* :func:`fixed_radius` -- the source article's metric: a joint is correct when
  the prediction lies within a fixed radius (default 25 px) of the truth.
* :func:`pck` -- PCK@alpha: correct when ``dist <= alpha * L`` with a per-person
  reference length ``L`` (torso size, bounding-box size, ... see :func:`torso_size`).
* :func:`pckh` / :func:`pckh_curve` -- PCKh exactly as the official MPII MATLAB
  toolkit (``evaluatePCKh.m``), see below.
* :func:`pcp` -- strict PCP: a limb is correct when *both* predicted endpoints lie
  within 50% of the true limb length of their true positions.

The official MPII PCKh
----------------------
* head size = ``SC_BIAS * ||headbox corner2 - corner1||`` with ``SC_BIAS = 0.6``
  (``util_get_head_size.m``), i.e. 0.6 x the head-box diagonal;
* a joint is correct iff ``dist <= threshold * head size`` (``<=``, as
  ``computePCK.m``; several Python evaluators use ``<``);
* missing joints are excluded;
* the *total* ("Mean") pools every annotated joint of the 14 joint types other
  than pelvis (6) and thorax (7): it is the count-weighted mean of the per-joint
  values, not the plain average of the 14 (some evaluators report the latter);
* the table columns follow ``genTablePCK.m``: Head = mean of upper neck and head
  top (Python evaluators usually report head top only), Shoulder, Elbow, Wrist,
  Hip, Knee, Ankle = mean of the right and left joint;
* Mean@0.1 is the total at threshold exactly 0.10.  (Some open-source evaluators
  index their 0..0.5 threshold array one step too far and report the total at
  0.11 under this name.)
* the curve uses thresholds 0, 0.01, ..., 0.5 (``range = 0:0.01:0.5``).

:func:`cpm_nb.evaluation.mpii_mat.evaluate_mpii` (and the ``cpm-nb evaluate-mpii`` command)
applies this to ``.mat`` files in the layout of the widely used ``gt_valid.mat``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cpm_nb.core import skeleton

ARTICLE_RADIUS = 25.0  # px: the source article's fixed-radius metric
SC_BIAS = 0.6  # head size = SC_BIAS x head-box diagonal (MPII toolkit)
PCKH_THRESHOLD = 0.5
PCKH_CURVE_THRESHOLDS = np.round(np.arange(51) * 0.01, 2)  # 0, 0.01, ..., 0.5
PCKH_EXCLUDED = (skeleton.JOINT["pelvis"], skeleton.JOINT["thorax"])
PCKH_GROUPS = {  # table column -> joint ids averaged (genTablePCK.m)
    "Head": (8, 9),
    "Shoulder": (12, 13),
    "Elbow": (11, 14),
    "Wrist": (10, 15),
    "Hip": (2, 3),
    "Knee": (1, 4),
    "Ankle": (0, 5),
}

# Limbs scored by PCP: name -> (joint, joint) in MPII ids.
PCP_LIMBS = {
    "r_lower_leg": (0, 1), "r_upper_leg": (1, 2), "l_upper_leg": (3, 4), "l_lower_leg": (4, 5),
    "r_forearm": (10, 11), "r_upper_arm": (11, 12), "l_upper_arm": (13, 14), "l_forearm": (14, 15),
    "torso": (6, 7), "head": (8, 9),
}  # fmt: skip
PCP_GROUPS = {
    "Torso": ("torso",), "Upper leg": ("r_upper_leg", "l_upper_leg"),
    "Lower leg": ("r_lower_leg", "l_lower_leg"), "Upper arm": ("r_upper_arm", "l_upper_arm"),
    "Forearm": ("r_forearm", "l_forearm"), "Head": ("head",),
}  # fmt: skip


def _check(pred, gt, valid=None):
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"pred and gt must both be [N, J, 2]; got {pred.shape} and {gt.shape}")
    if valid is None:
        valid = np.all(np.isfinite(gt), axis=-1)
    valid = np.asarray(valid).astype(bool)
    if valid.shape != gt.shape[:2]:
        raise ValueError(f"valid must be [N, J] = {gt.shape[:2]}, got {valid.shape}")
    return pred, gt, valid


def _percent(correct, valid, axis=None):
    """100 * correct / counted over ``axis``, NaN where nothing is counted."""
    n = valid.sum(axis=axis)
    hits = (correct & valid).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, 100.0 * hits / np.maximum(n, 1), np.nan)


@dataclass
class JointScores:
    """Per-joint percentages (NaN when a joint was never annotated), the pooled total
    (count-weighted over the counted joints) and the number of annotated joints."""

    per_joint: np.ndarray
    total: float
    counts: np.ndarray

    def as_dict(self, names=skeleton.JOINT_NAMES) -> dict:
        return {"total": _num(self.total),
                "per_joint": {n: _num(v) for n, v in zip(names, self.per_joint)},
                "counts": {n: int(c) for n, c in zip(names, self.counts)}}


def _num(v):
    return None if v is None or not np.isfinite(v) else float(v)


def _scores(correct, valid) -> JointScores:
    return JointScores(per_joint=_percent(correct, valid, axis=0),
                       total=float(_percent(correct, valid)), counts=valid.sum(axis=0))


def fixed_radius(pred, gt, valid=None, radius: float = ARTICLE_RADIUS) -> JointScores:
    """The source article's metric: % of joints whose prediction is within ``radius`` px.

    correct(n, j) = ||pred - gt|| <= radius, counted over annotated joints only
    (``valid``; default: the joints whose ground truth is finite).  The radius is
    absolute, so the score depends on the image scale: 25 px is generous on a
    small crop and strict on a full-resolution photograph.
    """
    pred, gt, valid = _check(pred, gt, valid)
    dist = np.linalg.norm(pred - gt, axis=-1)
    return _scores(dist <= radius, valid)


def torso_size(gt) -> np.ndarray:
    """Per-person reference length for PCK: distance from the left shoulder to the right hip
    (the usual "torso diameter" of PCK@0.2 on LSP/MPII), [N]."""
    gt = np.asarray(gt, dtype=np.float64)
    return np.linalg.norm(gt[:, skeleton.JOINT["l_shoulder"]] - gt[:, skeleton.JOINT["r_hip"]],
                          axis=-1)


def bbox_size(gt, valid=None) -> np.ndarray:
    """Per-person reference length: the larger side of the box around the annotated joints, [N]."""
    gt = np.asarray(gt, dtype=np.float64)
    valid = np.all(np.isfinite(gt), -1) if valid is None else np.asarray(valid, bool)
    masked = np.where(valid[..., None], gt, np.nan)
    with np.errstate(invalid="ignore"):
        side = np.nanmax(masked, axis=1) - np.nanmin(masked, axis=1)
    return np.nanmax(side, axis=-1)


def pck(pred, gt, reference, alpha: float = 0.2, valid=None) -> JointScores:
    """PCK@alpha: % of joints with ``||pred - gt|| <= alpha * reference[n]``.

    ``reference`` is one length per person ([N], or a scalar), e.g.
    :func:`torso_size` (PCK@0.2) or :func:`bbox_size`; PCKh is the special case
    of the head size (see :func:`pckh`).  People whose reference length is not
    positive and finite are not counted.
    """
    pred, gt, valid = _check(pred, gt, valid)
    ref = np.broadcast_to(np.asarray(reference, dtype=np.float64), gt.shape[:1])
    ok = np.isfinite(ref) & (ref > 0)
    valid = valid & ok[:, None]
    dist = np.linalg.norm(pred - gt, axis=-1)
    return _scores(dist <= alpha * np.where(ok, ref, 0.0)[:, None], valid)


# --------------------------------------------------------------------------- PCKh


def head_sizes(headboxes) -> np.ndarray:
    """Head size per person: ``0.6 * ||(x2, y2) - (x1, y1)||`` of the head box.

    ``headboxes`` is [N, 2, 2] (rows: corner 1, corner 2; columns: x, y).
    """
    hb = np.asarray(headboxes, dtype=np.float64)
    return SC_BIAS * np.linalg.norm(hb[:, 1] - hb[:, 0], axis=-1)


NEVER_CORRECT = np.finfo(np.float64).max  # the distance of a joint that was not predicted


def pckh_distances(pred, gt, headboxes, valid=None) -> np.ndarray:
    """Distances normalised by the head size, [N, J]; NaN for joints that are not annotated."""
    pred, gt, valid = _check(pred, gt, valid)
    heads = head_sizes(headboxes)
    with np.errstate(divide="ignore", invalid="ignore"):  # people without a head size
        dist = np.linalg.norm(pred - gt, axis=-1) / heads[:, None]
    # a NaN or infinite prediction of an annotated joint is wrong, not left out (as in
    # pcp and fixed_radius): farther than any threshold, yet finite, so it is counted
    measured = np.isfinite(heads) & (heads > 0)
    lost = ~np.all(np.isfinite(pred), axis=-1) & measured[:, None]
    dist = np.where(lost, NEVER_CORRECT, dist)
    return np.where(valid, dist, np.nan)


@dataclass
class PCKhResult:
    """The official MPII PCKh at ``threshold`` (percent) and its curve.

    ``per_joint`` holds all 16 joints (pelvis and thorax included for
    information; they are not part of ``mean``); ``groups`` the table columns;
    ``mean`` the official total; ``mean_at_0_1`` the total at exactly 0.10;
    ``curve_total`` / ``curve_per_joint`` the values at ``thresholds``.
    """

    threshold: float
    per_joint: np.ndarray
    counts: np.ndarray
    groups: dict
    mean: float
    mean_at_0_1: float
    thresholds: np.ndarray = field(repr=False)
    curve_total: np.ndarray = field(repr=False)
    curve_per_joint: np.ndarray = field(repr=False)
    n_people: int = 0

    def table_rows(self) -> list[tuple[str, float]]:
        return [*self.groups.items(), ("Mean", self.mean), ("Mean@0.1", self.mean_at_0_1)]

    def format_table(self, title: str | None = None) -> str:
        rows = self.table_rows()
        label = f"PCKh@{self.threshold:g}"
        head = f"{'':<10}" + "".join(f"{name:>10}" for name, _ in rows)
        line = f"{label:<10}" + "".join(f"{value:>10.2f}" if np.isfinite(value) else
                                        f"{'n/a':>10}" for _, value in rows)
        out = [head, line]
        if title:
            out.insert(0, title)
        return "\n".join(out)

    def as_json(self) -> dict:
        """The ``evaluate-mpii`` JSON: pckh (groups), mean, mean_at_0.1, per_joint (null for
        pelvis and thorax), all in percent, plus counts, the curve and the conventions."""
        per_joint = {
            name: (None if j in PCKH_EXCLUDED else _num(self.per_joint[j]))
            for j, name in enumerate(skeleton.SHORT_NAMES)
        }
        return {
            "pckh": {k: _num(v) for k, v in self.groups.items()},
            "mean": _num(self.mean),
            "mean_at_0.1": _num(self.mean_at_0_1),
            "per_joint": per_joint,
            "threshold": self.threshold,
            "n_people": self.n_people,
            "counts": {n: int(c) for n, c in zip(skeleton.SHORT_NAMES, self.counts)},
            "curve": {"thresholds": [float(t) for t in self.thresholds],
                      "mean": [_num(v) for v in self.curve_total]},
            "convention": ("official MPII toolkit: head size = 0.6 x head-box diagonal; "
                           "correct iff dist <= threshold x head size; missing joints "
                           "excluded; Mean pooled over the 14 joints without pelvis and "
                           "thorax; Head = mean(upper neck, head top); Mean@0.1 at 0.10"),
        }


def pckh_curve(pred, gt, headboxes, valid=None, thresholds=PCKH_CURVE_THRESHOLDS):
    """Per-joint and total PCKh at each threshold: ([T, 16], [T]) in percent.

    The total pools all counted joints except pelvis and thorax.
    """
    dist = pckh_distances(pred, gt, headboxes, valid)
    counted = np.isfinite(dist)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    correct = dist[None] <= thresholds[:, None, None]  # [T, N, J]; NaN compares False
    per_joint = _percent(correct, counted[None], axis=1)  # [T, J]
    keep = np.ones(dist.shape[1], bool)
    keep[list(PCKH_EXCLUDED)] = False
    total = _percent(correct[..., keep], counted[None][..., keep], axis=(1, 2))  # [T]
    return per_joint, total


def pckh(pred, gt, headboxes, valid=None, threshold: float = PCKH_THRESHOLD) -> PCKhResult:
    """The official MPII PCKh (see the module docstring) for 16-joint MPII poses.

    ``pred``, ``gt`` [N, 16, 2] in the same pixels as the head boxes [N, 2, 2];
    ``valid`` [N, 16] marks annotated joints (default: finite ground truth).
    """
    pred, gt, valid = _check(pred, gt, valid)
    if gt.shape[1] != skeleton.NUM_JOINTS:
        raise ValueError(f"PCKh needs the {skeleton.NUM_JOINTS} MPII joints, got {gt.shape[1]}")
    thresholds = np.unique(np.r_[PCKH_CURVE_THRESHOLDS, threshold, 0.1])
    per_t, total_t = pckh_curve(pred, gt, headboxes, valid, thresholds)
    at = {round(float(t), 10): i for i, t in enumerate(thresholds)}
    i_thr, i_01 = at[round(float(threshold), 10)], at[0.1]
    per_joint = per_t[i_thr]
    groups = {name: float(np.mean(per_joint[list(ids)])) for name, ids in PCKH_GROUPS.items()}
    curve_idx = [at[round(float(t), 10)] for t in PCKH_CURVE_THRESHOLDS]
    return PCKhResult(
        threshold=float(threshold), per_joint=per_joint, counts=valid.sum(axis=0),
        groups=groups, mean=float(total_t[i_thr]), mean_at_0_1=float(total_t[i_01]),
        thresholds=PCKH_CURVE_THRESHOLDS.copy(), curve_total=total_t[curve_idx],
        curve_per_joint=per_t[curve_idx], n_people=int(gt.shape[0]),
    )


# --------------------------------------------------------------------------- PCP


@dataclass
class PCPResult:
    """Strict PCP per limb and per group (percent) and the total over all counted limbs."""

    per_limb: dict
    groups: dict
    total: float
    counts: dict


def pcp(pred, gt, valid=None, limbs=None, fraction: float = 0.5) -> PCPResult:
    """Strict PCP: % of limbs whose two predicted endpoints are *both* within
    ``fraction`` (50%) of the true limb length of their true endpoints.

    ``limbs`` maps a name to a (joint, joint) pair (default :data:`PCP_LIMBS`:
    lower/upper legs, forearms, upper arms, torso = pelvis-thorax, head = upper
    neck-head top).  A limb counts only when both endpoints are annotated.  (The
    "loose" PCP variant compares the *mean* of the two endpoint errors instead.)
    """
    pred, gt, valid = _check(pred, gt, valid)
    limbs = PCP_LIMBS if limbs is None else limbs
    dist = np.linalg.norm(pred - gt, axis=-1)
    per_limb, counts, hits_all, n_all = {}, {}, {}, {}
    for name, (a, b) in limbs.items():
        length = np.linalg.norm(gt[:, a] - gt[:, b], axis=-1)
        ok = valid[:, a] & valid[:, b]
        correct = (dist[:, a] <= fraction * length) & (dist[:, b] <= fraction * length)
        per_limb[name] = float(_percent(correct, ok))
        counts[name] = int(ok.sum())
        hits_all[name], n_all[name] = int((correct & ok).sum()), int(ok.sum())
    groups = {}
    for g, names in PCP_GROUPS.items():
        names = [n for n in names if n in per_limb]
        if names:
            groups[g] = float(np.nanmean([per_limb[n] for n in names]))
    n = sum(n_all.values())
    total = 100.0 * sum(hits_all.values()) / n if n else math.nan
    return PCPResult(per_limb=per_limb, groups=groups, total=total, counts=counts)


# --------------------------------------------------------------------------- illustration


def draw_tolerances(ax, pred, gt, tolerance, valid=None, title=""):
    """Draw one person's ground truth, prediction and per-joint tolerance circles.

    ``pred``, ``gt`` [16, 2]; ``tolerance`` a radius in pixels (scalar or [16]).
    Correct joints (distance <= tolerance) are green, wrong ones red; returns the
    boolean ``correct`` array (False for joints that are not ``valid``).
    """
    import matplotlib.patches as patches

    pred, gt = np.asarray(pred, float), np.asarray(gt, float)
    valid = np.ones(len(gt), bool) if valid is None else np.asarray(valid, bool)
    tol = np.broadcast_to(np.asarray(tolerance, float), (len(gt),))
    correct = (np.linalg.norm(pred - gt, axis=-1) <= tol) & valid
    for j in np.flatnonzero(valid):
        colour = "tab:green" if correct[j] else "tab:red"
        ax.add_patch(patches.Circle(gt[j], tol[j], fill=False, color=colour, lw=0.8, alpha=0.7))
        ax.plot(*np.c_[gt[j], pred[j]], "-", color=colour, lw=1)
    ax.plot(*gt[valid].T, "o", color="k", ms=3, label="truth")
    ax.plot(*pred[valid].T, "x", color="tab:blue", ms=4, label="prediction")
    ax.set_title(title)
    ax.set_aspect("equal")
    return correct
