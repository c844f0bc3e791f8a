"""The ablations' forest plot: the rows, means and intervals it draws come from the paired
table's final-stage rows."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from cpm_nb.course import forest  # noqa: E402


def paired(variant, stage, base, measure, mean, low=None, high=None, seeds=(0, 1, 2)):
    return {"variant": variant, "stage": stage, "baseline_stages": base, "measure": measure,
            "seeds": list(seeds), "difference": {"mean": mean, "low": low, "high": high}}


RESULT = {
    "variants": {"a": {"stages": 1, "label": "1 stage, wide"},
                 "c": {"stages": 2, "label": "last loss only"}},
    "paired": [paired("a", 1, 2, m, -1.0, -2.0, 0.5) for m in forest.MEASURES]
    + [paired("c", 1, 2, m, -80.0, -85.0, -75.0) for m in forest.MEASURES]  # not the last stage
    + [paired("c", 2, 2, m, 1.5, seeds=(0,)) for m in forest.MEASURES],
}


def test_only_each_variants_last_stage_is_drawn():
    labels, means, bounds = forest.forest_data(RESULT, "pckh")
    assert labels == ["(a) 1 stage, wide\n  minus the 2-stage network",
                      "(c) last loss only\n  minus the 2-stage network"]
    np.testing.assert_array_equal(means, [-1.0, 1.5])
    np.testing.assert_array_equal(bounds[0], [-2.0, 0.5])
    assert np.isnan(bounds[1]).all()  # one seed: no interval


def test_the_plot_has_a_panel_per_measure_and_a_row_per_comparison():
    fig = forest.plot_forest(RESULT)
    axes = fig.axes
    assert len(axes) == len(forest.MEASURES)
    assert [t.get_text() for t in axes[0].get_yticklabels()] == forest.forest_data(
        RESULT, "pckh")[0]
    assert all(ax.get_title() and ax.get_xlabel() for ax in axes) and fig.get_suptitle()
