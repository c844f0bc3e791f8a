"""cpm_nb.experiments: the stage experiment, its budget, its command and its committed result."""

import dataclasses
import json

import pytest

from cpm_nb import architecture, cli, experiments


def test_equal_compute_and_the_papers_field_proportions():
    exp = experiments.EXPERIMENTS["cpu"]
    budget = exp.reference_steps * exp.flops(exp.reference_stages)
    for stages in exp.stage_counts:
        assert exp.steps(stages) * exp.flops(stages) == pytest.approx(budget, rel=0.03)
    ratios = architecture.describe(exp.config(6))["receptive_field_over_crop"]
    assert 0.35 <= ratios[0] <= 0.5  # the paper: 160 / 368 = 0.43
    assert ratios[1] - ratios[0] == pytest.approx(240 / 368, abs=0.05)  # each stage adds 0.65
    assert len(exp.seeds) >= 3 and exp.stage_counts == (1, 2, 3, 4, 6)


def test_the_committed_result_matches_the_code(repo):
    """cpm_nb/results/stage_experiment.json was made by `cpm-nb experiment stages` with exactly the
    configuration the code has now (else notebook 05 shows a result of another experiment)."""
    result = json.loads((repo / experiments.RESULTS_FILE).read_text())
    exp = experiments.EXPERIMENTS["cpu"]
    assert result["experiment"] == json.loads(json.dumps(exp.as_json()))
    assert result["model"] == json.loads(json.dumps(dataclasses.asdict(exp.config(6))))
    runs = {(r["stages"], r["seed"]) for r in result["runs"]}
    assert runs == {(n, s) for n in exp.stage_counts for s in exp.seeds}
    for r in result["runs"]:
        assert r["steps"] == exp.steps(r["stages"]) and len(r["per_stage"]) == r["stages"]
        assert r["run"] == exp.train_config(r["stages"], r["seed"]).run_name
    assert result["summary"] == json.loads(json.dumps(experiments.summarize_runs(result["runs"])))
    assert result["provenance"]["command"].startswith("cpm-nb --profile cpu experiment stages")


def test_the_command_runs_the_smoke_experiment(tmp_path, capsys):
    out = tmp_path / "stages.json"
    code = cli.main(["--profile", "fast", "experiment", "stages", "--no-progress",
                     "--cache-dir", str(tmp_path / "runs"), "--json-out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert [r["stages"] for r in result["runs"]] == [1, 2]
    assert set(result["summary"]) == {"1", "2"}
    assert "PCKh@0.5" in capsys.readouterr().out
    assert cli.main(["--profile", "fast", "experiment", "stages", "--seeds", "5"]) == 2
