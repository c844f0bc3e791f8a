"""Plotting helpers: saving figures into ``figures/``, drawing skeletons, predictions and
belief maps, and learning curves.

Every notebook figure goes through :func:`save_figure`, so the repository's
``figures/`` folder always holds the latest rendering of each one.  Set
``CPM_NB_FIGURES`` to send them elsewhere (the test-suite does); outside a checkout
they go to the cache (:mod:`cpm_nb.core.paths`), never into the working directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cpm_nb.core import files, paths, skeleton

FIGURES_ENV = paths.FIGURES_ENV


def figures_dir() -> Path:
    """``$CPM_NB_FIGURES``, else the checkout's untracked ``build/figures/``, else the cache's
    ``figures/`` (:func:`cpm_nb.core.paths.figures_root`); created when missing."""
    folder = paths.figures_root()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_figure(fig, name: str, dpi: int = 100) -> Path:
    """Save ``fig`` as ``<figures_dir()>/<name>.png`` (atomically: a notebook interrupted
    while saving leaves the previous figure) and return the path."""
    path = figures_dir() / f"{name}.png"
    with files.atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    return path


def draw_skeleton(ax, joints, present=None, linewidth=2.0, markersize=4.0, alpha=1.0):
    """Draw a 16-joint MPII skeleton on ``ax``.

    ``joints`` is (16, 2) in image pixels (x, y); ``present`` (16 bool) hides
    joints and limbs that are missing.
    """
    joints = np.asarray(joints, dtype=float)
    present = np.ones(len(joints), bool) if present is None else np.asarray(present, bool)
    for a, b in skeleton.LIMBS:
        if present[a] and present[b]:
            ax.plot(*joints[[a, b]].T, "-", color=skeleton.JOINT_COLORS[b], lw=linewidth,
                    alpha=alpha)
    for j, (x, y) in enumerate(joints):
        if present[j]:
            ax.plot(x, y, "o", color=skeleton.JOINT_COLORS[j], ms=markersize, alpha=alpha,
                    markeredgecolor="k", markeredgewidth=0.5)
    return ax


def show_crop(ax, crop, joints, visibility, title: str | None = None):
    """Show a crop with its joints (0-based pixel centres: the image spans -0.5 .. S-0.5);
    occluded joints get a black cross."""
    crop = np.asarray(crop)
    size = crop.shape[0]
    vis = np.asarray(visibility)
    ax.imshow(crop, extent=(-0.5, size - 0.5, size - 0.5, -0.5))
    draw_skeleton(ax, joints, vis > 0, linewidth=1.5, markersize=3)
    hidden = vis == 1
    ax.plot(np.asarray(joints)[hidden, 0], np.asarray(joints)[hidden, 1], "kx", ms=5, mew=1.5)
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    ax.set_xlabel("x (crop px)")
    ax.set_ylabel("y (crop px)")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def plot_history(history: dict, axes, title: str = "") -> None:
    """Learning curves on two axes: the loss of every stage (log scale) and the validation
    PCKh@0.5 of every stage."""
    steps = np.asarray(history["step"])
    losses = np.asarray(history["stage_loss"])
    ax = axes[0]
    for s in range(losses.shape[1] if losses.ndim == 2 else 0):
        ax.plot(steps, losses[:, s], label=f"stage {s + 1}", lw=1.2)
    ax.set(yscale="log", xlabel="training step",
           ylabel="loss per image (½ Σ squared error)", title=f"Training loss per stage{title}")
    if losses.ndim == 2:
        ax.legend(fontsize=8)
    ax = axes[1]
    if history["val_step"]:
        per = np.asarray([[np.nan if v is None else v for v in row]
                          for row in history["val_per_stage"]])
        for s in range(per.shape[1]):
            ax.plot(history["val_step"], per[:, s], "o-", ms=3, lw=1, label=f"stage {s + 1}")
        ax.legend(fontsize=8)
    ax.set(xlabel="training step", ylabel="PCKh@0.5 (%)", ylim=(0, 100),
           xlim=(0, max(steps[-1], 1) * 1.03), title=f"Validation PCKh@0.5{title}")


# --- predictions (cpm_nb.inference.predict) ------------------------------------------------------------


def _crop_square(pred) -> np.ndarray:
    """The corners ``[4, 2]`` of the square the network saw, in original 1-based pixels."""
    from cpm_nb.model.heatmaps import to_original

    s = pred.crop.shape[0]
    corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [s - 0.5, s - 0.5], [-0.5, s - 0.5]])
    return to_original(corners, pred.crop_matrix)


def draw_prediction(ax, pred, image=None, min_confidence: float = 0.0,
                    show_crop: bool = True, title: str | None = None):
    """A :class:`cpm_nb.inference.predict.Prediction`: the skeleton on the original image
    (matplotlib), with the square the model saw."""
    image = pred.image if image is None else image
    if image is not None:
        ax.imshow(image)
    joints0 = pred.joints - 1.0  # 1-based -> imshow's 0-based pixel centres
    if show_crop:
        square = _crop_square(pred) - 1.0
        ax.plot(*np.vstack([square, square[:1]]).T, "--", color="w", lw=1, alpha=0.8)
    draw_skeleton(ax, joints0, pred.confidence >= min_confidence)
    w, h = pred.image_size  # the image, widened to joints predicted outside it
    shown = joints0[pred.confidence >= min_confidence]
    lo = np.minimum([-0.5, -0.5], shown.min(0, initial=np.inf) - 8)
    hi = np.maximum([w - 0.5, h - 0.5], shown.max(0, initial=-np.inf) + 8)
    ax.set(title=title if title is not None else Path(pred.name).name,
           xlabel="x (px)", ylabel="y (px)", xlim=(lo[0], hi[0]), ylim=(hi[1], lo[1]))
    return ax


def overlay(image: np.ndarray, pred, min_confidence: float = 0.0):
    """A PIL image: the skeleton of ``pred`` (a :class:`cpm_nb.inference.predict.Prediction`) drawn
    on ``image`` at its own resolution (for PNG output)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.asarray(image)).convert("RGB")
    draw = ImageDraw.Draw(im)
    w, h = im.size
    lw = max(2, round(min(w, h) / 150))
    pts = pred.joints - 0.5  # 1-based centres -> PIL (pixel (0, 0) spans 0..1)
    ok = pred.confidence >= min_confidence
    square = _crop_square(pred) - 0.5
    draw.polygon([tuple(p) for p in square], outline=(255, 255, 255))
    for a, b in skeleton.LIMBS:
        if ok[a] and ok[b]:
            draw.line([tuple(pts[a]), tuple(pts[b])], fill=skeleton.JOINT_COLORS[b], width=lw)
    r = lw * 1.5
    for j in np.flatnonzero(ok):
        x, y = pts[j]
        draw.ellipse([x - r, y - r, x + r, y + r], fill=skeleton.JOINT_COLORS[j],
                     outline=(0, 0, 0))
    return im


def maps_overlay(crop: np.ndarray, maps: np.ndarray, joints: Sequence[int],
                 colors: Sequence, gamma: float = 1.0) -> np.ndarray:
    """The crop (dimmed) with the belief maps of ``joints``, each scaled to its maximum,
    upsampled to the crop (:func:`cpm_nb.model.heatmaps.upsample`) and laid over it in
    ``colors`` (the source article's figure: head yellow, left knee red, right ankle blue).
    Returns float RGB ``[S, S, 3]`` in 0..1."""
    from matplotlib.colors import to_rgb

    from cpm_nb.model.heatmaps import upsample

    s = crop.shape[0]
    out = crop.astype(np.float64) / 255.0 * 0.45
    for j, c in zip(joints, colors):
        m = np.clip(maps[..., j], 0, None)
        m = m / max(m.max(), 1e-6)
        alpha = np.clip(upsample(m, s) ** gamma, 0, 1)[..., None]
        out = out * (1 - alpha) + alpha * np.asarray(to_rgb(c))[None, None]
    return np.clip(out, 0, 1)


def fit_to_crop(ax, size: int) -> None:
    """Show exactly a ``size``-px square crop, without ticks: joints outside it must not
    stretch the axes."""
    ax.set(xlim=(-0.5, size - 0.5), ylim=(size - 0.5, -0.5), xticks=[], yticks=[])


def draw_people(ax, image, people, boxes: bool = True, title: str | None = None):
    """Show ``image`` with the skeleton, head box (white) and objpos (+) of each of
    ``people`` (:class:`cpm_nb.data.mpii.Person` records).

    Occluded joints get a black cross.  Coordinates are drawn in the file's 1-based
    pixels, so the image spans 0.5 .. W + 0.5.
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    ax.imshow(img, extent=(0.5, w + 0.5, h + 0.5, 0.5))
    for p in people:
        draw_skeleton(ax, p.joints, ~p.missing, linewidth=1.5, markersize=3)
        hidden = p.visibility == 1
        ax.plot(p.joints[hidden, 0], p.joints[hidden, 1], "kx", ms=5, mew=1.5)
        if boxes and p.head_box is not None:
            x1, y1, x2, y2 = p.head_box
            ax.plot([x1, x2, x2, x1, x1], [y1, y1, y2, y2, y1], "w-", lw=1)
        ax.plot(*p.objpos, "w+", ms=10, mew=2)
    ax.set_xlim(0.5, w + 0.5)
    ax.set_ylim(h + 0.5, 0.5)
    ax.set_xlabel("x (px, 1-based)")
    ax.set_ylabel("y (px, 1-based)")
    if title:
        ax.set_title(title)
    return ax
