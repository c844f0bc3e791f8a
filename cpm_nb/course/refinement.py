"""Beliefs refining over the stages: find joints that later stages fix, and show how.

CPM's claim is that stage t corrects stage t - 1 with more context.
:func:`refined_joints` finds the joints where that happened, by measurement: wrong
after stage 1 (more than half a head size off) and right after the last stage.
:func:`plot_refinement` follows one of them through the stages: its belief map at
every stage over the crop, the peak cell's receptive field drawn as a square, and the
ground truth.
"""

from __future__ import annotations

import numpy as np

from cpm_nb.core import skeleton
from cpm_nb.course.viz import fit_to_crop
from cpm_nb.evaluation import metrics
from cpm_nb.model import heatmaps


def refined_joints(vp, k: int = 3, threshold: float = 0.5) -> list[tuple[int, int, float, float]]:
    """The ``k`` (person, joint, stage-1 error, last-stage error) with the largest
    improvement among joints wrong after stage 1 and right after the last stage (errors
    in head sizes, PCKh's unit); at most one joint per person."""
    first = metrics.pckh_distances(vp.pred[0], vp.gt, vp.headboxes, vp.valid)
    last = metrics.pckh_distances(vp.pred[-1], vp.gt, vp.headboxes, vp.valid)
    with np.errstate(invalid="ignore"):
        fixed = (first > threshold) & (last <= threshold)
    gain = np.where(fixed, first - last, -np.inf)
    found, seen = [], set()
    for flat in np.argsort(-gain, axis=None):
        i, j = np.unravel_index(flat, gain.shape)
        if not np.isfinite(gain[i, j]) or len(found) == k:
            break
        if i in seen:
            continue
        seen.add(i)
        found.append((int(i), int(j), float(first[i, j]), float(last[i, j])))
    return found


def stage_maps(model, crop: np.ndarray) -> np.ndarray:
    """The belief maps of every stage for one crop, ``[T, M, M, maps]``."""
    outs = model.belief_maps(crop[None].astype(np.float32))
    return np.stack([np.asarray(o)[0] for o in outs])


def peak_cell(belief: np.ndarray) -> tuple[int, int]:
    """(row, column) of the largest value of one ``[M, M]`` map."""
    r, c = np.unravel_index(int(np.argmax(belief)), belief.shape)
    return int(r), int(c)


def plot_refinement(model, vp, person: int, joint: int, fields: list[int], axes=None):
    """Follow ``joint`` of ``person`` through the stages: one panel per stage with the
    crop, the joint's belief map, its peak cell's receptive field (``fields[t]`` px,
    e.g. :func:`cpm_nb.model.architecture.stage_receptive_fields`) and the ground truth."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    crop = vp.images[person]
    maps = stage_maps(model, crop)[..., joint]
    size, m = crop.shape[0], maps.shape[1]
    centres = heatmaps.cell_centres(m)
    if axes is None:
        fig, axes = plt.subplots(1, len(maps), figsize=(3.1 * len(maps), 3.6),
                                 constrained_layout=True)
    fig = np.atleast_1d(axes)[0].figure
    gt = vp.gt_crop[person, joint]
    head = metrics.head_sizes(vp.headboxes[person:person + 1])[0]
    for t, (ax, belief) in enumerate(zip(np.atleast_1d(axes), maps)):
        ax.imshow(crop, extent=(-0.5, size - 0.5, size - 0.5, -0.5))
        lo, hi = 0.0, max(float(belief.max()), 1e-6)
        ax.imshow(np.clip(belief, lo, hi), cmap="magma", alpha=0.55, vmin=lo, vmax=hi,
                  extent=(-0.5, size - 0.5, size - 0.5, -0.5), interpolation="bilinear")
        r, c = peak_cell(belief)
        x, y, f = centres[c], centres[r], fields[t]
        ax.add_patch(Rectangle((x - f / 2, y - f / 2), f, f, fill=False, color="cyan", lw=1.5,
                               ls="--", label="receptive field of the peak cell"))
        ax.plot(*gt, "o", mfc="none", mec="lime", ms=10, mew=2, label="ground truth")
        ax.plot(x, y, "+", color="cyan", ms=10, mew=2, label="peak cell")
        d = metrics.pckh_distances(vp.pred[t][person:person + 1], vp.gt[person:person + 1],
                                   vp.headboxes[person:person + 1])[0, joint]
        fit_to_crop(ax, size)
        ax.set_title(f"stage {t + 1}: field {f} px\nerror {d:.2f} head sizes")
    np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=7, framealpha=0.8)
    fig.suptitle(f"{skeleton.JOINT_NAMES[joint]} of validation person {person}: its belief map "
                 f"after each stage ({size}-px crop; error in head sizes, {head:.0f} px here)")
    return fig
