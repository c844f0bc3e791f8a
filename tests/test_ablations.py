"""cpm_nb.training.ablations: the attribution variants (builders, layer table, fields and
equal compute), their run keys, the paired table, and a smoke run through the command."""

import json

import numpy as np
import pytest

from cpm_nb.cli import app as cli
from cpm_nb.model import architecture
from cpm_nb.training import ablations, experiments
from cpm_nb.training.loop import loss_weights


@pytest.fixture(scope="module")
def keras_module():
    from cpm_nb.core.runtime import import_keras

    return import_keras()


@pytest.fixture(scope="module")
def exp():
    return ablations.experiment("cpu")


def test_the_variants_fields_parameters_and_receptive_fields(exp):
    table = ablations.variants(exp)
    one, two = exp.config(1), exp.config(2)
    a = ablations.model_config(exp, table["a"])
    # (a): one stage with exactly the 2-stage net's field and its parameters within 1 %
    assert architecture.stage_receptive_fields(a) == [architecture.stage_receptive_fields(two)[-1]]
    assert architecture.stage_receptive_fields(a) == [142]
    assert architecture.count_params(a) == pytest.approx(architecture.count_params(two), rel=0.01)
    assert architecture.count_params(a) > architecture.count_params(one) * 1.2
    # (b): stage 2 without the beliefs: 16 input channels fewer, the same field (stage 1 is 1x1)
    b = ablations.model_config(exp, table["b"])
    rows = {r.name: r for r in architecture.architecture(b)}
    assert "concat_stage2" not in rows and rows["Mconv1_stage2"].inputs == ("conv4_7_CPM",)
    assert architecture.stage_receptive_fields(b) == [62, 142]
    # (d): the centre map reaches stage 1 and 2, at the release's sigma relative to the crop
    for name in ("d1", "d2"):
        d = ablations.model_config(exp, table[name])
        rows = {r.name: r for r in architecture.architecture(d)}
        assert list(d.input_names) == ["image", "center_map"]
        assert "pool_center_lower" in rows["concat_stage1"].inputs
        assert d.center_sigma == pytest.approx(21 * 128 / 368, abs=0.01)
    # (c) changes the training only
    assert ablations.model_config(exp, table["c"]) == two


def test_equal_compute_and_run_keys(exp):
    budget = exp.reference_steps * exp.flops(exp.reference_stages)
    baselines = {(s, r): exp.train_config(s, r).run_name for s in (1, 2) for r in exp.seeds}
    names = set()
    for v in ablations.variants(exp).values():
        cfg = ablations.train_config(exp, v, 0)
        flops = architecture.flops_per_image(cfg.model)
        assert cfg.steps * flops == pytest.approx(budget, rel=0.02)
        assert cfg.lr_decay_steps == int(0.8 * cfg.steps) and cfg.precision == "float32"
        assert cfg.eval_every == cfg.steps // 8 // 50 * 50  # 8 validations, as the baselines
        assert cfg.run_name not in baselines.values()
        names.add(cfg.run_name)
    assert len(names) == 5  # every variant is a run of its own
    c = ablations.train_config(exp, ablations.variants(exp)["c"], 1)
    assert c.supervision == "last" and loss_weights(c) == [0.0, 1.0]
    assert loss_weights(exp.train_config(2, 1)) is None
    # the baselines are the committed double-budget runs of the stage experiment
    committed = ablations.committed_baselines()
    for (stages, seed), row in committed.items():
        assert row["run"] == exp.train_config(stages, seed).run_name
    assert ablations.missing_baselines(["a"], (0, 1, 2), committed, exp) == [(1, 1), (1, 2)]
    estimate = ablations.estimate_seconds(exp, ["c"], (0, 1, 2), committed, False)
    mean_2x = np.mean([r["train_s"] for k, r in committed.items() if k[0] == 2])
    assert estimate["c"] == pytest.approx(3 * mean_2x, rel=0.25)


def test_the_plan_and_the_estimate_command(exp, tmp_path, capsys):
    rows = ablations.plan("a", seeds=3, cache_dir=tmp_path)
    sources = [(r["run"], r["seed"], r["source"]) for r in rows]
    assert sources == [("a", 0, "train"), ("a", 1, "train"), ("a", 2, "train"),
                       ("1st", 0, "committed"), ("1st", 1, "left out"), ("1st", 2, "left out"),
                       ("2st", 0, "committed"), ("2st", 1, "committed"), ("2st", 2, "committed")]
    committed = ablations.committed_baselines()
    assert rows[6]["name"] == committed[(2, 0)]["run"]
    assert all(r["seconds"] > 0 for r in rows[:3]) and rows[3]["seconds"] is None
    more = ablations.plan("a", seeds=3, cache_dir=tmp_path, train_missing=True)
    assert [r["source"] for r in more[4:6]] == ["train", "train"]
    assert cli.main(["--profile", "cpu", "experiment", "ablations", "--which", "c",
                     "--estimate", "--cache-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "3 run(s) to train, about" in printed and "committed" in printed


def test_the_variants_build_as_their_layer_table(exp, keras_module):
    from cpm_nb.model.cpm import build_cpm

    for name, v in ablations.variants(exp).items():
        cfg = ablations.model_config(exp, v)
        m = build_cpm(cfg, seed=0)
        assert m.count_params() == architecture.count_params(cfg), name
        for row in architecture.architecture(cfg):
            if row.kind == "conv":
                assert m.get_layer(row.name).count_params() == row.params, (name, row.name)
        assert [tuple(o.shape) for o in m.outputs] == [(None, 16, 16, 16)] * cfg.stages


def test_paired_rows_on_made_up_runs():
    table = ablations.variants(experiments.EXPERIMENTS["fast"])

    def row(variant, stages, seed, pckh):
        per = [pckh - 5.0] * (stages - 1) + [pckh]
        return {"variant": variant, "stages": stages, "seed": seed, "per_stage": per,
                "hard_per_stage": {"occluded_joints": per, "with_distractors": per},
                "errors_per_stage": {"on_other_person": [1.0] * stages},
                "hard_counts": {"occluded_joints": 1000, "visible_joints": 9000,
                                "with_distractors": 3000}}

    runs = [row("c", 2, s, p) for s, p in zip((0, 1, 2), (80.0, 81.0, 82.5))]
    base = [row("baseline", 2, s, p) for s, p in zip((0, 1, 2), (79.0, 80.0, 80.0))]
    out = ablations.paired_rows(runs, base, table)
    last = [r for r in out if r["measure"] == "pckh" and r["stage"] == 2][0]
    assert last["difference"]["differences"] == [1.0, 1.0, 2.5]
    assert last["baseline_joints"] == 10000
    assert last["baseline_binomial_se"] == pytest.approx(100 * np.sqrt(0.797 * 0.203 / 1e4),
                                                         rel=1e-3)
    assert last["verdict"].startswith("no detectable difference (3 seeds")
    # a 1-stage variant is paired with the 2-stage baseline's output (its last stage), and a
    # 2-stage variant's stage 2 with the 1-stage baseline's only stage
    one = [row("a", 1, s, p) for s, p in zip((0, 1, 2), (80.0, 81.0, 82.5))]
    ones = [row("baseline", 1, s, p) for s, p in zip((0, 1, 2), (70.0, 70.0, 70.0))]
    out = ablations.paired_rows(one, base + ones, table)
    vs_two = [r for r in out if r["measure"] == "pckh" and r["baseline_stages"] == 2]
    assert [r["baseline_scores"] for r in vs_two] == [[79.0, 80.0, 80.0]]
    two = ablations.paired_rows([row("b", 2, s, 75.0) for s in (0, 1, 2)], ones, table)
    assert [r["baseline_scores"] for r in two if r["measure"] == "pckh"] == [[70.0] * 3] * 2
    result = {"variants": {"b": {"stages": 2}}, "paired": two}
    rows = {s: ablations.format_paired(result, stages=s).splitlines()[1:]
            for s in ("all", "last", "earlier")}
    assert len(rows["all"]) == 8 and len(rows["last"]) == len(rows["earlier"]) == 4
    assert all(line.split()[3] == "2" for line in rows["last"])  # the stage column
    with pytest.raises(ValueError, match="'all', 'last' or 'earlier'"):
        ablations.format_paired(result, stages="first")


def test_the_ablation_command_smoke_run(tmp_path, capsys):
    out = tmp_path / "ablations.json"
    code = cli.main(["--profile", "fast", "experiment", "ablations", "--which", "d1",
                     "--no-progress", "--cache-dir", str(tmp_path / "runs"),
                     "--json-out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert [r["variant"] for r in result["runs"]] == ["d1"]
    assert [(r["stages"], r["source"]) for r in result["baselines"]] == [(1, "trained"),
                                                                         (2, "trained")]
    assert {r["measure"] for r in result["paired"]} == {
        "pckh", "occluded_joints", "with_distractors", "on_other_person"}
    assert result["runs"][0]["sampling_error"]["binomial_se"] > 0
    assert result["provenance"]["command"] == (
        f"cpm-nb --profile fast experiment ablations --which d1 --json-out {out}")
    printed = capsys.readouterr().out
    assert "1 stage with a centre map" in printed and "paired by seed" in printed
    for bad in (["--which", "e"], ["--budget", "4"], ["--seeds", "3"]):
        assert cli.main(["--profile", "fast", "experiment", "ablations", *bad]) == 2
        assert bad[0] in capsys.readouterr().err


def test_variant_a_field_measured_with_a_gradient(exp, keras_module):
    """Stage 1 of variant a sees what stage 2 of the 2-stage net sees (142 px), measured."""
    from cpm_nb.model.cpm import measure_receptive_field

    a = ablations.model_config(exp, ablations.variants(exp)["a"])
    measured = measure_receptive_field(a, stage=1)
    assert 142 - 8 <= measured <= 142
    assert measure_receptive_field(exp.config(1), stage=1) <= 62


def test_loss_on_the_last_stage_only(keras_module):
    """supervision="last": the objective is the last stage's loss alone (NumPy reference)."""
    from cpm_nb.core.config import resolve_profile
    from cpm_nb.model.targets import pack_targets_numpy
    from cpm_nb.training.config import train_config
    from cpm_nb.training.loop import compile_model
    from cpm_nb.training.loss import stage_losses_numpy

    rng = np.random.default_rng(0)
    for supervision in ("all", "last"):
        cfg = train_config(resolve_profile("fast"), supervision=supervision, weight_decay=0.0,
                           precision="float32")
        model = compile_model(cfg)
        size = cfg.input_size
        images = rng.uniform(0, 255, (2, size, size, 3)).astype(np.float32)
        joints = rng.uniform(8, size - 8, (2, 16, 2)).astype(np.float32)
        vis = np.full((2, 16), 2.0, np.float32)
        packed = pack_targets_numpy(joints, vis)
        outputs = model.predict(images, verbose=0)
        per_stage = stage_losses_numpy(outputs, joints, vis, size, cfg.sigma)
        loss = model.evaluate(images, (packed,) * cfg.stages, verbose=0, return_dict=True)
        expected = per_stage[-1] if supervision == "last" else sum(per_stage)
        assert loss["loss"] == pytest.approx(expected, rel=1e-3), supervision
