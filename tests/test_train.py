"""Tests for cpm_nb.train: configuration, data order, the loop, atomic checkpoints, NaN
handling, a SIGKILL-and-resume of a real training subprocess, export, evaluation, the cache
and the CLI.  Everything runs the `fast` profile on the CPU (seconds per run)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cpm_nb import train as T

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def keras():
    from cpm_nb.runtime import import_keras

    return import_keras()


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory, keras):
    """One uninterrupted fast-profile run (20 steps), shared by several tests."""
    out = tmp_path_factory.mktemp("fast_run")
    cfg = T.train_config("fast", checkpoint_every=5)
    result = T.train(cfg, out, progress=False, verbose=False)
    return cfg, out, result


def weights_of(model):
    return [np.asarray(w) for w in model.get_weights()]


# --- configuration ---------------------------------------------------------------------


def test_profiles_choose_documented_optimizers():
    gpu = T.train_config("gpu")
    assert (gpu.optimizer, gpu.learning_rate, gpu.momentum, gpu.batch_size) == ("sgd", 8e-5,
                                                                                0.9, 16)
    assert (gpu.weight_decay, gpu.decay_steps, gpu.lr_decay_factor) == (5e-4, 13275, 0.333)
    assert (gpu.input_size, gpu.stages) == (368, 6)
    cpu = T.train_config("cpu")
    assert cpu.optimizer == "adam" and cpu.decay_steps == int(0.8 * cpu.steps)
    # Caffe's EuclideanLoss = 0.5 * sum of squares per image = 0.5 * M^2 * J * MSE
    assert gpu.loss_scale == 0.5 * 46 * 46 * 16


def test_config_key_tracks_what_changes_the_weights():
    base = T.train_config("fast")
    assert base.key() == T.train_config("fast").key()
    assert base.key() != base.replace(stages=3).key()
    assert base.key() != base.replace(seed=1).key()
    assert base.key() == base.replace(checkpoint_every=3, eval_every=7).key()
    assert base.run_name.startswith("fast-2st-synthetic-")
    with pytest.raises(TypeError, match="unknown training settings: bogus"):
        T.train_config("fast", bogus=1)
    with pytest.raises(ValueError, match="optimizer"):
        T.train_config("fast", optimizer="rmsprop")


def test_gpu_features_are_off_without_a_gpu(keras):
    dev = T.devices_for(T.train_config("fast"))
    if dev.gpus:
        pytest.skip("a GPU is visible")
    assert dev == T.Devices(0, False, False, False)
    forced = T.devices_for(T.train_config("fast", mixed_precision=True, xla=True))
    assert forced.mixed_precision and forced.xla


# --- data order -----------------------------------------------------------------------------


def test_batches_are_a_pure_function_of_seed_and_step(keras):
    cfg = T.train_config("fast")
    folder = T.data_dir(cfg)
    first = list(T.train_dataset(folder, 8, seed=0, start_step=0).take(12).as_numpy_iterator())
    later = list(T.train_dataset(folder, 8, seed=0, start_step=9).take(3).as_numpy_iterator())
    for a, b in zip(first[9:], later):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    other = next(T.train_dataset(folder, 8, seed=1).as_numpy_iterator())
    assert not np.array_equal(other[0], first[0][0])
    images, joints, vis = first[0]
    assert images.dtype == np.uint8 and images.shape == (8, 64, 64, 3)
    assert joints.shape == (8, 16, 2) and vis.shape == (8, 16) and vis.dtype == np.int32
    # every example of an epoch is seen exactly once: compare the unaugmented joints
    from cpm_nb import pipeline

    n = pipeline.count_examples(folder, "train")
    plain = T.train_dataset(folder, 1, seed=0, augment=False)
    seen = [tuple(np.round(j[0].ravel(), 3)) for _, j, _ in plain.take(n).as_numpy_iterator()]
    assert len(set(seen)) == len(seen) == n


# --- the loop, export, evaluation ---------------------------------------------------------


def test_training_runs_the_loss_falls_and_exports(fast_run, keras):
    cfg, out, result = fast_run
    h = result.history
    assert result.step == cfg.steps == h["step"][-1]
    assert np.mean(h["data_loss"][-3:]) < h["data_loss"][0]
    assert len(h["stage_mse"][0]) == cfg.stages
    assert {p.name for p in out.iterdir()} >= {"checkpoint.npz", "cpm_config.json",
                                               "history.json", "logs", "model.keras"}
    assert any((out / "logs").iterdir())  # TensorBoard events
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    for a, b in zip(weights_of(model), weights_of(result.model)):
        np.testing.assert_array_equal(a, b)
    meta = json.loads((out / "cpm_config.json").read_text())
    assert meta["input_size"] == 64 and meta["stages"] == 2 and len(meta["joints"]) == 16
    assert meta["training"]["key"] == cfg.key() and meta["steps"] == cfg.steps
    assert "x / 256 - 0.5" in meta["normalisation"]
    assert meta["metrics"]["mean"] == result.metrics["mean"]


def test_evaluate_reports_the_evaluate_mpii_keys(fast_run):
    cfg, out, result = fast_run
    scores = T.evaluate(result.model, T.data_dir(cfg))
    for key in ("pckh", "mean", "mean_at_0.1", "per_joint"):
        assert key in scores
    assert set(scores["pckh"]) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"}
    assert scores["per_joint"]["pelv"] is None and len(scores["per_joint"]) == 16
    assert 0 <= scores["mean"] <= 100 and 0 <= scores["article_25px"] <= 100
    assert len(scores["per_stage"]) == cfg.stages and scores["per_stage"][-1] == scores["mean"]
    assert set(scores["hard"]) == {"occluded_joints", "visible_joints", "with_distractors",
                                   "alone"}
    assert scores["hard_counts"]["occluded_joints"] > 0
    assert scores["hard_counts"]["with_distractors"] > 0
    assert scores == result.metrics | {}  # same numbers as at the end of training


def test_evaluate_maps_back_to_original_pixels(fast_run, keras):
    """A perfect predictor (the target maps themselves) is right in original pixels: every
    joint within 25 px, and PCKh@0.5 near 100 % (not exactly: at 64 px the PCKh radius is
    ~2.5 px and a peak on the map border is not refined, so a few border joints miss)."""
    from cpm_nb import heatmaps, pipeline

    cfg, _, result = fast_run
    folder = T.data_dir(cfg)

    ds = pipeline.make_dataset(folder, "val", batch_size=8, augment=False, shuffle=False,
                               repeat=False, deterministic=True)
    truth = [(im, j, v) for im, j, v in ds.as_numpy_iterator()]
    lookup = {im.tobytes(): heatmaps.render_numpy(j, v, cfg.input_size, cfg.sigma)
              for ims, js, vs in truth for im, j, v in zip(ims, js, vs)}

    def oracle(images):
        maps = np.stack([lookup[im.tobytes()] for im in np.asarray(images, np.uint8)])
        return [maps, maps]

    scores = T.evaluate(result.model, folder, predict=oracle)
    assert scores["article_25px"] == 100.0
    assert scores["mean"] > 95.0 and scores["per_stage"] == [scores["mean"]] * 2


# --- checkpoints: resume, atomicity, NaN --------------------------------------------------


def test_resume_in_process_matches_an_uninterrupted_run(fast_run, tmp_path):
    cfg, _, full = fast_run
    part = T.train(cfg, tmp_path, progress=False, verbose=False, stop_after=7)
    assert part.step == 7 and not part.metrics
    assert T.read_checkpoint(tmp_path / "checkpoint.npz")[2]["step"] == 7
    resumed = T.train(cfg, tmp_path, resume=True, progress=False, verbose=False)
    assert resumed.resumed_from == 7 and resumed.step == cfg.steps
    for a, b in zip(weights_of(resumed.model), weights_of(full.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert resumed.history["step"] == full.history["step"]


def test_kill_and_resume_a_real_training_subprocess(tmp_path, keras):
    """SIGKILL a training process mid-run; --resume continues from the last checkpoint
    (same step counter, optimizer state, schedule, data order) to the same weights as an
    uninterrupted run."""
    steps, every = 120, 10
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cpm_nb", "--profile", "fast", "train", "--out", str(out),
           "--steps", str(steps), "--checkpoint-every", str(every), "--no-progress"]
    env = {**os.environ, "CPM_NB_STATIC": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    ckpt = out / "checkpoint.npz"
    deadline = time.time() + 240
    killed_at = None
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt.is_file():
                try:
                    step = T.read_checkpoint(ckpt)[2]["step"]
                except Exception:  # noqa: BLE001 - read during a replace: try again
                    step = 0
                if step >= 3 * every:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(30)
    assert killed_at is not None, "the run finished or hung before it could be killed: " + (
        proc.stdout.read().decode()[-2000:])
    assert proc.returncode == -signal.SIGKILL
    state = T.read_checkpoint(ckpt)[2]  # whatever the moment of the kill: a whole checkpoint
    assert every * 3 <= state["step"] < steps and state["step"] % every == 0
    assert not (out / "model.keras").exists()
    # without --resume an existing checkpoint is refused
    refused = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = subprocess.run(cmd + ["--resume"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {out} at step {state['step']}" in resumed.stdout
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == sorted(set(history["step"])) and history["step"][-1] == steps
    assert not list(out.glob(".*.tmp*"))
    # the uninterrupted reference run, in this process
    cfg = T.train_config("fast", steps=steps, checkpoint_every=every)
    reference = T.train(cfg, tmp_path / "reference", progress=False, verbose=False)
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    for a, b in zip(weights_of(model), weights_of(reference.model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_half_written_checkpoint_never_replaces_a_good_one(fast_run, tmp_path, monkeypatch):
    cfg, out, result = fast_run
    path = tmp_path / "checkpoint.npz"
    T.save_checkpoint(path, result.model, _optimizer(cfg, result.model), {"step": 5})
    good = path.read_bytes()

    def crash(f, data):
        f.write(data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(T, "_write_all", crash)
    with pytest.raises(OSError, match="disk full"):
        T.save_checkpoint(path, result.model, _optimizer(cfg, result.model), {"step": 10})
    assert path.read_bytes() == good and T.read_checkpoint(path)[2] == {"step": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz"]


def _optimizer(cfg, model):
    opt = T._make_optimizer(cfg, mixed=False)
    opt.build(model.trainable_variables)
    return opt


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, keras):
    real = T.train_dataset

    def poisoned(folder, batch_size, seed=0, start_step=0, augment=True):
        ds = real(folder, batch_size, seed, start_step, augment)
        tf = T._tf()

        def poison(i, batch):
            images, joints, vis = batch
            bad = (i + start_step) >= 7  # the 8th step sees NaN joints
            return images, tf.where(bad, joints * np.nan, joints), vis

        return ds.enumerate().map(poison)

    monkeypatch.setattr(T, "train_dataset", poisoned)
    cfg = T.train_config("fast", checkpoint_every=5)
    with pytest.raises(T.TrainingDiverged, match=r"NaN at step 8.*checkpoint \(step 5\)"):
        T.train(cfg, tmp_path, progress=False, verbose=False)
    weights, _, state = T.read_checkpoint(tmp_path / "checkpoint.npz")
    assert state["step"] == 5 and all(np.all(np.isfinite(w)) for w in weights)
    assert not (tmp_path / "model.keras").exists()


def test_resume_refuses_another_configuration(fast_run, tmp_path):
    cfg, out, _ = fast_run
    T.train(cfg, tmp_path, progress=False, verbose=False, stop_after=2)
    with pytest.raises(T.ConfigMismatch, match="another configuration"):
        T.train(cfg.replace(stages=3), tmp_path, progress=False, verbose=False)


# --- cache and CLI ------------------------------------------------------------------------


def test_load_or_train_reuses_the_cached_run(tmp_path, capsys, keras):
    first = T.load_or_train("fast", cache_dir=tmp_path, progress=False)
    assert first.run_dir.parent == tmp_path and (first.run_dir / "model.keras").is_file()
    t0 = time.perf_counter()
    again = T.load_or_train("fast", cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - t0 < 10
    assert "loaded the cached run" in capsys.readouterr().out
    for a, b in zip(weights_of(first.model), weights_of(again.model)):
        np.testing.assert_array_equal(a, b)
    assert again.meta["stages"] == 2 and again.meta["training"]["profile"] == "fast"
    assert T.cached(T.train_config("fast", stages=3), tmp_path) is None


def test_cli_evaluate_json(fast_run, tmp_path, capsys):
    from cpm_nb import cli

    _, out, result = fast_run
    target = tmp_path / "scores.json"
    assert cli.main(["--profile", "fast", "evaluate", "--model", str(out), "--json",
                     str(target)]) == 0
    printed = capsys.readouterr().out
    assert "PCKh@0.5" in printed and "article 25-px metric" in printed
    scores = json.loads(target.read_text())
    assert scores["mean"] == pytest.approx(result.metrics["mean"])
    assert cli.main(["evaluate", "--model", str(tmp_path / "nothing")]) == 2


def test_cli_help_teaches():
    done = subprocess.run([sys.executable, "-m", "cpm_nb", "train", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--resume" in done.stdout and "examples:" in done.stdout


def test_mixed_precision_step_and_checkpoint_on_cpu(tmp_path, keras):
    """The GPU code path (float16 compute, loss scaling) runs and checkpoints on the CPU too."""
    cfg = T.train_config("fast", mixed_precision=True, xla=False)
    dev = T.devices_for(cfg)
    model, optimizer, strategy = T.build_model_and_optimizer(cfg, dev)
    assert type(optimizer).__name__ == "LossScaleOptimizer"
    assert model.outputs[0].dtype == "float16" and model.weights[0].dtype == "float32"
    assert str(keras.config.dtype_policy().name) == "float32"  # the global policy is restored
    step = T.make_train_step(model, optimizer, cfg, strategy, dev)
    values = np.asarray(step(*next(iter(T.train_dataset(T.data_dir(cfg), cfg.batch_size)))))
    assert values.shape == (2 + cfg.stages,) and np.all(np.isfinite(values))
    T.save_checkpoint(tmp_path / "c.npz", model, optimizer, {"step": 1})
    other, other_opt, _ = T.build_model_and_optimizer(cfg, dev)
    assert T.restore_checkpoint(tmp_path / "c.npz", other, other_opt) == {"step": 1}
    for a, b in zip(weights_of(model), weights_of(other)):
        np.testing.assert_array_equal(a, b)


def test_one_process_at_a_time_per_run_folder(tmp_path):
    cfg = T.train_config("fast")
    with T.run_lock(tmp_path):
        with pytest.raises(T.RunLocked, match="another process"):
            T.train(cfg, tmp_path, progress=False, verbose=False)
    with T.run_lock(tmp_path):  # released again
        pass
