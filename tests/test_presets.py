"""Presets: the trained models shipped with the package, found by configuration, loaded in
one line, made again by one command, and checked against the code that loads them."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cpm_nb.core.config import resolve_profile
from cpm_nb.training import preset_build, presets
from cpm_nb.training.config import train_config

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_preset_matches_the_code_that_loads_it():
    """A change to a preset's configuration (profile, experiment, generator, loop version)
    changes its key: then this fails until `cpm-nb presets build` trains it again."""
    rows = preset_build.check()
    assert {r["name"] for r in rows} == set(presets.names()) == set(preset_build.PRESETS)
    stale = [r for r in rows if not r["ok"]]
    assert not stale, f"stale presets (run `cpm-nb presets build`): {stale}"


def test_shipped_presets_are_small_and_say_how_they_were_made():
    sizes = preset_build.sizes()
    assert sum(sizes.values()) < 20e6
    for name in presets.names():
        meta = presets.info(name)
        for field in ("command", "commit", "generator_version", "pckh", "train_s", "machine",
                      "key", "precision"):
            assert meta.get(field) is not None, (name, field)
        trained = presets.load(name)
        assert trained.meta["metrics"]["mean"] == pytest.approx(meta["pckh"])
        assert trained.model.cpm_config.to_dict() == trained.meta["cpm_config"]


def test_the_cpu_preset_is_true_to_cpm_and_good():
    meta = presets.info("cpu")
    trained = presets.load("cpu")
    from cpm_nb.model import architecture

    over_crop = architecture.describe(trained.model.cpm_config)["receptive_field_over_crop"]
    assert 0.4 <= over_crop[0] <= 0.5 and all(f >= 1 for f in over_crop[1:])
    assert meta["pckh"] >= 90.0 and meta["train_s"] <= 600


@pytest.fixture
def tiny_preset(tmp_path, monkeypatch):
    """A preset of the fast profile built into a temporary presets folder."""
    monkeypatch.setattr(presets, "presets_dir", lambda: tmp_path / "presets")
    monkeypatch.setenv("CPM_NB_RUNS", str(tmp_path / "runs"))
    cfg = train_config(resolve_profile("fast"))
    monkeypatch.setattr(preset_build, "PRESETS", {
        "tiny": preset_build.Preset("tiny", "a smoke model", lambda: cfg)})
    record = preset_build.build("tiny", cache_dir=tmp_path / "build-runs", progress=False)
    return cfg, record


def test_a_built_preset_loads_and_is_found_by_its_configuration(tiny_preset, tmp_path, capsys):
    cfg, record = tiny_preset
    assert presets.names() == ["tiny"] and presets.find(cfg.key()) == "tiny"
    assert record["key"] == cfg.key() and record["command"] == "cpm-nb presets build tiny"
    assert preset_build.check() == [{"name": "tiny", "shipped_key": cfg.key(),
                                     "code_key": cfg.key(), "ok": True}]
    from cpm_nb.training.loop import load_or_train

    trained = load_or_train(resolve_profile("fast"), cache_dir=tmp_path / "cache")
    assert trained.run_dir == presets.folder("tiny")
    assert "loaded preset tiny: trained by `cpm-nb presets build tiny`" in capsys.readouterr().out
    assert not (tmp_path / "cache").exists()  # nothing was trained
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype("float32")
    again = presets.load("tiny").model.belief_maps(images)
    np.testing.assert_array_equal(trained.model.belief_maps(images)[-1], again[-1])


def test_retrain_ignores_the_preset(tiny_preset, tmp_path, monkeypatch):
    from cpm_nb.training.loop import load_or_train, training_plan

    cfg, _ = tiny_preset
    assert training_plan(cfg) == "loads the preset tiny"
    monkeypatch.setenv(presets.RETRAIN_ENV, "1")
    assert training_plan(cfg).startswith("training fast-2st-synthetic")
    trained = load_or_train(resolve_profile("fast"), cache_dir=tmp_path / "cache",
                            progress=False, verbose=False)
    assert trained.run_dir.parent == tmp_path / "cache"
    assert trained.meta["training"]["key"] == cfg.key()


def test_a_preset_whose_configuration_changed_is_stale(tiny_preset, monkeypatch):
    cfg, _ = tiny_preset
    other = cfg.replace(steps=cfg.steps + 1)
    monkeypatch.setitem(preset_build.PRESETS, "tiny",
                        preset_build.Preset("tiny", "changed", lambda: other))
    [row] = preset_build.check()
    assert not row["ok"] and row["shipped_key"] == cfg.key() and row["code_key"] == other.key()
    assert presets.find(other.key()) is None


def test_unknown_preset_is_one_line(tiny_preset):
    with pytest.raises(presets.ModelError, match=r"no preset 'nope' in this installation "
                                                 r"\(presets: tiny\)"):
        presets.load("nope")
    assert presets.resolve("preset:tiny") == presets.folder("tiny")
    assert presets.resolve("runs/x") == Path("runs/x")


def test_the_command_line_lists_predicts_with_and_does_not_retrain_a_preset(tiny_preset,
                                                                           tmp_path, capsys):
    from cpm_nb.cli import app

    assert app.main(["presets", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["model"] == "preset:tiny" and row["bytes"] > 0
    assert app.main(["--profile", "fast", "train", "--json"]) == 0  # the preset's configuration
    out = capsys.readouterr()
    assert "trained already (--model preset:tiny); add --retrain" in out.err
    assert json.loads(out.out)["preset"] == "tiny"
    image = tmp_path / "person.png"
    from PIL import Image

    Image.fromarray(np.full((80, 60, 3), 90, np.uint8)).save(image)
    assert app.main(["predict", str(image), "--model", "preset:tiny", "--out",
                     str(tmp_path / "poses"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "preset:tiny" and len(result["results"]) == 1
    assert app.main(["presets", "check"]) == 0


def test_cpm_nb_presets_is_the_public_face():
    code = "import cpm_nb.presets as p, sys; print(p.names() == sorted(p.names()), " \
           "'tensorflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, check=True)
    assert done.stdout.split() == ["True", "False"]


@pytest.mark.slow
def test_the_cpu_preset_is_reproduced_within_one_point(tmp_path):
    """Retrain the cpu preset from scratch (about 10 minutes on 2 cores with bf16; run with
    `pytest -m slow tests/test_presets.py`): PCKh@0.5 within 1 point of the recorded one."""
    from cpm_nb.training.loop import train_cached

    cfg = preset_build.PRESETS["cpu"].config()
    trained = train_cached(cfg, cache_dir=tmp_path, progress=False, retrain=True)
    recorded = presets.info("cpu")["pckh"]
    got = trained.meta["metrics"]["mean"]
    print(f"cpu preset retrained: PCKh@0.5 {got:.2f} (recorded {recorded:.2f}) in "
          f"{trained.meta['wall_s']:.0f} s")
    assert abs(got - recorded) <= 1.0
