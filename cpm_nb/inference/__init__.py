"""Running a trained model on any image, and exporting it.

The names below are imported from their modules on first use.
"""

import importlib

_HOMES = {  # name -> the module it lives in
    "Predictor": "predict",
    "load_predictor": "predict",
    "Prediction": "predict",
    "person_from_box": "predict",
    "place_person": "predict",
    "merge_scales": "decoding",
    "procedure_effects": "release_effects",
    "effects_table": "release_effects",
    "export_model": "export",
}

__all__ = list(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
