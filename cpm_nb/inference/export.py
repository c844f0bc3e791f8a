"""Deployment exports of a trained CPM -- SavedModel and TFLite -- with a parity check.

The native format
-----------------
``cpm-nb train`` already saves what :mod:`cpm_nb.inference.predict` needs: ``model.keras``
(the Keras 3 native format: architecture as JSON -- a :class:`~cpm_nb.model.network.CPM`
with its configuration -- + weights, built-in layers only, loadable with
``safe_mode=True``, i.e. without running any stored Python code) and
``cpm_config.json`` (joints, input size, stages, map stride, normalisation,
training settings and metrics).  The normalisation ``x / 256 - 0.5`` is a layer of
the network, so every export below takes raw RGB 0..255.

Optional exports
----------------
* **SavedModel** (``model.export(dir, format="tf_saved_model")``): a TensorFlow
  graph with a ``serve`` endpoint, for TF Serving or ``tf.saved_model.load``.
* **TFLite** (``tf.lite.TFLiteConverter.from_saved_model``): a flat buffer for
  mobile / edge runtimes (float32, no quantisation).  ``tf.lite.Interpreter``
  is deprecated in favour of the ``ai-edge-litert`` package, but still present in
  TensorFlow 2.21; when the converter or the interpreter is missing, the TFLite
  step is skipped with the reason.

:func:`parity` runs the same images through Keras and each export and reports the
largest absolute difference of the belief maps and of the decoded joints
(``cpm-nb export``, :mod:`cpm_nb.cli.commands.export`, fails when a difference exceeds the
tolerance).
"""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import numpy as np

from cpm_nb.core import files
from cpm_nb.training.runs import CONFIG_FILE

MAPS_ATOL = 1e-4  # belief maps are ~0..1; float32 graph rewrites differ by ~1e-6
JOINTS_ATOL_PX = 0.05  # decoded joints, crop pixels


def _tf():
    from cpm_nb.core.runtime import import_keras

    import_keras()
    import tensorflow as tf

    return tf


def export_savedmodel(model, out) -> Path:
    """Write ``model`` as a TensorFlow SavedModel folder ``out`` (replaced if present)."""
    from cpm_nb.core.runtime import quiet_native_stderr

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    with quiet_native_stderr():
        model.export(str(out), format="tf_saved_model", verbose=False)
    return out


def export_tflite(savedmodel_dir, out_file) -> Path:
    """Convert a SavedModel folder to a float32 ``.tflite`` file."""
    from cpm_nb.core.runtime import quiet_native_stderr

    tf = _tf()
    with quiet_native_stderr():
        converter = tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir))
        data = converter.convert()
    out_file = Path(out_file)
    files.atomic_write_bytes(out_file, data)
    return out_file


def _stage_order(keys) -> list:
    """Output keys in stage order (``output_0``, ``output_1``, ... by their number)."""
    def number(k):
        m = re.findall(r"\d+", str(k))
        return int(m[-1]) if m else 0

    return sorted(keys, key=number)


def savedmodel_runner(folder):
    """``images -> list of per-stage maps`` through a reloaded SavedModel's ``serve``."""
    tf = _tf()
    loaded = tf.saved_model.load(str(folder))

    def run(inputs):
        xs = [tf.constant(np.asarray(x, np.float32))
              for x in (inputs if isinstance(inputs, list) else [inputs])]
        out = loaded.serve(xs if len(xs) > 1 else xs[0])  # two inputs: one list argument
        if isinstance(out, dict):
            out = [out[k] for k in _stage_order(out)]
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in out]

    run.loaded = loaded
    return run


def tflite_runner(path):
    """``images -> list of per-stage maps`` through the TFLite interpreter (signature
    ``serving_default``; resized to the batch on each call)."""
    from cpm_nb.core.runtime import quiet_native_stderr

    tf = _tf()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated" (still works)
        interpreter = tf.lite.Interpreter(model_path=str(path))
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()
    known = [n for n in ("image", "center_map") if n in details]  # the model's input names
    in_names = known if len(known) == len(details) else sorted(
        details, key=lambda k: details[k]["index"])  # (TFLite may put center_map first)

    def run(inputs):
        xs = inputs if isinstance(inputs, list) else [inputs]
        with quiet_native_stderr():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
            out = runner(**{n: np.asarray(x, np.float32) for n, x in zip(in_names, xs)})
        return [np.asarray(out[k]) for k in _stage_order(out)]

    return run


def parity(model, runners: dict, images, atol: float = MAPS_ATOL,
           joints_atol: float = JOINTS_ATOL_PX) -> dict:
    """Compare each runner (name -> ``images -> maps``) with the Keras model on ``images``.

    Returns per runner the largest absolute difference of the maps of every stage,
    of the decoded joints (crop px) and ``ok`` (both within tolerance)."""
    from cpm_nb.model import heatmaps
    from cpm_nb.model.inputs import model_inputs
    from cpm_nb.model.network import ensure_cpm

    cfg = ensure_cpm(model).cpm_config
    x = model_inputs(images, cfg)
    ref = [np.asarray(o) for o in model(x, training=False)]
    ref_joints, _ = heatmaps.decode(ref[-1][..., : cfg.num_joints])
    out = {}
    for name, run in runners.items():
        got = run(x)
        if len(got) != len(ref) or any(g.shape != r.shape for g, r in zip(got, ref)):
            out[name] = {"ok": False, "error": f"outputs {[g.shape for g in got]} differ from "
                                               f"Keras {[r.shape for r in ref]}"}
            continue
        diffs = [float(np.max(np.abs(g - r))) for g, r in zip(got, ref)]
        joints, _ = heatmaps.decode(got[-1][..., : cfg.num_joints])
        jd = float(np.max(np.abs(joints - ref_joints)))
        out[name] = {"max_abs_diff_per_stage": diffs, "max_abs_diff": max(diffs),
                     "max_joint_diff_px": jd, "ok": max(diffs) <= atol and jd <= joints_atol}
    return out


def export_model(model, out, formats=("savedmodel", "tflite"), check: bool = True,
                 n_check: int = 4, seed: int = 0, meta: dict | None = None) -> dict:
    """Export ``model`` into folder ``out``: ``saved_model/`` and/or ``model.tflite``
    (TFLite needs the SavedModel; it is made in a temporary folder when not asked for),
    then check parity on ``n_check`` random images.  Returns a report dict; a format
    that cannot be produced here is listed under ``skipped`` with the reason.

    Everything is written into a staging folder inside ``out`` and moved into place
    only when the export (and, with ``check``, the parity check) succeeded
    (``report["written"]``); otherwise the previous files in ``out`` stay as they were.
    """
    out = Path(out)
    with files.locked(out):  # one export into a folder at a time
        files.remove_leftovers(out)  # of an export that was killed
        stage = files.staging_folder(out / "export")
        try:
            report = _export_into(model, stage, formats, check, n_check, seed, meta)
            report["written"] = report["ok"] or not report["parity"]
            if report["written"]:
                _move_exports(stage, out)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    report["out"] = str(out)
    report["formats"] = {k: str(out / Path(v).name) for k, v in report["formats"].items()}
    return report


def _export_into(model, stage: Path, formats, check, n_check, seed, meta) -> dict:
    from cpm_nb.model.network import ensure_cpm

    cfg = ensure_cpm(model).cpm_config
    report = {"out": str(stage), "formats": {}, "skipped": {}, "parity": {}}
    runners = {}
    sm_dir = stage / "saved_model"
    if "savedmodel" in formats or "tflite" in formats:
        export_savedmodel(model, sm_dir)
        if "savedmodel" in formats:
            report["formats"]["savedmodel"] = str(sm_dir)
            runners["savedmodel"] = savedmodel_runner(sm_dir)
    if "tflite" in formats:
        try:
            path = export_tflite(sm_dir, stage / "model.tflite")
            runners["tflite"] = tflite_runner(path)
            report["formats"]["tflite"] = str(path)
        except Exception as err:  # converter/interpreter missing or failing in this build
            reason = " ".join(str(err).split())[:300]
            report["skipped"]["tflite"] = f"{type(err).__name__}: {reason}"
        if "savedmodel" not in formats:
            shutil.rmtree(sm_dir, ignore_errors=True)
    if meta is not None:
        files.atomic_write_json(stage / CONFIG_FILE, meta)
    if check and runners:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (n_check, cfg.input_size, cfg.input_size, 3)).astype(
            np.float32)
        report["parity"] = parity(model, runners, images)
    report["ok"] = all(r.get("ok", False) for r in report["parity"].values())
    return report


def _move_exports(stage: Path, out: Path) -> None:
    """Move what was exported into ``out``: the folder swapped in, files replaced."""
    import os

    for item in sorted(stage.iterdir()):
        if item.is_dir():
            files.swap_folder(item, out / item.name)
        else:
            os.replace(item, out / item.name)
