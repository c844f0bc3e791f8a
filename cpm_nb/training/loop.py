"""Training CPM with ``keras.Model.fit``: the same code on TensorFlow and on JAX.

:func:`train` builds the network of a :class:`~cpm_nb.training.config.TrainConfig`
with L2 weight decay on its kernels, compiles it with the CPM loss on every stage
(:class:`cpm_nb.training.loss.CPMLoss`: intermediate supervision, targets rendered in the
graph from the packed joints), the optimizer and schedule of the profile, the
dtype policy and XLA setting of the machine (:func:`~cpm_nb.training.config.devices_for`),
and calls ``fit`` on the run's batches (:mod:`cpm_nb.data.batches`: tf.data, or a
``PyDataset`` without TensorFlow).

One Keras *epoch* is one checkpoint interval (``checkpoint_every`` steps); everything around
the steps is a callback (:mod:`cpm_nb.training.callbacks`: the learning curves, a NaN stop,
periodic validation, TensorBoard scalars, atomic checkpoints, progress).

A resumed run restores every variable of the model and the optimizer (its step
counter, hence the learning rate) and asks the data for the batches from its step
on: its history continues with no gap or repeat and its final weights equal those
of an uninterrupted run.  The run folder is locked while a process trains in it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpm_nb.core import config as _config
from cpm_nb.core import files
from cpm_nb.core.errors import CpmError, DataError
from cpm_nb.core.progress import resolve_mode
from cpm_nb.training import presets, runs
from cpm_nb.training.callbacks import Run, log_validation, make_callbacks, scalar_writer, validate
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
    """What :func:`train` returns: ``model`` is the training model (its optimizer, its dtype
    policy); ``exported`` the float32 copy written to ``model.keras``, which ``metrics`` score."""

    model: object
    out: Path
    step: int
    history: dict
    metrics: dict = field(default_factory=dict)
    wall_s: float = 0.0
    resumed_from: int = 0
    exported: object = None


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
    run = Run(cfg, out, start, history, folder)
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
            result.metrics, result.exported = validate(shipped, run), shipped
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
