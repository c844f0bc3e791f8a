"""Plotting helpers: saving figures into ``figures/`` and drawing skeletons.

Every notebook figure goes through :func:`save_figure`, so the repository's
``figures/`` folder always holds the latest rendering of each one.  Set
``CPM_NB_FIGURES`` to send them elsewhere (the test-suite does); outside a checkout
they go to the cache (:mod:`cpm_nb.paths`), never into the working directory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpm_nb import paths, skeleton

FIGURES_ENV = paths.FIGURES_ENV


def repo_root(start: Path | None = None) -> Path | None:
    """The cpm-nb checkout the package is installed from (:func:`cpm_nb.paths.checkout_root`),
    or None.  With ``start``: the enclosing cpm-nb checkout of that folder, if any."""
    if start is None:
        return paths.checkout_root()
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return None


def figures_dir() -> Path:
    """``$CPM_NB_FIGURES``, else ``figures/`` of the package's checkout, else the cache's
    ``figures/`` (:func:`cpm_nb.paths.figures_root`); created when missing."""
    folder = paths.figures_root()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_figure(fig, name: str, dpi: int = 100) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` and return the path."""
    path = figures_dir() / f"{name}.png"
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
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
