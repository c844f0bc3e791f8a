"""The fault suite, training and its caches: configurations checked for meaning (NaN,
infinities, non-integers), checkpoints whose step or values are damaged, cached runs that
know what they hold (the data's fingerprint, the generator version, a swapped model),
and outputs that are inputs (`train --out` over a converted run, `evaluate` on data of
another size before any rendering).

Shared fixtures: tests/faults/conftest.py; bad inputs: tests/fault_kit.py."""

from __future__ import annotations

import io
import json
import math
import shutil

import numpy as np
import pytest
from fault_kit import one_line_error, run, snapshot

from cpm_nb.core import config, errors
from cpm_nb.model import architecture
from cpm_nb.training import runs
from cpm_nb.training.config import TrainConfig, train_config

# === values checked for meaning ========================================================================


@pytest.mark.parametrize("change, message", [
    (dict(width=math.nan), "width must be a finite number > 0"),
    (dict(width=math.inf), "width must be a finite number > 0"),
    (dict(center_sigma=-math.inf), "center_sigma must be a finite number > 0"),
    (dict(input_size=64.0), "input_size must be an integer"),
    (dict(stages=2.5), "stages must be an integer"),
    (dict(stages=True), "stages must be an integer"),
])
def test_a_model_configuration_refuses_nan_and_non_integers(change, message):
    with pytest.raises(errors.ConfigError, match=message):
        architecture.CPMConfig(**change)


@pytest.mark.parametrize("change, message", [
    (dict(sigma=math.nan), "sigma must be a finite number > 0"),
    (dict(learning_rate=math.nan), "learning rate must be a positive number"),
    (dict(momentum=math.nan), "momentum must be a finite number >= 0"),
    (dict(weight_decay=math.inf), "weight_decay must be a finite number >= 0"),
    (dict(steps=1e12), "steps must be an integer"),
    (dict(batch_size=8.5), "batch_size must be an integer"),
    (dict(seed="0"), "seed must be an integer"),
])
def test_a_training_configuration_refuses_nan_and_non_integers(change, message):
    cfg = train_config(config.resolve_profile("fast"))
    with pytest.raises(errors.ConfigError, match=message):
        cfg.replace(**change)


@pytest.mark.parametrize("change, message", [
    (dict(width=math.nan), "width must be a finite number > 0"),
    (dict(learning_rate=math.inf), "learning_rate must be a finite number > 0"),
    (dict(input_size=60), "multiple of 8"),
    (dict(train_steps=0), "train_steps must be an integer >= 1"),
    (dict(n_val=2.0), "n_val must be an integer"),
])
def test_a_profile_refuses_nan_and_non_integers(change, message):
    with pytest.raises(errors.ConfigError, match=message):
        config.resolve_profile("fast").replace(**change)


def test_run_keys_are_unchanged_by_the_checks():
    """The checks add no field: the committed runs keep their names."""
    assert train_config(config.resolve_profile("fast")).key() == "78a3d23d46de"
    assert train_config(config.resolve_profile("cpu")).key() == "8cd07bc5fbe3"


# === damaged checkpoints ===============================================================================


def _checkpoint(path, state, weights=None):
    arrays = {"model/w": np.ones(3, np.float32) if weights is None else weights}
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("step", ["abc", -5, 1e12, 10**12, 3.5, True, None])
def test_a_checkpoint_step_that_is_not_a_step_is_refused(tmp_path, step):
    path = _checkpoint(tmp_path / "checkpoint.npz", {"step": step, "history": {}})
    with pytest.raises(runs.RunError, match="is not an integer from 0 to"):
        runs.read_checkpoint(path)


def test_a_checkpoint_step_beyond_the_run_is_refused(tmp_path):
    path = _checkpoint(tmp_path / "checkpoint.npz", {"step": 5000, "history": {}})
    _, state = runs.read_checkpoint(path)
    with pytest.raises(runs.RunError, match="from 0 to 20"):
        runs.check_step(state, path, steps=20)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_checkpoint_with_non_finite_values_is_refused(tmp_path, bad):
    weights = np.ones(4, np.float32)
    weights[2] = bad
    path = _checkpoint(tmp_path / "checkpoint.npz", {"step": 3, "history": {}}, weights)
    with pytest.raises(runs.RunError, match="model/w holds NaN or infinite values"):
        runs.read_checkpoint(path)


def test_a_checkpoint_history_that_is_not_an_object_is_refused(tmp_path):
    path = _checkpoint(tmp_path / "checkpoint.npz", {"step": 3, "history": "garbage"})
    with pytest.raises(runs.RunError, match="history is not a JSON object"):
        runs.read_checkpoint(path)


# === caches that know what they hold ===================================================================


def _cached_run(run_folder, folder, cfg, **meta):
    shutil.copytree(run_folder, folder)
    saved = json.loads((folder / "cpm_config.json").read_text())
    saved.update(training=cfg.to_json(), **meta)
    (folder / "cpm_config.json").write_text(json.dumps(saved))
    return folder


def test_a_swapped_model_in_the_cache_is_caught(run_folder, tmp_path, monkeypatch):
    """load_or_train("fast") never returns a model of another configuration."""
    from cpm_nb.core.runtime import import_keras
    from cpm_nb.model import cpm as M
    from cpm_nb.training import loop

    monkeypatch.setenv("CPM_NB_RETRAIN", "0")
    profile = config.resolve_profile("fast")
    cfg = train_config(profile)
    folder = _cached_run(run_folder, runs.run_dir(cfg, tmp_path), cfg)
    assert loop.load_or_train(profile, cache_dir=tmp_path, verbose=False).model.cpm_config \
        == cfg.model
    import_keras()
    other = M.build_cpm(cfg.model.replace(stages=1, input_size=128), seed=0)
    other.save(folder / "model.keras")
    before = snapshot(folder)
    with pytest.raises(runs.RunError, match="holds another configuration.*stages 1"):
        loop.load_or_train(profile, cache_dir=tmp_path, verbose=False)
    assert snapshot(folder) == before  # not retrained over, not deleted: the user decides


def test_a_cached_run_of_other_data_is_not_reused(run_folder, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    meta = {"input_size": 64, "splits": {"train": {"kept": 10, "bytes": {"a": 5}}},
            "source": {"generator_version": 2, "seconds": 1.5}}
    (data / "meta.json").write_text(json.dumps(meta))
    cfg = train_config(config.resolve_profile("fast"), data_dir=str(data))
    fingerprint = runs.data_fingerprint(data)
    folder = _cached_run(run_folder, runs.run_dir(cfg, tmp_path), cfg,
                         data_source=runs.data_source(cfg))
    assert runs.data_source(cfg)["fingerprint"] == fingerprint
    assert runs.cached(cfg, tmp_path) == folder
    meta["source"]["seconds"] = 99.0  # prepared again, identically: the same data
    (data / "meta.json").write_text(json.dumps(meta))
    assert runs.cached(cfg, tmp_path) == folder
    meta["splits"]["train"]["kept"] = 11  # other data
    (data / "meta.json").write_text(json.dumps(meta))
    assert runs.data_fingerprint(data) != fingerprint
    assert runs.cached(cfg, tmp_path) is None


def test_the_generator_version_is_in_the_key_and_the_metadata():
    from cpm_nb.data import synthetic

    cfg = train_config(config.resolve_profile("fast"))
    newer = cfg.replace(synthetic=cfg.synthetic.replace(
        generator_version=synthetic.GENERATOR_VERSION + 1))
    assert newer.key() != cfg.key()
    assert runs.data_source(cfg)["generator_version"] == synthetic.GENERATOR_VERSION
    assert TrainConfig.from_json(newer.to_json()).key() == newer.key()


# === outputs that are inputs, checks before work ======================================================


def test_train_over_a_converted_run_needs_force(run_folder, tmp_path, capsys):
    converted = tmp_path / "converted"
    shutil.copytree(run_folder, converted)  # a model.keras that train did not make
    before = snapshot(converted)
    code, _, err = run(["--profile", "fast", "train", "--out", converted, "--steps", "2"],
                       capsys)
    assert code == 2
    one_line_error(err, "already holds a model.keras that was not trained there", "--force")
    assert snapshot(converted) == before


def test_evaluate_on_data_of_another_size_fails_before_rendering(run_folder, capsys,
                                                                 monkeypatch):
    from cpm_nb.training import loop

    def never(*args, **kwargs):
        raise AssertionError("the data was prepared before the sizes were compared")

    monkeypatch.setattr(loop, "data_dir", never)
    code, _, err = run(["--profile", "fast", "evaluate", "--model", run_folder], capsys)
    assert code == 2
    one_line_error(err, "the model takes 64-px crops", "synthetic set has 128 px")


def test_train_says_where_the_run_is(tmp_path, capsys):
    """The folder, which --model accepts, on stdout and in the JSON."""
    out, scores = tmp_path / "run", tmp_path / "scores.json"
    code, stdout, err = run(["--profile", "fast", "train", "--out", out, "--steps", "2",
                             "--no-progress", "--json-out", scores], capsys)
    assert code == 0, err
    assert f"run folder: {out} (pass it to --model)" in stdout
    assert json.loads(scores.read_text())["run"] == str(out)
    assert not (out / ".lock").exists()
