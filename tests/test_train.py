"""Tests for training on keras.Model.fit: configuration, data order on both input paths,
the loop and its callbacks, atomic checkpoints by name, NaN handling, SIGKILL-and-resume
of real training subprocesses on the TensorFlow and the JAX backend, training without
TensorFlow, export, evaluation, the cache and the CLI.  Everything runs the `fast` profile
on the CPU (seconds per run)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cpm_nb.core import errors
from cpm_nb.core.config import resolve_profile
from cpm_nb.data import batches as data
from cpm_nb.evaluation import evaluate as evaluation
from cpm_nb.training import config as TC
from cpm_nb.training import loop as T
from cpm_nb.training import runs

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CPM_NB_STATIC": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}


def weights_of(model):
    return [np.asarray(w) for w in model.get_weights()]


# --- configuration ---------------------------------------------------------------------


# --- data order -----------------------------------------------------------------------------


def _numpy_batches(folder, start, n, seed=0):
    return list(data.NumpyBatches(folder, "train", 8, seed, start, n).iterate(workers=2))


def test_batches_are_a_pure_function_of_seed_and_step(keras):
    cfg = TC.train_config(resolve_profile("fast"))
    folder = T.data_dir(cfg)
    ds = data.tf_training_dataset
    first = list(ds(folder, 8, seed=0, start_step=0).take(12).as_numpy_iterator())
    later = list(ds(folder, 8, seed=0, start_step=9).take(3).as_numpy_iterator())
    for path_first, path_later in ((first[9:], later),
                                   (_numpy_batches(folder, 0, 12)[9:],
                                    _numpy_batches(folder, 9, 3))):
        for a, b in zip(path_first, path_later):
            for x, y in zip(a, b):
                np.testing.assert_array_equal(x, y)
    other = next(ds(folder, 8, seed=1).as_numpy_iterator())
    assert not np.array_equal(other[0], first[0][0])
    images, joints, vis = first[0]
    assert images.dtype == np.uint8 and images.shape == (8, 64, 64, 3)
    assert joints.shape == (8, 16, 2) and vis.shape == (8, 16) and vis.dtype == np.int32
    n = len(data.load_split(folder, "train"))
    for plain in (ds(folder, 1, seed=0, augment=False).take(n).as_numpy_iterator(),
                  data.NumpyBatches(folder, "train", 1, 0, 0, n, augment=False).iterate()):
        seen = [tuple(np.round(j[0].ravel(), 3)) for _, j, _ in plain]
        assert len(set(seen)) == len(seen) == n  # every example once per epoch


def test_numpy_path_matches_tf_data_without_augmentation(keras):
    """The two input paths crop the same pixels and joints (bilinear warps of the same
    context crop: TF's and PIL's resamplers differ by rounding only)."""
    folder = T.data_dir(TC.train_config(resolve_profile("fast")))
    tf_batches = list(data.evaluation_batches(folder, "val", 16, input_path="tf"))
    np_batches = list(data.evaluation_batches(folder, "val", 16, input_path="numpy"))
    assert len(tf_batches) == len(np_batches)
    for (ti, tj, tv, tm), (ni, nj, nv, nm) in zip(tf_batches, np_batches):
        np.testing.assert_allclose(tj, nj, atol=1e-3)
        np.testing.assert_array_equal(tv, nv)
        np.testing.assert_allclose(tm["crop_matrix"], nm["crop_matrix"], atol=1e-3)
        np.testing.assert_array_equal(tm["n_others"], nm["n_others"])
        assert np.mean(np.abs(ti.astype(float) - ni.astype(float))) < 2.0


def test_data_made_for_another_input_size_is_refused_before_any_work(tmp_path, keras):
    cfg = TC.train_config(resolve_profile("fast"), input_size=128)
    with pytest.raises(errors.DataError, match="holds 64-px crops but the model takes 128 px"):
        T.train(cfg.replace(data_dir=str(T.data_dir(TC.train_config(resolve_profile("fast"))))), tmp_path,
                progress=False, verbose=False)
    assert not (tmp_path / "checkpoint.npz").exists()


# --- the loop, export, evaluation ---------------------------------------------------------


def test_training_runs_the_loss_falls_and_exports(fast_run, keras):
    cfg, out, result = fast_run
    h = result.history
    assert result.step == cfg.steps == h["step"][-1] and h["step"] == [5, 10, 15, 20]
    assert h["data_loss"][-1] < h["data_loss"][0]
    assert len(h["stage_loss"][0]) == cfg.stages
    assert all(lo > d for lo, d in zip(h["loss"], h["data_loss"]))  # + the L2 term
    assert {p.name for p in out.iterdir()} >= {"checkpoint.npz", "cpm_config.json",
                                               "history.json", "logs", "model.keras"}
    assert not (out / ".lock").exists()  # the run's lock is gone with the run
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    for a, b in zip(weights_of(model), weights_of(result.model)):
        np.testing.assert_array_equal(a, b)
    assert all(w.dtype == "float32" for w in model.weights)
    meta = json.loads((out / "cpm_config.json").read_text())
    assert meta["input_size"] == 64 and meta["stages"] == 2 and len(meta["joints"]) == 16
    assert meta["training"]["key"] == cfg.key() and meta["steps"] == cfg.steps
    assert "x / 256 - 0.5" in meta["normalisation"]
    assert meta["metrics"]["mean"] == result.metrics["mean"]


def test_tensorboard_reads_every_curve_up_to_the_final_validation(fast_run):
    """The scalars in OUT/logs, read back by TensorBoard itself: every training interval
    and the validation after the last step (written after the last fit)."""
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator")
    cfg, out, result = fast_run
    acc = event_accumulator.EventAccumulator(str(out / "logs"))
    acc.Reload()
    h = result.history
    tags = set(acc.Tags()["scalars"])
    assert {"train/objective", "train/data_loss", "train/learning_rate", "val/pckh_0.5",
            "train/loss_stage1", f"train/loss_stage{cfg.stages}"} <= tags
    objective = acc.Scalars("train/objective")
    assert [e.step for e in objective] == h["step"] == [5, 10, 15, 20]
    np.testing.assert_allclose([e.value for e in objective], h["loss"], rtol=1e-6)
    val = acc.Scalars("val/pckh_0.5")
    assert val[-1].step == cfg.steps == h["val_step"][-1]  # the final validation's point
    assert val[-1].value == pytest.approx(result.metrics["mean"], rel=1e-6)
    stage = acc.Scalars(f"val/pckh_0.5_stage{cfg.stages}")
    assert stage[-1].step == cfg.steps


def test_evaluate_reports_the_evaluate_mpii_keys(fast_run):
    cfg, out, result = fast_run
    scores = evaluation.evaluate(result.exported, T.data_dir(cfg))  # what model.keras holds
    for key in ("pckh", "mean", "mean_at_0.1", "per_joint"):
        assert key in scores
    assert set(scores["pckh"]) == {"Head", "Shoulder", "Elbow", "Wrist", "Hip", "Knee", "Ankle"}
    assert scores["per_joint"]["pelv"] is None and len(scores["per_joint"]) == 16
    assert 0 <= scores["mean"] <= 100 and 0 <= scores["article_25px"] <= 100
    assert len(scores["per_stage"]) == cfg.stages and scores["per_stage"][-1] == scores["mean"]
    assert set(scores["hard"]) == {"occluded_joints", "visible_joints", "with_distractors",
                                   "alone", "limbs_crossed"}
    assert scores["hard_counts"]["occluded_joints"] > 0
    assert scores == result.metrics | {}  # same numbers as at the end of training
    # the one evaluation pass: collect() gives the same score
    vp = evaluation.collect(result.exported, T.data_dir(cfg))
    assert evaluation.summarize(vp) == scores and vp.images is not None


def test_evaluate_maps_back_to_original_pixels(fast_run, keras, monkeypatch):
    """A perfect predictor (the target maps themselves) is right in original pixels: every
    joint within 25 px, and PCKh@0.5 near 100 % (not exactly: at 64 px the PCKh radius is
    ~2.5 px and a peak on the map border is not refined, so a few border joints miss)."""
    from cpm_nb.model import heatmaps, network

    cfg, _, result = fast_run
    folder = T.data_dir(cfg)
    truth = list(data.evaluation_batches(folder, "val", 8))
    lookup = {im.tobytes(): heatmaps.render_numpy(j, v, cfg.input_size, cfg.sigma)
              for ims, js, vs, _ in truth for im, j, v in zip(ims, js, vs)}

    def oracle(images):
        maps = np.stack([lookup[im.tobytes()] for im in np.asarray(images, np.uint8)])
        return [maps, maps]

    monkeypatch.setattr(network.CPM, "belief_maps", lambda model, images: oracle(images))
    scores = evaluation.evaluate(result.model, folder)
    assert scores["article_25px"] == 100.0
    assert scores["mean"] > 95.0 and scores["per_stage"] == [scores["mean"]] * 2


# --- checkpoints: resume, atomicity, NaN --------------------------------------------------


@pytest.mark.parametrize("input_path", ["tf", "numpy"])
def test_resume_in_process_matches_an_uninterrupted_run(tmp_path, keras, input_path):
    cfg = TC.train_config(resolve_profile("fast"), steps=20, checkpoint_every=5)
    full = T.train(cfg, tmp_path / "full", progress=False, verbose=False, input_path=input_path)
    part = T.train(cfg, tmp_path / "cut", progress=False, verbose=False, stop_after=7,
                   checkpoint_on_stop=False, input_path=input_path)
    assert part.step == 7 and not part.metrics
    assert runs.read_checkpoint(tmp_path / "cut" / "checkpoint.npz")[1]["step"] == 5
    resumed = T.train(cfg, tmp_path / "cut", resume=True, progress=False, verbose=False,
                      input_path=input_path)
    assert resumed.resumed_from == 5 and resumed.step == cfg.steps
    for a, b in zip(weights_of(resumed.model), weights_of(full.model)):
        np.testing.assert_array_equal(a, b)
    assert resumed.history["step"] == full.history["step"] == [5, 10, 15, 20]
    assert resumed.history["loss"] == full.history["loss"]
    # a stop with a checkpoint off the cadence resumes exactly too
    T.train(cfg, tmp_path / "odd", progress=False, verbose=False, stop_after=7,
            input_path=input_path)
    odd = T.train(cfg, tmp_path / "odd", resume=True, progress=False, verbose=False,
                  input_path=input_path)
    assert odd.resumed_from == 7
    for a, b in zip(weights_of(odd.model), weights_of(full.model)):
        np.testing.assert_array_equal(a, b)


def _kill_and_resume(tmp_path, backend: str, steps: int, every: int = 10):
    """Start a training subprocess, SIGKILL it at the first checkpoint the poller sees,
    check what is left, then ``--resume`` it.  The run is long (``steps``) and niced so
    that a fast, idle machine cannot finish it before a (possibly starved) poller looks:
    CI once saw the run's last checkpoint first."""
    out = tmp_path / f"killed-{backend}"
    cmd = [sys.executable, "-m", "cpm_nb", "--profile", "fast", "train", "--out", str(out),
           "--steps", str(steps), "--checkpoint-every", str(every), "--no-progress"]
    env = {**ENV, "KERAS_BACKEND": backend}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, preexec_fn=lambda: os.nice(10))
    ckpt = out / "checkpoint.npz"
    deadline = time.time() + 240
    killed_at = None
    try:
        while time.time() < deadline and proc.poll() is None:
            if ckpt.is_file():
                try:
                    step = runs.read_checkpoint(ckpt)[1]["step"]
                except runs.RunError:  # read during a replace: try again
                    step = 0
                if step >= every:
                    proc.send_signal(signal.SIGKILL)
                    killed_at = step
                    break
            time.sleep(0.02)
    finally:
        if proc.poll() is None and killed_at is None:
            proc.kill()
        proc.wait(30)
    assert killed_at is not None, "the run finished or hung before it could be killed: " + (
        proc.stdout.read().decode()[-2000:])
    assert proc.returncode == -signal.SIGKILL
    state = runs.read_checkpoint(ckpt)[1]  # whatever the moment of the kill: a whole one
    assert killed_at <= state["step"] < steps and state["step"] % every == 0, (
        f"killed when the poller saw step {killed_at}; the checkpoint says {state['step']}")
    assert not (out / "model.keras").exists()
    refused = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    assert "Traceback" not in refused.stderr
    resumed = subprocess.run(cmd + ["--resume", "--json"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {out} at step {state['step']}" in resumed.stderr
    assert json.loads(resumed.stdout)["mean"] >= 0  # stdout is the JSON alone
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == list(range(every, steps + 1, every))
    assert not list(out.glob(".*.tmp*"))
    return out


def test_kill_and_resume_a_real_training_subprocess(tmp_path, keras):
    """SIGKILL a TensorFlow-backend training process mid-run; --resume continues from the
    last checkpoint to the same weights as an uninterrupted run."""
    steps, every = 300, 10
    out = _kill_and_resume(tmp_path, "tensorflow", steps, every)
    cfg = TC.train_config(resolve_profile("fast"), steps=steps, checkpoint_every=every)
    reference = T.train(cfg, tmp_path / "reference", progress=False, verbose=False)
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    for a, b in zip(weights_of(model), weights_of(reference.model)):
        np.testing.assert_array_equal(a, b)


JAX_REFERENCE = """
import sys, numpy as np, keras
from cpm_nb.core.config import resolve_profile
from cpm_nb.data.synthetic_set import SyntheticSpec
from cpm_nb.training import loop as T
from cpm_nb.training import config as TC
cfg = TC.train_config(resolve_profile("fast"), steps={steps}, checkpoint_every={every})
ref = T.train(cfg, sys.argv[1], progress=False, verbose=False)
killed = keras.saving.load_model(sys.argv[2] + "/model.keras", safe_mode=True)
diff = max(float(np.max(np.abs(a - b))) for a, b in zip(ref.model.get_weights(),
                                                         killed.get_weights()))
print("backend", keras.config.backend(), "max abs weight difference", diff)
"""


def test_kill_and_resume_on_the_jax_backend(tmp_path):
    pytest.importorskip("jax")
    steps, every = 300, 10
    out = _kill_and_resume(tmp_path, "jax", steps, every)
    script = JAX_REFERENCE.format(steps=steps, every=every)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "ref"), str(out)],
                          cwd=REPO, env={**ENV, "KERAS_BACKEND": "jax"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "backend jax max abs weight difference 0.0" in done.stdout


NO_TENSORFLOW = """
import importlib.abc, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            raise ImportError("tensorflow is not installed here (blocked for this test)")

sys.meta_path.insert(0, NoTensorFlow())  # `import tensorflow` now raises ImportError
from cpm_nb.cli import app as cli
code = cli.main(["--profile", "fast", "train", "--out", sys.argv[1], "--steps", "10",
                 "--checkpoint-every", "5", "--no-progress", "--json"])
assert code == 0, code
code = cli.main(["--profile", "fast", "evaluate", "--model", sys.argv[1]])
print("exit", code, "tensorflow imported:", "tensorflow" in sys.modules)
"""


def test_training_without_tensorflow(tmp_path):
    """With only JAX and Keras (tensorflow unimportable), synthetic data is prepared, a model
    trains and is evaluated: the NumPy/PIL input path and pure-Python records."""
    pytest.importorskip("jax")
    env = {**ENV, "KERAS_BACKEND": "jax", "CPM_NB_DATA": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(tmp_path / "run")], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "exit 0 tensorflow imported: False" in done.stdout
    assert (tmp_path / "run" / "model.keras").is_file()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, keras):
    def poisoned(folder, cfg, start_step, steps, input_path="auto"):
        batches = data.NumpyBatches(folder, "train", cfg.batch_size, cfg.seed, start_step, steps,
                                    outputs=cfg.stages)
        for i, (images, targets) in enumerate(batches.iterate()):
            images = images.astype(np.float32)
            if start_step + i >= 7:  # the 8th step sees NaN pixels
                images = images * np.nan
            yield images, targets

    monkeypatch.setattr(data, "fit_batches", poisoned)
    cfg = TC.train_config(resolve_profile("fast"), checkpoint_every=5)
    with pytest.raises(T.TrainingDiverged, match=r"NaN between steps 6 and 10.*checkpoint "
                                                 r"\(step 5\)"):
        T.train(cfg, tmp_path, progress=False, verbose=False)
    arrays, state = runs.read_checkpoint(tmp_path / "checkpoint.npz")
    assert state["step"] == 5 and all(np.all(np.isfinite(a)) for a in arrays.values())
    assert not (tmp_path / "model.keras").exists()


# --- cache and CLI ------------------------------------------------------------------------


def test_load_or_train_reuses_the_cached_run(tmp_path, capsys, keras):
    first = T.load_or_train(resolve_profile("fast"), cache_dir=tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "training fast-2st-synthetic-" in out and "about" in out  # the estimate first
    assert first.run_dir.parent == tmp_path and (first.run_dir / "model.keras").is_file()
    t0 = time.perf_counter()
    again = T.load_or_train(resolve_profile("fast"), cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - t0 < 10
    assert "loaded the cached run" in capsys.readouterr().out
    for a, b in zip(weights_of(first.model), weights_of(again.model)):
        np.testing.assert_array_equal(a, b)
    assert again.meta["stages"] == 2 and again.meta["training"]["profile"] == "fast"
    assert runs.cached(TC.train_config(resolve_profile("fast"), stages=3), tmp_path) is None


def test_cli_evaluate_json(fast_run, tmp_path, capsys):
    from cpm_nb.cli import app as cli

    _, out, result = fast_run
    target = tmp_path / "scores.json"
    assert cli.main(["--profile", "fast", "evaluate", "--model", str(out), "--json-out",
                     str(target)]) == 0
    printed = capsys.readouterr().out
    assert "PCKh@0.5" in printed and "article 25-px metric" in printed
    scores = json.loads(target.read_text())
    assert scores["mean"] == pytest.approx(result.metrics["mean"])
    assert cli.main(["evaluate", "--model", str(tmp_path / "nothing")]) == 2


@pytest.mark.parametrize("argv, message", [
    (["--stages", "100000"], "must be an integer from 1 to 12, got 100000"),
    (["--stop-after", "-3"], "must be an integer >= 1, got -3"),
    (["--steps", "0"], "must be an integer >= 1, got 0"),
    (["--lr", "nan"], "must be a number > 0, got nan"),
    (["--eval-every", "7", "--checkpoint-every", "5"], "multiple of checkpoint_every"),
])
def test_cli_train_rejects_bad_numbers(tmp_path, capsys, argv, message):
    from cpm_nb.cli import app as cli

    try:
        code = cli.main(["--profile", "fast", "train", "--out", str(tmp_path / "r"), *argv])
    except SystemExit as stop:  # argparse's own range errors
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_cli_help_teaches():
    done = subprocess.run([sys.executable, "-m", "cpm_nb", "train", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--resume" in done.stdout and "examples:" in done.stdout


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_and_checkpoints_on_cpu(tmp_path, keras, precision, monkeypatch):
    """The GPU code path (16-bit compute; loss scaling for float16) runs and resumes on the
    CPU too, and exports a float32 model."""
    cfg = TC.train_config(resolve_profile("fast"), precision=precision, steps=4, checkpoint_every=2)
    model = T.compile_model(cfg)
    assert model.outputs[0].dtype == precision.split("_")[1] and model.weights[0].dtype == "float32"
    assert (type(model.optimizer).__name__ == "LossScaleOptimizer") == (
        precision == "mixed_float16")
    assert str(keras.config.dtype_policy().name) == "float32"  # the global policy is restored
    T.train(cfg, tmp_path, progress=False, verbose=False, stop_after=2)
    scored, validate = [], T.validate
    monkeypatch.setattr(T, "validate", lambda m, *a, **k: scored.append(m) or validate(m, *a, **k))
    result = T.train(cfg, tmp_path, resume=True, progress=False, verbose=False)
    assert scored[-1].outputs[0].dtype == "float32"  # the final score is the exported model's
    assert result.step == 4 and np.isfinite(result.history["loss"]).all()
    exported = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert exported.outputs[0].dtype == "float32"
    # the recorded score is the exported float32 model's, not the 16-bit training model's
    rescored = evaluation.evaluate(exported, T.data_dir(cfg), batch_size=max(cfg.batch_size, 32))
    assert result.metrics["mean"] == rescored["mean"] == result.history["val_pckh"][-1]




@pytest.mark.parametrize("argv, message", [
    (["evaluate", "--split", "bogus"], "invalid choice: 'bogus'"),
    (["evaluate", "--max-examples", "-1"], "must be >= 1"),
])
def test_cli_evaluate_rejects_bad_options(fast_run, capsys, argv, message):
    from cpm_nb.cli import app as cli

    _, out, _ = fast_run
    try:
        code = cli.main(["--profile", "fast", argv[0], "--model", str(out), *argv[1:]])
    except SystemExit as stop:
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_cli_train_out_that_is_a_file_fails_before_any_work(tmp_path, capsys):
    from cpm_nb.cli import app as cli

    target = tmp_path / "model.txt"
    target.write_text("keep me")
    assert cli.main(["--profile", "fast", "train", "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and err.count("\n") == 1
    assert target.read_text() == "keep me"


def test_headless_notebook_training_prints_progress_lines(monkeypatch, capsys, tmp_path):
    """In a notebook run by `cpm-nb notebooks` (static mode) there is no progress bar: the
    run prints a line about every tenth of the steps, which the console forwards."""
    from cpm_nb.training import config as TC
    from cpm_nb.training import loop as T

    monkeypatch.setenv("CPM_NB_STATIC", "1")
    T.train(TC.train_config(resolve_profile("fast"), steps=20, eval_every=0), tmp_path / "run", resume=False)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("training fast")]
    assert [x.split(", ")[0] for x in lines] == ["training fast (2 stages): 10/20 steps",
                                                 "training fast (2 stages): 20/20 steps"], lines
    assert all("loss " in x for x in lines)
