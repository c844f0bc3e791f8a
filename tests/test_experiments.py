"""cpm_nb.training.experiments: the stage experiment, its budget, its command and its committed result."""

import dataclasses
import json

import pytest

from cpm_nb.cli import app as cli
from cpm_nb.model import architecture
from cpm_nb.training import experiments


def test_equal_compute_and_the_papers_field_proportions():
    exp = experiments.EXPERIMENTS["cpu"]
    budget = exp.reference_steps * exp.flops(exp.reference_stages)
    for stages in exp.stage_counts:
        assert exp.steps(stages) * exp.flops(stages) == pytest.approx(budget, rel=0.03)
    ratios = architecture.describe(exp.config(6))["receptive_field_over_crop"]
    assert 0.35 <= ratios[0] <= 0.5  # the paper: 160 / 368 = 0.43
    assert ratios[1] - ratios[0] == pytest.approx(240 / 368, abs=0.05)  # each stage adds 0.65
    assert len(exp.seeds) >= 3 and exp.stage_counts == (1, 2, 3, 4, 6)


def pinned_as_committed(exp) -> dict:
    """The experiment's fields that the committed results record (the training settings it
    pins came later: that the runs used them is checked by their names, i.e. their keys)."""
    code = json.loads(json.dumps(exp.as_json()))
    return {k: v for k, v in code.items() if k not in ("training", "decay_at")}


def test_the_committed_result_matches_the_code(repo):
    """cpm_nb/results/stage_experiment.json was made by `cpm-nb experiment stages` with exactly the
    configuration the code has now (else notebook 05 shows a result of another experiment)."""
    result = json.loads((repo / experiments.RESULTS_FILE).read_text())
    exp = experiments.EXPERIMENTS["cpu"]
    assert result["experiment"] == pinned_as_committed(exp)
    assert result["model"] == json.loads(json.dumps(exp.config(6).to_dict()))
    runs = {(r["stages"], r["seed"]) for r in result["runs"]}
    assert runs == {(n, s) for n in exp.stage_counts for s in exp.seeds}
    for r in result["runs"]:
        assert r["steps"] == exp.steps(r["stages"]) and len(r["per_stage"]) == r["stages"]
        assert r["run"] == exp.train_config(r["stages"], r["seed"]).run_name
    assert result["summary"] == json.loads(json.dumps(experiments.summarize_runs(result["runs"])))
    assert result["provenance"]["command"].startswith("cpm-nb --profile cpu experiment stages")
    for r in result["runs"]:  # every run's learning curve, ending at its final score
        curve = result["learning_curves"][f"{r['stages']}/{r['seed']}"]
        assert curve["val_step"][-1] == r["steps"] and curve["step"][-1] == r["steps"]
        assert curve["val_pckh"][-1] == pytest.approx(r["pckh"], abs=1.0)


@pytest.mark.parametrize("name", experiments.SCALED_RESULTS)
def test_the_committed_longer_budget_results_match_the_code(repo, name):
    """cpm_nb/results/stage_experiment_{2x,4x}*.json: runs at 2 or 4 times the compute,
    validated 8 times each (do the curves still move?), made by the command they name."""
    budget = experiments.SCALED_RESULTS[name]
    result = json.loads((repo / "cpm_nb" / "results" / f"{name}.json").read_text())
    settings = result["experiment"]
    exp = experiments.EXPERIMENTS["cpu"].scaled(budget, settings["stage_counts"], 8)
    exp = dataclasses.replace(exp, seeds=tuple(settings["seeds"]))
    assert settings == pinned_as_committed(exp)
    assert exp.reference_steps == budget * experiments.EXPERIMENTS["cpu"].reference_steps
    assert {(r["stages"], r["seed"]) for r in result["runs"]} == {
        (n, s) for n in exp.stage_counts for s in exp.seeds}
    for r in result["runs"]:
        assert r["steps"] == exp.steps(r["stages"])
        assert r["steps"] == pytest.approx(budget * experiments.EXPERIMENTS["cpu"].steps(
            r["stages"]), abs=50)
        assert r["run"] == exp.train_config(r["stages"], r["seed"]).run_name
        assert len(result["learning_curves"][f"{r['stages']}/{r['seed']}"]["val_step"]) >= 8
    assert result["summary"] == json.loads(json.dumps(experiments.summarize_runs(result["runs"])))
    command = result["provenance"]["command"]
    assert f"--budget {budget} " in command and "--validations 8 " in command
    assert command.endswith(f"--json-out cpm_nb/results/{name}.json")


def test_a_scaled_experiment_and_its_options(tmp_path, capsys):
    exp = experiments.EXPERIMENTS["cpu"]
    double = exp.scaled(2, (6, 2), 8)
    assert double.steps(6) == 4000 and double.steps(2) == 2 * exp.steps(2)
    assert double.train_config(6, 0).eval_every == 500
    assert exp.scaled().train_config(2, 0).run_name == exp.train_config(2, 0).run_name
    assert exp.doubled().train_config(6, 0).run_name == double.train_config(6, 0).run_name
    for bad in (["--stages", "0,2"], ["--stages", "2,2"], ["--stages", "two"],
                ["--budget", "0"], ["--budget", "nan"], ["--validations", "0"]):
        assert cli.main(["--profile", "fast", "experiment", "stages", *bad]) == 2
        err = capsys.readouterr().err
        assert bad[0] in err and "Traceback" not in err


def test_the_plan_of_a_run_trains_nothing(tmp_path, capsys):
    """--estimate lists every run with its steps and expected time, from the committed runs'
    seconds per FLOP x step, and trains nothing (it once trained, as an unknown option)."""
    exp = experiments.EXPERIMENTS["cpu"].scaled(8, (6, 2), 8)
    rows = experiments.plan(exp, cache_dir=tmp_path)
    assert [(r["stages"], r["seed"]) for r in rows] == [(6, 0), (2, 0), (6, 1), (2, 1),
                                                        (6, 2), (2, 2)]
    assert all(r["source"] == "train" and r["steps"] == exp.steps(r["stages"]) for r in rows)
    committed = experiments.load_committed("stage_experiment_2x_2v6")["runs"]
    two = next(r for r in committed if r["stages"] == 2 and r["seed"] == 0)
    ratio = rows[1]["seconds"] / two["train_s"]  # 8x against a 2x run: about 4x the time
    assert 2 < ratio < 8
    assert cli.main(["--profile", "cpu", "experiment", "stages", "--budget", "8", "--stages",
                     "6,2", "--estimate", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "6 run(s) to train" in out and " h on this machine" in out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, given, flags", [
    ("stages", ["--which", "c"], "--which"),
    ("stages", ["--train-missing-baselines"], "--train-missing-baselines"),
    ("ablations", ["--equal", "steps", "--stages", "2"], "--equal, --stages"),
    ("ablations", ["--validations", "8"], "--validations"),
])
def test_an_option_of_the_other_experiment_is_refused(name, given, flags, tmp_path, capsys):
    assert cli.main(["--profile", "cpu", "experiment", name, "--cache-dir", str(tmp_path),
                     *given]) == 2
    err = capsys.readouterr().err
    assert f"{flags}: only for" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_the_command_runs_the_smoke_experiment(tmp_path, capsys):
    out = tmp_path / "stages.json"
    code = cli.main(["--profile", "fast", "experiment", "stages", "--no-progress",
                     "--cache-dir", str(tmp_path / "runs"), "--json-out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert [r["stages"] for r in result["runs"]] == [1, 2]
    assert set(result["summary"]) == {"1", "2"}
    printed = capsys.readouterr().out
    assert "PCKh@0.5" in printed and "±" not in printed  # one seed: no spread is shown
    assert cli.main(["--profile", "fast", "experiment", "stages", "--seeds", "5"]) == 2
    # a subset at another budget: other runs, and the command in the provenance
    code = cli.main(["--profile", "fast", "experiment", "stages", "--no-progress", "--stages",
                     "2", "--budget", "0.5", "--validations", "1", "--cache-dir",
                     str(tmp_path / "runs"), "--json-out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert [(r["stages"], r["steps"]) for r in result["runs"]] == [(2, 50)]
    # more validations than a 50-step run has room for: refused, not silently fewer
    assert cli.main(["--profile", "fast", "experiment", "stages", "--stages", "2", "--budget",
                     "0.5", "--validations", "2"]) == 2
    assert result["provenance"]["command"] == (
        "cpm-nb --profile fast experiment stages --stages 2 --budget 0.5 --validations 1 "
        f"--json-out {out}")


@pytest.mark.parametrize("content", ["[1, 2]", "null", '{"val_step": 5}',
                                     '{"val_step": [50], "val_pckh": ["x"]}',
                                     '{"step": [50, 100], "loss": [1.0]}'])
def test_a_history_that_is_not_one_names_its_file(tmp_path, content):
    from cpm_nb.core.errors import DataError

    (tmp_path / "history.json").write_text(content)
    with pytest.raises(DataError, match=r"history\.json: not a training history.*delete"):
        experiments.learning_curve(tmp_path)


def test_a_history_reads_as_a_learning_curve(tmp_path):
    (tmp_path / "history.json").write_text(
        '{"val_step": [50], "val_pckh": [3.5], "step": [50], "loss": [1.23456], "lr": [1]}')
    assert experiments.learning_curve(tmp_path) == {
        "val_step": [50], "val_pckh": [3.5], "step": [50], "loss": [1.2346]}


@pytest.mark.parametrize("content", ["{}", "[1]", '{"experiment": {}, "summary": {}, "runs": [1]}'])
def test_report_refuses_a_file_that_is_not_a_result(tmp_path, capsys, content):
    path = tmp_path / "r.json"
    path.write_text(content)
    for report in ("side-by-side", "paired"):
        assert cli.main(["experiment", "stages", "--report", report, "--results", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"{path}: not a stage-experiment result" in err and "Traceback" not in err


def test_every_committed_result_reads_as_one(repo):
    for name in ("stage_experiment", *experiments.SCALED_RESULTS):
        path = repo / "cpm_nb" / "results" / f"{name}.json"
        assert experiments.check_result(experiments.load_committed(name), path)["runs"]


def test_the_committed_equal_steps_result_matches_the_code(repo):
    """cpm_nb/results/stage_experiment_equal_steps.json: 2 and 6 stages at the 6-stage run's
    steps (the paper's comparison); its 6-stage runs are the equal-compute result's runs (one
    configuration, one run name), retrained here and equal to them."""
    result = json.loads((repo / "cpm_nb" / "results" / "stage_experiment_equal_steps.json")
                        .read_text())
    exp = dataclasses.replace(experiments.EXPERIMENTS["cpu"].scaled(1, (6, 2)), equal="steps")
    assert result["experiment"]["equal"] == "steps"
    assert result["experiment"]["stage_counts"] == [6, 2]
    compute = {(r["stages"], r["seed"]): r for r in experiments.load_committed()["runs"]}
    for r in result["runs"]:
        assert r["steps"] == exp.reference_steps
        assert r["run"] == exp.train_config(r["stages"], r["seed"]).run_name
        if r["stages"] == 6:
            same = compute[(6, r["seed"])]
            assert r["run"] == same["run"] and r["pckh"] == pytest.approx(same["pckh"], abs=0.05)
        else:
            assert r["steps"] < compute[(2, r["seed"])]["steps"]
    assert result["summary"] == json.loads(json.dumps(experiments.summarize_runs(result["runs"])))
    assert "--equal steps" in result["provenance"]["command"]
