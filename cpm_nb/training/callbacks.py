"""The callbacks of a training run's ``fit`` calls, its TensorBoard scalars and its validation.

One Keras *epoch* is one checkpoint interval (``checkpoint_every`` steps); the callbacks
share a :class:`Run` (the step, the history, what stopped the run):

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
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from cpm_nb.core import files
from cpm_nb.core.progress import resolve_mode
from cpm_nb.training import runs
from cpm_nb.training.config import TrainConfig


def _callback_base():
    from cpm_nb.core.runtime import import_keras

    return import_keras().callbacks.Callback


class Run:
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


def make_callbacks(run: Run, end: int, checkpoint_on_stop: bool, progress: bool | str,
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


def validate(model, run: Run, max_examples: int | None = None) -> dict:
    """Score ``model`` on the validation split and record it in the run's history."""
    from cpm_nb.evaluation import evaluate as evaluation

    scores = evaluation.evaluate(model, run.folder, batch_size=max(run.cfg.batch_size, 32),
                                 max_examples=max_examples)
    run.last_val = scores["mean"]
    run.history["val_step"].append(run.step)
    run.history["val_pckh"].append(scores["mean"])
    run.history["val_per_stage"].append(scores["per_stage"])
    return scores
