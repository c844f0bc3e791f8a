"""Trained presets: the course's models, shipped with the package as run folders.

A preset is a finished run folder (``model.keras`` + ``cpm_config.json``, as
:func:`cpm_nb.training.runs.export` writes them) under ``cpm_nb/presets/NAME/``, with a
``preset.json`` that records its provenance: the exact command, the commit, the synthetic
generator's version, the configuration key, the final PCKh@0.5, the training time and the
machine.  :func:`load` gives one as a :class:`~cpm_nb.training.runs.Trained`;
:func:`find` is how :func:`cpm_nb.training.loop.train_cached` (hence ``load_or_train``)
uses a preset instead of training when its configuration key matches.  Which presets exist
and how each is trained again lives in :mod:`cpm_nb.training.preset_build`.
"""

from __future__ import annotations

from pathlib import Path

from cpm_nb.core import files, paths
from cpm_nb.core.errors import DataError, ModelError
from cpm_nb.training import runs

PRESET_FILE = "preset.json"
PREFIX = "preset:"  # `--model preset:NAME` on the command line
RETRAIN_ENV = "CPM_NB_RETRAIN"  # =1: train from scratch instead of loading a preset


def presets_dir() -> Path:
    """The folder of the shipped presets (``cpm_nb/presets``)."""
    return paths.PACKAGE_DIR / "presets"


def names() -> list[str]:
    """The presets shipped with this installation."""
    root = presets_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(".") and (p / PRESET_FILE).is_file())


def folder(name: str) -> Path:
    """The run folder of preset ``name``; a one-line :class:`ModelError` naming the known
    presets otherwise."""
    path = presets_dir() / str(name)
    if not (path / PRESET_FILE).is_file():
        known = ", ".join(names()) or "none"
        raise ModelError(f"no preset {name!r} in this installation (presets: {known})")
    return path


def info(name: str) -> dict:
    """The ``preset.json`` of preset ``name``: its provenance and its scores."""
    return files.read_json(folder(name) / PRESET_FILE, "preset description")


def load(name: str) -> runs.Trained:
    """Preset ``name`` as a :class:`~cpm_nb.training.runs.Trained` (model, metadata, folder),
    ready to predict or evaluate: ``cpm_nb.presets.load("cpu").model``."""
    return runs.load_run(folder(name))


def find(key: str) -> str | None:
    """The preset trained with configuration key ``key``, if one is shipped."""
    for name in names():
        try:
            if info(name).get("key") == key:
                return name
        except DataError:
            continue  # a damaged preset.json is not a match
    return None


def summary(name: str) -> str:
    """One line for the log: what the preset is, how it was trained, how well it scores."""
    meta = info(name)
    score = meta.get("pckh")
    score = f"PCKh@0.5 {score:.1f}" if isinstance(score, (int, float)) else "no score recorded"
    return (f"loaded preset {name}: trained by `{meta.get('command', '?')}` "
            f"({meta.get('train_s', 0) / 60:.1f} min), {score}")


def resolve(text) -> Path:
    """``preset:NAME`` -> the preset's folder; any other text is a path, returned as given."""
    text = str(text)
    return folder(text[len(PREFIX):]) if text.startswith(PREFIX) else Path(text)
