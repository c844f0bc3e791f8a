"""Equal steps beside equal compute: the stage experiment's --equal steps mode, its step
arithmetic, and the equal-step table of the committed curves (cpm_nb.training.equal_steps)."""

import dataclasses
import json

import pytest

from cpm_nb.cli import app as cli
from cpm_nb.core.errors import ConfigError, DataError
from cpm_nb.training import equal_steps, experiments


def test_equal_steps_gives_every_depth_the_reference_steps_and_keeps_the_reference_run():
    compute = experiments.EXPERIMENTS["cpu"]
    steps = dataclasses.replace(compute, equal="steps")
    assert [compute.steps(n) for n in compute.stage_counts] == [2750, 2550, 2400, 2250, 2000]
    assert [steps.steps(n) for n in steps.stage_counts] == [2000] * 5
    # the reference (6-stage) run is the same run in both modes, the others are not
    assert steps.train_config(6, 1).run_name == compute.train_config(6, 1).run_name
    for n in (1, 2, 3, 4):
        assert steps.train_config(n, 0).run_name != compute.train_config(n, 0).run_name
        cfg = steps.train_config(n, 0)
        assert cfg.steps == 2000 and cfg.lr_decay_steps == 1600  # decay_at 0.8 of its steps
    double = dataclasses.replace(compute.doubled(), equal="steps")
    assert double.steps(2) == 4000 and double.train_config(2, 0).eval_every == 500
    # the 1-stage net trains 2750 / 2000 = 1.375x the 6-stage net's steps at equal compute
    assert compute.steps(1) / compute.steps(6) == 1.375
    # results written before the mode existed say nothing of it: the default is left out
    assert "equal" not in compute.as_json() and steps.as_json()["equal"] == "steps"
    with pytest.raises(ConfigError, match="equal must be one of"):
        dataclasses.replace(compute, equal="time")


def _result(runs, decay_at=0.8):
    """A result in the committed form: runs of (stages, seed, steps) with curves."""
    return {"experiment": {"decay_at": decay_at},
            "runs": [{"stages": a, "seed": s, "steps": n} for a, s, n, _ in runs],
            "learning_curves": {f"{a}/{s}": {"val_step": list(c), "val_pckh": list(c.values())}
                                for a, s, _, c in runs}}


def test_curve_points_keep_the_full_learning_rate_and_check_shared_trajectories():
    one = _result([(2, 0, 1000, {400: 50.0, 800: 60.0, 1000: 70.0}),
                   (6, 0, 500, {200: 40.0, 400: 45.0, 500: 48.0})])
    longer = _result([(6, 0, 2000, {400: 45.0, 800: 58.0, 1600: 66.0, 2000: 70.0})])
    points = equal_steps.curve_points({"x": one, "y": longer})
    # 2 stages decay at 800, the short 6-stage run at 400 (so 500 is dropped), the long one at
    # 1600: its points extend the 6-stage curve of seed 0
    assert points[(2, 0)] == {400: 50.0, 800: 60.0}
    assert points[(6, 0)] == {200: 40.0, 400: 45.0, 800: 58.0, 1600: 66.0}
    rows = equal_steps.equal_step_table(points)
    assert [(r["a"], r["b"], r["step"]) for r in rows] == [(6, 2, 400), (6, 2, 800)]
    assert rows[0]["difference"]["differences"] == [-5.0]
    assert "one seed" in rows[0]["verdict"]
    clash = _result([(6, 0, 2000, {400: 44.0})])
    with pytest.raises(DataError, match="do not share a trajectory"):
        equal_steps.curve_points({"x": one, "z": clash})


def test_the_committed_equal_step_table_recomputes_from_the_committed_curves(repo):
    committed = json.loads((repo / equal_steps.RESULTS_FILE).read_text())
    assert committed == json.loads(json.dumps(equal_steps.equal_step_report()))
    rows = {(r["a"], r["b"], r["step"]): r for r in committed["rows"]}
    at_3000 = rows[(6, 2, 3000)]  # 6 minus 2 stages, seeds 0, 1, 2, both at the full rate
    assert at_3000["seeds"] == [0, 1, 2]
    assert at_3000["difference"]["differences"] == pytest.approx([-0.66, -2.86, -2.81],
                                                                 abs=0.01)
    assert not at_3000["difference"]["detectable"]
    assert at_3000["verdict"].startswith("no detectable difference (3 seeds")
    assert rows[(6, 2, 2500)]["difference"]["differences"] == pytest.approx([-0.43], abs=0.01)
    assert rows[(6, 2, 5000)]["difference"]["differences"] == pytest.approx([-0.18], abs=0.01)


def test_the_reports_through_the_command(tmp_path, capsys):
    out = tmp_path / "eq.json"
    assert cli.main(["experiment", "stages", "--report", "equal-steps", "--json-out",
                     str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6-2     3000    -0.7    -2.9    -2.8  -2.1 [-5.2, +1.0]" in printed
    assert json.loads(out.read_text())["rows"]
    compute = json.loads(json.dumps(experiments.load_committed("stage_experiment_2x_2v6")))
    steps = json.loads(json.dumps(compute))
    steps["experiment"]["equal"] = "steps"
    for f, r in (("c.json", compute), ("s.json", steps)):
        (tmp_path / f).write_text(json.dumps(r))
    assert cli.main(["experiment", "stages", "--report", "side-by-side", "--results",
                     str(tmp_path / "c.json"), str(tmp_path / "s.json")]) == 0
    table = capsys.readouterr().out
    assert "equal compute: steps" in table and "equal steps: steps" in table
    assert "88.0 ± 0.5" in table  # 2 stages at twice the compute
    assert cli.main(["experiment", "stages", "--report", "side-by-side"]) == 2
    assert "--results" in capsys.readouterr().err


def test_paired_stage_differences_of_the_committed_result(capsys):
    from scipy import stats

    result = experiments.load_committed("stage_experiment")
    rows = {(r["stages"], r["measure"]): r for r in experiments.paired_stages(result)}
    four = rows[(4, "pckh")]  # README: 2 vs 4 stages is not significant over 3 seeds
    runs = {(r["stages"], r["seed"]): r["pckh"] for r in result["runs"]}
    ref = stats.ttest_rel([runs[(4, s)] for s in (0, 1, 2)], [runs[(2, s)] for s in (0, 1, 2)])
    assert four["difference"]["p"] == pytest.approx(ref.pvalue) and 0.2 < ref.pvalue < 0.25
    assert four["difference"]["mean"] == pytest.approx(-2.1, abs=0.05)
    assert four["verdict"].startswith("no detectable difference (3 seeds")
    assert rows[(6, "pckh")]["verdict"].startswith("2 stages ahead by 5.3")
    assert rows[(1, "pckh")]["reference_joints"] == 12448
    assert cli.main(["experiment", "stages", "--report", "paired", "--results",
                     str(experiments.paths.results_path("stage_experiment_2x_2v6"))]) == 0
    assert "2 stages ahead by 3.5 (3 seeds, p = 0.012)" in capsys.readouterr().out


def test_the_equal_steps_mode_through_the_command(tmp_path):
    fast = experiments.EXPERIMENTS["fast"]  # (its steps round to 100 in both modes)
    out = tmp_path / "steps.json"
    assert cli.main(["--profile", "fast", "experiment", "stages", "--equal", "steps",
                     "--stages", "1", "--no-progress", "--cache-dir", str(tmp_path / "runs"),
                     "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["experiment"]["equal"] == "steps"
    assert [(r["stages"], r["steps"]) for r in result["runs"]] == [(1, fast.reference_steps)]
    assert "--equal steps" in result["provenance"]["command"]
