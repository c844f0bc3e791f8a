"""Training: the run configuration, the loss, the fit loop, run folders, experiments (the
stage experiment at equal compute or equal steps, its committed curves at equal steps, and
the attribution ablations).

The names below are imported from their modules on first use (:class:`CPMLoss` and
:class:`WarmUp` import Keras).
"""

import importlib

_HOMES = {  # name -> the module it lives in
    "TrainConfig": "config",
    "TRAINING": "config",
    "train_config": "config",
    "train": "loop",
    "train_cached": "loop",
    "load_or_train": "loop",
    "TrainResult": "loop",
    "TrainingDiverged": "loop",
    "Trained": "runs",
    "load_run": "runs",
    "run_dir": "runs",
    "CPMLoss": "loss",
    "WarmUp": "schedules",
    "StageExperiment": "experiments",
    "EXPERIMENTS": "experiments",
    "run_stage_experiment": "experiments",
    "paired_stages": "experiments",
    "equal_step_report": "equal_steps",
    "run_ablations": "ablations",
    "Variant": "ablations",
}

__all__ = list(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
