"""Run folders: where a training run lives, its checkpoints, its lock, its model.

A run folder ``OUT`` holds

* ``checkpoint.npz`` -- every variable of the model and of the optimizer **by name**
  (``model/conv1_1/kernel``, ``optimizer/adam/iteration``, ...), the step, the
  configuration's key and the history.  Written to a temporary file in the same
  folder, flushed, ``fsync``-ed and moved over the old one (``os.replace``, atomic on
  POSIX and on Google Drive's FUSE mount): a run killed at any moment leaves the
  old or the new checkpoint, never half of one;
* ``history.json`` (the learning curves), ``train_config.json``, ``logs/``
  (TensorBoard scalars);
* at the end ``model.keras`` (native Keras format: a :class:`~cpm_nb.model.network.CPM`
  of built-in layers that carries its configuration; loads in safe mode) and
  ``cpm_config.json`` (architecture, joints, input size, normalisation, training
  configuration, metrics) -- both swapped in atomically, so an earlier model stays
  until the new one is complete;
* ``.lock`` -- while a process trains into the folder: its lock
  (:func:`cpm_nb.core.files.locked`), removed when the run ends.

:func:`load_run` is the one loader of finished runs (training's cache, evaluation,
prediction).
"""

from __future__ import annotations

import io
import os
import re
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cpm_nb.core import config as _config
from cpm_nb.core import files, paths, skeleton
from cpm_nb.core.errors import DataError, ModelError

CHECKPOINT = "checkpoint.npz"
HISTORY = "history.json"
MODEL_FILE = "model.keras"
CONFIG_FILE = "cpm_config.json"
TRAIN_CONFIG_FILE = "train_config.json"


class RunError(ModelError):
    """A run folder, checkpoint or model file that cannot be used (message names the file)."""


class RunLocked(files.FolderLocked):
    """Another process is training into the same run folder."""


def default_runs_dir() -> Path:
    """Where cached runs live: :func:`cpm_nb.core.paths.runs_root` (``$CPM_NB_RUNS``, Drive on
    Colab, ``runs/`` of the checkout, else the user's cache)."""
    return paths.runs_root()


def run_dir(cfg, cache_dir=None) -> Path:
    """The cache folder of a :class:`~cpm_nb.training.config.TrainConfig`."""
    return Path(cache_dir or default_runs_dir()) / cfg.run_name


# --- the lock ----------------------------------------------------------------------------------


def run_lock(out, wait: bool = False):
    """Hold the run folder's lock (:func:`cpm_nb.core.files.locked`) while training into
    ``out``: two processes never train the same run folder at once.  ``wait=False``
    raises :class:`RunLocked` when another process holds it."""
    busy = None if wait else RunLocked(f"{out} is being trained by another process; wait "
                                       "for it to finish (load_or_train waits by itself)")
    return files.locked(out, busy=busy)


# --- checkpoints (variables by name) -----------------------------------------------------------


def named_variables(model, optimizer) -> dict:
    """``{"model/<path>": var, "optimizer/<path>": var}`` of every variable to checkpoint."""
    out = {f"model/{v.path}": v for v in model.weights}
    out.update({f"optimizer/{_stable_path(v.path)}": v for v in optimizer.variables})
    if len(out) != len(model.weights) + len(optimizer.variables):
        raise RunError("two variables share a name: cannot checkpoint by name")
    return out


def _stable_path(path: str) -> str:
    """An optimizer variable's path without the number Keras appends to a repeated optimizer
    name (``adam_2/iteration`` -> ``adam/iteration``)."""
    head, _, rest = path.partition("/")
    return re.sub(r"_\d+$", "", head) + "/" + rest


def save_checkpoint(path, model, optimizer, state: dict) -> None:
    """Every variable by name plus ``state`` (JSON-able) as one npz, atomically.  Refuses
    non-finite values (the last good checkpoint stays)."""
    arrays = {name: np.asarray(v) for name, v in named_variables(model, optimizer).items()}
    bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
    if bad:
        raise RunError(f"refusing to checkpoint non-finite values (first: {bad[0]})")
    arrays["state"] = np.frombuffer(files.json_text(state, indent=None).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    files.atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path) -> tuple[dict, dict]:
    """``({name: array}, state)`` of a checkpoint; :class:`RunError` (one line, naming the
    file) when it is missing, truncated or not a checkpoint."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        state = files.parse_json(bytes(arrays.pop("state")), str(path), "training state")
    except FileNotFoundError:
        raise RunError(f"no checkpoint at {path}") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile,
            UnicodeDecodeError) as err:
        raise RunError(f"{path} is not a readable checkpoint ({type(err).__name__}: "
                       f"{' '.join(str(err).split())[:120]}); delete it to start the run "
                       "afresh, or restore it from a copy") from None
    if not isinstance(state, dict) or "step" not in state:
        raise RunError(f"{path} holds no training state: not a cpm-nb checkpoint")
    check_step(state, path)
    if not isinstance(state.get("history", {}), dict):
        raise RunError(f"{path}: the training history is not a JSON object; the checkpoint "
                       "is damaged: delete it to start the run afresh")
    bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
    if bad:
        raise RunError(f"{path}: {bad[0]} holds NaN or infinite values; the checkpoint is "
                       "damaged: delete it to start the run afresh")
    return arrays, state


MAX_STEP = 10**9  # no run takes a billion steps: a larger step is a damaged checkpoint


def check_step(state: dict, path, steps: int | None = None) -> int:
    """The checkpoint's step: an integer from 0 to ``steps`` (the run's length, when
    given; else :data:`MAX_STEP`); :class:`RunError` naming ``path`` otherwise ("abc",
    -5, 1e12, 3.5)."""
    step, top = state.get("step"), MAX_STEP if steps is None else steps
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step <= top:
        raise RunError(f"{path}: step {step!r} is not an integer from 0 to {top}; the "
                       "checkpoint is damaged or from another run: delete it to start afresh")
    return step


def restore_checkpoint(path, model, optimizer) -> dict:
    """Assign every variable of ``model`` and ``optimizer`` from ``path`` by name; a missing
    or extra name, or a shape mismatch, is a :class:`RunError` naming it."""
    arrays, state = read_checkpoint(path)
    variables = named_variables(model, optimizer)
    missing = [n for n in variables if n not in arrays]
    extra = [n for n in arrays if n not in variables]
    if missing or extra:
        what = (f"it lacks {missing[0]}" if missing else f"it has {extra[0]}, which this "
                "model does not")
        raise RunError(f"{path} does not fit this model and optimizer: {what} "
                       f"({len(missing)} missing, {len(extra)} extra variables)")
    for name, var in variables.items():
        value = arrays[name]
        if tuple(value.shape) != tuple(var.shape):
            raise RunError(f"{path}: {name} has shape {value.shape}, the model "
                           f"{tuple(var.shape)}")
        var.assign(value)
    return state


# --- the finished model ------------------------------------------------------------------------


def model_metadata(model, cfg, scores: dict, history: dict, devices: dict | None = None) -> dict:
    """The ``cpm_config.json`` of a finished run."""
    from cpm_nb.core.runtime import versions
    from cpm_nb.training.loss import mse_scale

    mcfg = model.cpm_config
    return {
        "format": "cpm-nb-model",
        "version": 2,
        "model_file": MODEL_FILE,
        "cpm_config": mcfg.to_dict(),
        "joints": list(skeleton.JOINT_NAMES),
        "joint_short_names": list(skeleton.SHORT_NAMES),
        "input_size": mcfg.input_size,
        "map_size": mcfg.map_size,
        "stride": _config.OUTPUT_STRIDE,
        "stages": mcfg.stages,
        "outputs": mcfg.output_names,
        "input": "RGB uint8/float32 0..255, [B, S, S, 3], person centred, 200*scale px = "
                 f"{1.171 * 200 / 368:.3f} x S (see cpm_nb.data.preprocess)",
        "normalisation": "inside the model: layer 'normalize' computes x / 256 - 0.5",
        "sigma": cfg.sigma,
        "loss": "sum over stages of 0.5 * summed squared error per image (Caffe "
                "EuclideanLoss), batch mean; + weight_decay/2 * sum ||kernel||^2",
        "mse_scale": mse_scale(mcfg.map_size, mcfg.num_maps),
        "training": cfg.to_json(),
        "data_source": data_source(cfg),
        "profile": cfg.profile,
        "data": cfg.data,
        "steps": cfg.steps,
        "wall_s": round(float(history.get("wall_s", 0.0)), 1),
        "devices": devices or {},  # what it trained on: precision, XLA, GPUs
        "metrics": scores,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def export(out, model, cfg, scores: dict, history: dict, devices: dict | None = None) -> dict:
    """Write ``model.keras`` and ``cpm_config.json`` (each swapped in atomically)."""
    out = Path(out)
    meta = model_metadata(model, cfg, scores, history, devices)
    with files.atomic_output(out / MODEL_FILE) as tmp:
        model.save(tmp.with_suffix(".keras"))  # Keras insists on the suffix
        os.replace(tmp.with_suffix(".keras"), tmp)
    files.atomic_write_json(out / CONFIG_FILE, meta)
    return meta


class Trained(NamedTuple):
    """A trained model, its ``cpm_config.json`` metadata and its run folder."""

    model: object
    meta: dict
    run_dir: Path


def read_metadata(config_file) -> dict:
    try:
        meta = files.read_json(config_file, "model description")
    except DataError as err:
        raise RunError(str(err)) from None
    if not isinstance(meta, dict):
        raise RunError(f"{config_file} does not hold a JSON object")
    return meta


def load_run(path) -> Trained:
    """A finished run: a run folder (``model.keras`` + ``cpm_config.json``) or a ``.keras``
    file (its folder's ``cpm_config.json`` is used when it names that file; else the
    metadata is ``{}``).  Loads in Keras safe mode (:func:`cpm_nb.model.network.load_keras`):
    a model file written before models carried their configuration gets the one of
    ``cpm_config.json``.  :class:`RunError` with a one-line reason otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        model_file, config_file = path / MODEL_FILE, path / CONFIG_FILE
        if not model_file.is_file() and _is_export(path):
            raise RunError(f"{path} is an export folder (SavedModel / TFLite, for serving); "
                           "pass the run folder it was exported from, or its model.keras")
        if not model_file.is_file():
            raise RunError(f"no {MODEL_FILE} in {path}: not a finished run folder "
                           "(train one with `cpm-nb train`)")
        if not config_file.is_file():
            raise RunError(f"no {CONFIG_FILE} next to {model_file}")
    elif path.is_file():
        if path.suffix != ".keras":
            raise RunError(f"{path} is not a .keras file or a run folder")
        model_file, config_file = path, path.parent / CONFIG_FILE
    else:
        raise RunError(f"model not found: {path} (give a run folder of `cpm-nb train`, "
                       "e.g. runs/cpu-3st-synthetic-<hash>, or a .keras file)")
    meta = {}
    if config_file.is_file():
        meta = read_metadata(config_file)
        if path.is_file() and meta.get("model_file", MODEL_FILE) != path.name:
            meta = {}  # it describes another file of the folder
    from cpm_nb.core.errors import ConfigError
    from cpm_nb.model.architecture import CPMConfig
    from cpm_nb.model.network import load_keras

    try:
        saved = meta.get("cpm_config")
        config = CPMConfig.from_dict(saved) if saved else None
    except ConfigError as err:
        raise RunError(f"{config_file}: {err}; restore the file or re-create the run") \
            from None
    try:
        model = load_keras(model_file, config)
    except (ModelError, ConfigError) as err:
        raise RunError(str(err)) from None
    _check_against_metadata(model, config, model_file, config_file)
    return Trained(model, meta, model_file.parent)


# what a network is: a model file whose configuration differs from its cpm_config.json in
# one of these was swapped or damaged
IDENTITY = ("input_size", "stages", "num_joints", "background", "center_map", "width",
            "stage_kernel")


def _check_against_metadata(model, config, model_file, config_file) -> None:
    """The loaded network is the one ``cpm_config.json`` describes (a swapped
    ``model.keras`` in a cache folder is caught, not trained on or scored)."""
    carried = getattr(model, "cpm_config", None)
    if config is None or carried is None:
        return
    differs = [k for k in IDENTITY if getattr(carried, k, None) != getattr(config, k, None)]
    if differs:
        has = ", ".join(f"{k} {getattr(carried, k, None)}" for k in differs)
        said = ", ".join(f"{k} {getattr(config, k, None)}" for k in differs)
        raise RunError(f"{model_file} holds another configuration than {config_file} "
                       f"describes (the model: {has}; the description: {said}); the folder "
                       "was changed by hand: delete it or re-create the run")


def _is_export(folder: Path) -> bool:
    return (folder / "saved_model").is_dir() or any(folder.glob("*.tflite"))


def cached(cfg, cache_dir=None) -> Path | None:
    """The run folder of a finished run of ``cfg`` in the cache, if there is one: same
    configuration key, and trained on the data that is there now (the fingerprint it
    recorded, when it did, equals the data folder's: a set prepared again differently
    means training again)."""
    folder = run_dir(cfg, cache_dir)
    try:
        meta = files.read_json(folder / CONFIG_FILE)
    except DataError:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("training"), dict):
        return None
    if meta["training"].get("key") != cfg.key() or not (folder / MODEL_FILE).is_file():
        return None
    recorded = (meta.get("data_source") or {}).get("fingerprint")
    now = data_fingerprint(data_folder(cfg))
    if recorded and now and recorded != now:
        return None
    return folder


# --- what the run was trained on -----------------------------------------------------------------

# fields of a prepared folder's meta.json that change from one preparation of the same data
# to the next (timings), left out of its fingerprint
_VOLATILE = ("seconds", "created", "wall_s")


def data_folder(cfg) -> Path | None:
    """The prepared folder ``cfg`` trains on (not made here: None for a synthetic set
    that is not rendered yet is fine)."""
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    spec = getattr(cfg, "synthetic", None)
    return spec.tfrecord_dir if spec is not None else None


def data_fingerprint(folder) -> str | None:
    """A hash of the prepared folder's ``meta.json`` (what was prepared, its shards and
    their sizes, timings left out), or None when there is none."""
    import hashlib
    import json

    from cpm_nb.data.shards import META_FILE

    if folder is None:
        return None
    try:
        meta = files.read_json(Path(folder) / META_FILE)
    except DataError:
        return None

    def stable(obj):
        if isinstance(obj, dict):
            return {k: stable(v) for k, v in obj.items() if k not in _VOLATILE}
        if isinstance(obj, list):
            return [stable(v) for v in obj]
        return obj

    text = json.dumps(stable(meta), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def data_source(cfg) -> dict:
    """What ``cpm_config.json`` records of the data: the folder, its fingerprint and,
    for the synthetic set, the generator version that drew it."""
    folder = data_folder(cfg)
    spec = getattr(cfg, "synthetic", None)
    return {"folder": str(folder) if folder else None,
            "fingerprint": data_fingerprint(folder),
            "generator_version": spec.generator_version if spec is not None and
            cfg.data == "synthetic" else None}
