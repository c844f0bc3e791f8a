"""The course's trained models, shipped with the package: ``cpm_nb.presets.load("cpu")``.

Each preset is a run folder here (``NAME/model.keras``, ``cpm_config.json``,
``history.json``) with a ``preset.json`` recording how it was trained (command, commit,
synthetic generator version, training time and machine) and how well it scores.
``cpm-nb presets`` lists them; ``--model preset:NAME`` loads one on the command line;
:func:`cpm_nb.training.loop.load_or_train` uses one whenever the configuration asked for
is the preset's.  The loader lives in :mod:`cpm_nb.training.presets`, the list of presets
and their training in :mod:`cpm_nb.training.preset_build`.
"""

from cpm_nb.training.presets import PREFIX, find, folder, info, load, names, resolve, summary

__all__ = ["PREFIX", "find", "folder", "info", "load", "names", "resolve", "summary"]
