"""A forest plot of the ablations' paired differences: one panel per measure, one row per
variant and baseline, the mean difference over seeds with its 95 % interval."""

from __future__ import annotations

import numpy as np

MEASURES = {
    "pckh": "all joints",
    "occluded_joints": "occluded joints",
    "with_distractors": "another person in the crop",
    "on_other_person": "joints put on the other person\n(% of those joints; lower is better)",
}


def final_stage_rows(result: dict) -> list[dict]:
    """The paired rows of each variant's last stage (``result``: an ablations JSON)."""
    stages = {name: d["stages"] for name, d in result["variants"].items()}
    return [r for r in result["paired"] if r["stage"] == stages[r["variant"]]]


def row_label(row: dict, result: dict) -> str:
    label = result["variants"][row["variant"]]["label"]
    return f"({row['variant']}) {label}\n  minus the {row['baseline_stages']}-stage network"


def forest_data(result: dict, measure: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels, mean differences and ``(low, high)`` intervals (NaN where one seed gives no
    interval) of ``measure``, in the order of the paired table."""
    rows = [r for r in final_stage_rows(result) if r["measure"] == measure]
    labels = [row_label(r, result) for r in rows]
    means = np.array([r["difference"]["mean"] for r in rows], float)
    bounds = np.array([[r["difference"][k] for k in ("low", "high")] for r in rows],
                      float).reshape(-1, 2)  # None (one seed) becomes NaN
    return labels, means, bounds


def plot_forest(result: dict, measures=tuple(MEASURES), axes=None):
    """One panel per measure; a filled dot with its 95 % interval over the paired seeds, a
    hollow dot where there is one seed (no interval). Returns the figure."""
    import matplotlib.pyplot as plt

    labels = forest_data(result, measures[0])[0]
    if axes is None:
        _, axes = plt.subplots(1, len(measures), sharey=True,
                               figsize=(3.2 * len(measures) + 2.4, 0.55 * len(labels) + 1.6))
    axes = np.atleast_1d(axes)
    y = np.arange(len(labels))[::-1]
    seeds = max((len(r["seeds"]) for r in final_stage_rows(result)), default=0)
    for ax, measure in zip(axes, measures):
        _, means, bounds = forest_data(result, measure)
        has_ci = ~np.isnan(bounds[:, 0])
        err = np.abs(bounds[has_ci].T - means[has_ci])
        ax.errorbar(means[has_ci], y[has_ci], xerr=err, fmt="o", color="C0", capsize=3,
                    label=f"mean over {seeds} seeds, 95 % interval")
        if (~has_ci).any():
            ax.plot(means[~has_ci], y[~has_ci], "o", mfc="none", color="C1",
                    label="one seed, no interval")
        ax.axvline(0.0, color="0.4", lw=0.8)
        ax.set_title(MEASURES[measure], fontsize=9)
        ax.set_xlabel("variant minus baseline (points)" if measure != "on_other_person"
                      else "difference (percentage points)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels, fontsize=8)
    axes[0].legend(fontsize=7, loc="lower left")
    fig = axes[0].figure
    fig.suptitle("Ablations at twice the budget: final stage, paired by seed "
                 "(PCKh@0.5; right of 0 = variant ahead, except the last panel)", fontsize=10)
    fig.tight_layout()
    return fig
