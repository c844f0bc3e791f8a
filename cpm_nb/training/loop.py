"""Training CPM with ``keras.Model.fit``: the same code on TensorFlow and on JAX.

:func:`train` builds the network of a :class:`~cpm_nb.training.config.TrainConfig`
with L2 weight decay on its kernels, compiles it with the CPM loss on every stage
(:class:`cpm_nb.training.loss.CPMLoss`: intermediate supervision, targets rendered in the
graph from the packed joints), the optimizer and schedule of the profile, the
dtype policy and XLA setting of the machine (:func:`~cpm_nb.training.config.devices_for`),
and calls ``fit`` on the run's batches (:mod:`cpm_nb.data.batches`: tf.data, or a
``PyDataset`` without TensorFlow).

One Keras *epoch* is one checkpoint interval (``checkpoint_every`` steps).
Everything around the steps is a callback:

* :class:`RunHistory` -- the learning curves (objective, data loss, loss of every
  stage, learning rate) per interval, and the wall time;
* :class:`StopOnNaN` -- a NaN/Inf loss stops the run at the end of the interval with a
  message that names it; no checkpoint is written after it, so the last good one stays
  (the loss is read once per interval, not after every step, which would make the
  host wait for the accelerator each time);
* :class:`PeriodicValidation` -- validation PCKh@0.5 (overall and per stage) every
  ``eval_every`` steps;
* :class:`Scalars` -- TensorBoard scalars in ``OUT/logs`` (:func:`scalar_writer`, on any
  backend; the final validation's point is written after the last ``fit``);
* :class:`Checkpoint` -- ``OUT/checkpoint.npz`` (variables by name, the step, the
  history) and ``OUT/history.json``, both atomic (:mod:`cpm_nb.training.runs`);
* :class:`Progress` -- a progress bar over the whole run, or headless a line about every
  tenth of it (:mod:`cpm_nb.core.progress`).

A resumed run restores every variable of the model and the optimizer (its step
counter, hence the learning rate) and asks the data for the batches from its step
on: its history continues with no gap or repeat and its final weights equal those
of an uninterrupted run.  The run folder is locked while a process trains in it.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpm_nb.core import config as _config
from cpm_nb.core import files
from cpm_nb.core.errors import CpmError, DataError
from cpm_nb.core.progress import resolve_mode
from cpm_nb.training import presets, runs
from cpm_nb.training.config import (
    ConfigMismatch,
    TrainConfig,
    devices_for,
    estimate_message,
    train_config,
)


class TrainingDiverged(CpmError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: object
    out: Path
    step: int
    history: dict
    metrics: dict = field(default_factory=dict)
    wall_s: float = 0.0
    resumed_from: int = 0


def empty_history() -> dict:
    return {"step": [], "loss": [], "data_loss": [], "stage_loss": [], "lr": [],
            "val_step": [], "val_pckh": [], "val_per_stage": [], "wall_s": 0.0}


# --- data and model ------------------------------------------------------------------------------


def data_dir(cfg: TrainConfig) -> Path:
    """The prepared folder of the run's data: ``cfg.data_dir``, or its synthetic set
    (:class:`~cpm_nb.data.synthetic_set.SyntheticSpec`), made ready on demand."""
    if cfg.data == "mpii" and not cfg.data_dir:
        raise DataError("MPII training needs the folder of the converted data (data_dir: "
                        "ROOT/tfrecords-<size>, written by `cpm-nb prepare mpii`)")
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    from cpm_nb.data.synthetic_set import prepare_synthetic

    return prepare_synthetic(cfg.synthetic).folder


def compile_model(cfg: TrainConfig, dev=None):
    """The CPM of ``cfg`` (seeded, L2 on its kernels), compiled with the CPM loss, the
    optimizer and the dtype policy / XLA / distribution of ``dev``."""
    from cpm_nb.core.runtime import import_keras, keras_backend
    from cpm_nb.model import cpm as M
    from cpm_nb.training.config import devices_for, make_optimizer
    from cpm_nb.training.loss import CPMLoss

    keras = import_keras()
    dev = dev or devices_for(cfg)
    scope = _distribution_scope(dev)
    previous = keras.config.dtype_policy()
    with scope:
        keras.config.set_dtype_policy(dev.precision)
        try:
            model = M.build_cpm(cfg.model, seed=cfg.seed, weight_decay=cfg.weight_decay)
        finally:
            keras.config.set_dtype_policy(previous)
        loss = CPMLoss(cfg.input_size, cfg.sigma, background=cfg.model.background)
        weights = loss_weights(cfg)
        if weights is not None:  # Keras weighs a list of losses, one per output
            loss = [loss] * cfg.stages
        model.compile(optimizer=make_optimizer(cfg), loss=loss, loss_weights=weights,
                      jit_compile=True if keras_backend() == "jax" else dev.xla)
        model.optimizer.build(model.trainable_variables)
    return model


def loss_weights(cfg: TrainConfig) -> list[float] | None:
    """The weight of each stage's loss: None (every stage 1, intermediate supervision), or
    for ``supervision="last"`` 0 for every stage but the last (their heads then learn only
    what the later stages need of their maps, not beliefs: their scores are a reference)."""
    if cfg.supervision == "all":
        return None
    return [0.0] * (cfg.stages - 1) + [1.0]


def _distribution_scope(dev):
    """``dev.distribute``: MirroredStrategy (TensorFlow) or DataParallel (JAX) over every
    accelerator, or, with none, every logical CPU device (tests/test_data_parallel.py splits the
    CPU in two); else nothing.  Each step splits the global batch across the devices."""
    import contextlib

    from cpm_nb.core.runtime import import_keras, keras_backend

    if keras_backend() == "jax":
        # Keras-on-JAX distributes through a process-wide setting, which fit reads too: set
        # it for a distributed run, and clear an earlier run's for one that is not
        # (tests/test_data_parallel.py trains both in one process)
        keras = import_keras()
        current = keras.distribution.distribution()
        if dev.distribute:
            keras.distribution.set_distribution(keras.distribution.DataParallel())
        elif isinstance(current, keras.distribution.DataParallel):
            keras.distribution.set_distribution(None)
        return contextlib.nullcontext()
    if not dev.distribute:
        return contextlib.nullcontext()
    import tensorflow as tf

    return tf.distribute.MirroredStrategy().scope()


def plain_model(model, cfg: TrainConfig):
    """A float32 copy of ``model`` (a :class:`~cpm_nb.model.network.CPM`) without regularizers
    or optimizer: what is exported."""
    from cpm_nb.model import cpm as M

    plain = M.build_cpm(cfg.model, seed=cfg.seed)
    plain.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    return plain


# --- callbacks -----------------------------------------------------------------------------------


def _callback_base():
    from cpm_nb.core.runtime import import_keras

    return import_keras().callbacks.Callback


class _Run:
    """The state the callbacks share: the step, the history, what stopped the run."""

    def __init__(self, cfg: TrainConfig, out: Path, start: int, history: dict, folder: Path):
        self.cfg, self.out, self.step, self.history, self.folder = cfg, out, start, history, folder
        self.diverged: str | None = None
        self.last_val: float | None = (history["val_pckh"] or [None])[-1]
        self.t0 = time.perf_counter()
        self.wall0 = float(history.get("wall_s", 0.0))

    def wall(self) -> float:
        return self.wall0 + time.perf_counter() - self.t0

    def state(self) -> dict:
        self.history["wall_s"] = self.wall()
        return {"step": self.step, "key": self.cfg.key(), "config": self.cfg.to_json(),
                "history": self.history, "data_position": self.step * self.cfg.batch_size}


def _finite(value) -> float:
    return float(np.asarray(value))


def make_callbacks(run: _Run, end: int, checkpoint_on_stop: bool, progress: bool | str,
                   writer) -> list:
    """The callbacks of one ``fit`` call (see the module docstring), in the order they run."""
    Callback = _callback_base()
    cfg = run.cfg
    stage_keys = [f"{name}_loss" for name in cfg.model.output_names]

    class StopOnNaN(Callback):
        # Checked once per interval, from the interval's mean loss: reading the loss after
        # every step would wait for the accelerator each time.
        def on_train_batch_end(self, batch, logs=None):
            run.step += 1

        def on_epoch_end(self, epoch, logs=None):
            loss = _finite((logs or {}).get("loss", 0.0))
            if not math.isfinite(loss):
                first = run.history["step"][-1] + 1 if run.history["step"] else 1
                run.diverged = (f"loss became {'NaN' if math.isnan(loss) else 'infinite'} "
                                f"between steps {first} and {run.step}")
                self.model.stop_training = True

    class RunHistory(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if run.diverged:
                return
            logs = logs or {}
            stages = [_finite(logs[k]) for k in stage_keys if k in logs]
            h = run.history
            h["step"].append(run.step)
            h["loss"].append(_finite(logs["loss"]))
            h["data_loss"].append(sum(stages) if stages else _finite(logs["loss"]))
            h["stage_loss"].append(stages)
            from cpm_nb.training.config import current_lr

            h["lr"].append(current_lr(self.model.optimizer))

    class PeriodicValidation(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if run.diverged or not cfg.eval_every or run.step % cfg.eval_every:
                return
            if run.step < cfg.steps:  # the final evaluation follows training
                validate(self.model, run, cfg.eval_examples or None)

    class Scalars(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if run.diverged or not run.history["step"] or run.history["step"][-1] != run.step:
                return
            log_training(writer, run.history, run.step)
            log_validation(writer, run.history, run.step)

    class Checkpoint(Callback):
        def on_epoch_end(self, epoch, logs=None):
            due = run.step % cfg.checkpoint_every == 0 or run.step >= cfg.steps or (
                run.step == end and checkpoint_on_stop)
            if run.diverged or not due:
                return
            runs.save_checkpoint(run.out / runs.CHECKPOINT, self.model, self.model.optimizer,
                                 run.state())
            files.atomic_write_json(run.out / runs.HISTORY, run.history)

    class Progress(Callback):
        """The run's progress (:class:`cpm_nb.core.progress.Progress`): a bar counting the
        steps, or headless a line about every tenth of the run, with the last loss and
        validation score."""

        def __init__(self):
            super().__init__()
            from cpm_nb.core.progress import Progress as Bar

            self.bar = Bar(cfg.steps, f"training {cfg.profile} ({cfg.stages} stages)",
                           unit="step", initial=run.step, mode=progress)

        def on_train_batch_end(self, batch, logs=None):
            if self.bar.is_bar:
                self.bar.update(1)

        def on_epoch_end(self, epoch, logs=None):
            if run.history["loss"]:
                post = {"loss": f"{run.history['loss'][-1]:.4g}"}
                if run.last_val is not None:
                    post["val PCKh@0.5"] = f"{run.last_val:.1f}"
                self.bar.set_postfix(post)
            self.bar.update_to(run.step)

        def on_train_end(self, logs=None):
            self.bar.close()

    chain = [StopOnNaN(), RunHistory(), PeriodicValidation(), Scalars(), Checkpoint()]
    return chain + ([Progress()] if resolve_mode(progress) != "off" else [])


# --- TensorBoard ---------------------------------------------------------------------------------


def scalar_writer(folder):
    """A TensorBoard event writer into ``folder`` (``tensorboardX``: it never imports
    TensorFlow, so it writes on any Keras backend; ``tensorboard --logdir`` shows it)."""
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(folder))


def log_training(writer, history: dict, step: int) -> None:
    """The training curves' values of ``step`` (the history's last interval) as scalars."""
    writer.add_scalar("train/objective", history["loss"][-1], step)
    writer.add_scalar("train/data_loss", history["data_loss"][-1], step)
    for s, v in enumerate(history["stage_loss"][-1], 1):
        writer.add_scalar(f"train/loss_stage{s}", v, step)
    writer.add_scalar("train/learning_rate", history["lr"][-1], step)
    writer.flush()


def log_validation(writer, history: dict, step: int) -> None:
    """The validation PCKh@0.5 (overall and per stage) of ``step``, if it was validated."""
    if not history["val_step"] or history["val_step"][-1] != step:
        return
    scores = [("val/pckh_0.5", history["val_pckh"][-1])]
    scores += [(f"val/pckh_0.5_stage{s}", v) for s, v in enumerate(history["val_per_stage"][-1], 1)]
    for tag, value in scores:
        if value is not None:
            writer.add_scalar(tag, value, step)
    writer.flush()


def validate(model, run: _Run, max_examples: int | None = None) -> dict:
    """Score ``model`` on the validation split and record it in the run's history."""
    from cpm_nb.evaluation import evaluate as evaluation

    scores = evaluation.evaluate(model, run.folder, batch_size=max(run.cfg.batch_size, 32),
                                 max_examples=max_examples)
    run.last_val = scores["mean"]
    run.history["val_step"].append(run.step)
    run.history["val_pckh"].append(scores["mean"])
    run.history["val_per_stage"].append(scores["per_stage"])
    return scores


# --- the run -------------------------------------------------------------------------------------


def _segments(start: int, end: int, every: int) -> list[tuple[int, int, int]]:
    """``fit`` calls ``(first step, epochs, steps per epoch)`` covering ``[start, end)`` with
    epochs that end on multiples of ``every`` (a partial one at each end where needed)."""
    out, step = [], start
    if step % every and step < end:
        n = min(every - step % every, end - step)
        out.append((step, 1, n))
        step += n
    if end - step >= every:
        k = (end - step) // every
        out.append((step, k, every))
        step += k * every
    if step < end:
        out.append((step, 1, end - step))
    return out


def train(cfg: TrainConfig, out=None, resume: bool | str = "auto", progress: bool | None = None,
          verbose: bool = True, stop_after: int | None = None, checkpoint_on_stop: bool = True,
          input_path: str = "auto") -> TrainResult:
    """Train ``cfg`` into ``out`` (default: the cache folder :func:`cpm_nb.training.runs.run_dir`).

    ``resume``: ``"auto"`` continues from ``out/checkpoint.npz`` when there is one (its
    configuration must match: :class:`ConfigMismatch` otherwise); ``True`` requires one;
    ``False`` starts afresh (an earlier ``model.keras`` stays until the new one is
    complete).  ``stop_after``: stop after that many steps of this call, with a
    checkpoint unless ``checkpoint_on_stop=False`` (which simulates a kill).
    ``input_path``: ``auto``, ``tf`` or ``numpy`` (:mod:`cpm_nb.data.batches`).  Raises
    :class:`TrainingDiverged` on a NaN/Inf loss (the last good checkpoint stays) and
    :class:`cpm_nb.training.runs.RunLocked` when another process trains into ``out``.
    """
    if stop_after is not None and stop_after < 1:
        raise ValueError(f"stop_after must be >= 1, got {stop_after}")
    out = Path(out) if out is not None else runs.run_dir(cfg)
    with runs.run_lock(out):
        return _train(cfg, out, resume, progress, verbose, stop_after, checkpoint_on_stop,
                      input_path)


def _resume_state(cfg: TrainConfig, out: Path, resume) -> dict | None:
    ckpt = out / runs.CHECKPOINT
    if resume is True and not ckpt.is_file():
        raise runs.RunError(f"nothing to resume: no {runs.CHECKPOINT} in {out} (start a new "
                            "run there instead: resume='auto' or False)")
    if not resume or not ckpt.is_file():
        return None
    _, state = runs.read_checkpoint(ckpt)
    if state.get("key") != cfg.key():
        raise ConfigMismatch(f"{ckpt} was written by a run with another configuration (key "
                             f"{state.get('key')}, this run {cfg.key()}); train into another "
                             "folder, or delete the checkpoint to start that run afresh")
    runs.check_step(state, ckpt, cfg.steps)
    return state


def _train(cfg, out, resume, progress, verbose, stop_after, checkpoint_on_stop, input_path):
    from cpm_nb.core.runtime import seed_everything, static_mode
    from cpm_nb.data import batches as data

    out.mkdir(parents=True, exist_ok=True)
    files.remove_leftovers(out)  # temp files of a writer killed mid-write
    state = _resume_state(cfg, out, resume)
    folder = data_dir(cfg)
    data.check_data(folder, cfg.model)
    input_path = data.resolve_input_path(input_path)
    seed_everything(cfg.seed)
    dev = devices_for(cfg)
    model = compile_model(cfg, dev)
    start, history = 0, empty_history()
    if state is not None:
        state = runs.restore_checkpoint(out / runs.CHECKPOINT, model, model.optimizer)
        start, history = int(state["step"]), state["history"]
    elif cfg.init == "imagenet":  # a new run starts its trunk from VGG-19 (the paper's init)
        from cpm_nb.model.imagenet import init_trunk_from_vgg19

        init_trunk_from_vgg19(model, "imagenet")
    files.atomic_write_json(out / runs.TRAIN_CONFIG_FILE, cfg.to_json())
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    run = _Run(cfg, out, start, history, folder)
    if progress is None:  # a bar, or headless a line about every tenth of the run
        progress = verbose or not static_mode()
    progress = resolve_mode(progress)
    if verbose and start and progress != "bar":
        print(f"resuming {out} at step {start}", file=sys.stderr, flush=True)
    writer = scalar_writer(out / "logs")
    try:
        for first, epochs, per_epoch in _segments(start, end, cfg.checkpoint_every):
            batches = data.fit_batches(folder, cfg, first, epochs * per_epoch, input_path)
            callbacks = make_callbacks(run, end, checkpoint_on_stop, progress, writer)
            model.fit(batches, epochs=epochs, steps_per_epoch=per_epoch, verbose=0,
                      callbacks=callbacks, shuffle=False)
            if run.diverged:
                good = (runs.read_checkpoint(out / runs.CHECKPOINT)[1]["step"]
                        if (out / runs.CHECKPOINT).is_file() else None)
                kept = (f"the last good checkpoint (step {good}) is kept in {out}"
                        if good is not None else "no checkpoint had been written yet")
                raise TrainingDiverged(f"{run.diverged}; {kept}. Lower the learning rate or "
                                       "check the data, then resume the run from it.")
        result = TrainResult(model, out, run.step, history, wall_s=run.wall(),
                             resumed_from=start)
        if run.step >= cfg.steps:
            shipped = plain_model(model, cfg)
            # score the float32 copy that is exported, not the (maybe bf16) training model
            result.metrics = validate(shipped, run)
            log_validation(writer, history, run.step)  # the curve's last point
            runs.save_checkpoint(out / runs.CHECKPOINT, model, model.optimizer, run.state())
            files.atomic_write_json(out / runs.HISTORY, history)
            runs.export(out, shipped, cfg, result.metrics, history, devices=dev._asdict())
            if verbose:
                per_stage = ", ".join(f"{v:.1f}" for v in result.metrics["per_stage"]
                                      if v is not None)
                print(f"trained {cfg.run_name}: {run.step} steps in {result.wall_s:.0f} s, "
                      f"validation PCKh@0.5 {result.metrics['mean']:.1f} % (per stage: "
                      f"{per_stage})", file=sys.stderr, flush=True)
    finally:
        writer.close()
    return result


# --- the cache ---------------------------------------------------------------------------------


def load_or_train(profile: _config.Profile, cache_dir=None, progress: bool | None = None,
                  verbose: bool = True, retrain: bool | None = None,
                  **overrides) -> runs.Trained:
    """The trained model of ``profile`` (a resolved :class:`~cpm_nb.core.config.Profile`):
    a shipped preset of the same configuration, else the cached run, else trained once.

    A preset (:mod:`cpm_nb.training.presets`) whose configuration key matches loads in a
    second, with one line saying how it was trained and how well it scores.  Otherwise the
    run lives in ``<cache_dir>/<profile>-<stages>st-<data>-<config hash>/``
    (:func:`cpm_nb.training.runs.default_runs_dir`); while the configuration matches, later
    calls load it instead of training.  An interrupted run is resumed from its checkpoint;
    a concurrent trainer of the same run is waited for.  ``retrain=True`` (or
    ``CPM_NB_RETRAIN=1`` when ``retrain`` is None) ignores presets and finished runs and
    trains from scratch.  ``overrides``: those of
    :func:`~cpm_nb.training.config.train_config`, e.g. ``stages=6``.
    """
    return train_cached(train_config(profile, **overrides), cache_dir, progress, verbose,
                        retrain)


def retrain_requested(retrain: bool | None = None) -> bool:
    """``retrain``, or when it is None the environment's ``CPM_NB_RETRAIN``."""
    import os

    if retrain is not None:
        return bool(retrain)
    return os.environ.get(presets.RETRAIN_ENV, "").strip().lower() not in ("", "0", "false",
                                                                          "no")


def training_plan(cfg: TrainConfig, cache_dir=None, retrain: bool | None = None) -> str:
    """What :func:`train_cached` will do with ``cfg``, as one line, before doing it: load a
    preset or the cached run, or train (with the expected wall time on this machine)."""
    if not retrain_requested(retrain):
        name = presets.find(cfg.key())
        if name:
            return f"loads the preset {name}"
        folder = runs.cached(cfg, cache_dir)
        if folder:
            return f"loads the cached run {folder.name}"
    return estimate_message(cfg)


def train_cached(cfg: TrainConfig, cache_dir=None, progress: bool | None = None,
                 verbose: bool = True, retrain: bool | None = None) -> runs.Trained:
    """:func:`load_or_train` for a ready :class:`TrainConfig`: a preset of the same
    configuration, else its cached run, else train it once (resuming an interrupted run,
    waiting for a concurrent trainer); ``retrain``: see :func:`load_or_train`."""
    if retrain_requested(retrain):
        folder = runs.run_dir(cfg, cache_dir)
        if verbose:
            print(estimate_message(cfg), flush=True)
        train(cfg, folder, resume=False, progress=progress, verbose=verbose)
        return runs.load_run(folder)
    name = presets.find(cfg.key())
    if name:
        if verbose:
            print(presets.summary(name) + " (retrain: CPM_NB_RETRAIN=1)", flush=True)
        return presets.load(name)
    folder = runs.cached(cfg, cache_dir)
    if folder is None:
        folder = runs.run_dir(cfg, cache_dir)
        if verbose:
            print(estimate_message(cfg), flush=True)
        try:
            train(cfg, folder, resume="auto", progress=progress, verbose=verbose)
        except runs.RunLocked:
            if verbose:
                print(f"another process is training {folder.name}: waiting for it", flush=True)
            with runs.run_lock(folder, wait=True):
                pass
            if runs.cached(cfg, cache_dir) is None:  # it stopped early: resume its checkpoint
                train(cfg, folder, resume="auto", progress=progress, verbose=verbose)
    elif verbose:
        print(f"loaded the cached run {folder.name} (delete the folder to retrain)")
    return runs.load_run(folder)
