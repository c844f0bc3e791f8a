"""The fault suite, damaged models and exports: a failed parity check keeps the previous
export, a damaged run folder is one line.

Shared fixtures: tests/faults/conftest.py; bad inputs: tests/fault_kit.py."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fault_kit import (
    jpeg,
    leftovers,
    one_line_error,
    run,
    snapshot,
    truncated,
)

from cpm_nb.inference import export


def test_export_that_fails_its_parity_check_keeps_the_previous_export(run_folder, tmp_path,
                                                                      capsys, monkeypatch):
    out = tmp_path / "exported"
    (out / "saved_model").mkdir(parents=True)
    (out / "saved_model" / "saved_model.pb").write_bytes(b"the previous good export")
    (out / "cpm_config.json").write_text("{}\n")
    before = snapshot(out)

    def fake_savedmodel(model, folder):
        folder.mkdir(parents=True)
        (folder / "saved_model.pb").write_bytes(b"a broken export")
        return folder

    monkeypatch.setattr(export, "export_savedmodel", fake_savedmodel)
    monkeypatch.setattr(export, "savedmodel_runner",
                        lambda folder: lambda x: [np.zeros((1, 8, 8, 16), np.float32)])
    code, _, err = run(["export", "--model", run_folder, "--out", out, "--format",
                        "savedmodel"], capsys)
    assert code == 1
    one_line_error(err, "differs from the Keras model", "nothing was written")
    after = snapshot(out)
    assert {k: after.get(k) for k in before} == before and not leftovers(out)
    assert set(after) == set(before)  # not even the folder's lock file is left



@pytest.mark.parametrize("damage", ["truncated", "empty", "not-a-zip", "bad-config",
                                    "config-list", "config-nan", "config-string"])
def test_damaged_models_are_one_line(run_folder, tmp_path, capsys, damage):
    model = tmp_path / "run"
    shutil.copytree(run_folder, model)
    keras_file, config = model / "model.keras", model / "cpm_config.json"
    if damage == "truncated":
        keras_file.write_bytes(truncated(keras_file.read_bytes(), 0.6))
    elif damage == "empty":
        keras_file.write_bytes(b"")
    elif damage == "not-a-zip":
        keras_file.write_bytes(b"PK\x03\x04 but not really")
    elif damage == "bad-config":
        config.write_text(config.read_text()[:30])
    elif damage == "config-list":
        config.write_text("[]")
    else:
        meta = json.loads(config.read_text())
        meta["cpm_config"]["width"] = float("nan") if damage == "config-nan" else "wide"
        config.write_text(json.dumps(meta))
    img = tmp_path / "a.jpg"
    img.write_bytes(jpeg())
    before = snapshot(tmp_path)
    for argv in (["predict", img, "--model", model, "--out", tmp_path / "o"],
                 ["export", "--model", model, "--out", tmp_path / "e"]):
        code, _, err = run(argv, capsys)
        assert code == 2
        one_line_error(err, str(keras_file if damage in ("truncated", "empty", "not-a-zip")
                                else config))
    assert snapshot(tmp_path) == before


def test_evaluate_shows_progress_and_keeps_the_model(run_folder, synthetic_copy, tmp_path,
                                                    capsys):
    """Progress on stderr (the package's helper), the scores in --json-out, and the model
    folder untouched."""
    _, _, tfrecords = synthetic_copy
    before = snapshot(run_folder)
    scores = tmp_path / "scores.json"
    code, out, err = run(["--profile", "fast", "evaluate", "--model", run_folder,
                          "--data-dir", tfrecords, "--max-examples", "8", "--json-out",
                          scores], capsys)
    assert code == 0, err
    assert "evaluating val: 8/8 people" in err
    assert json.loads(scores.read_text())["n_examples"] == 8
    assert snapshot(run_folder) == before
