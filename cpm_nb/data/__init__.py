"""The data: MPII annotations, synthetic people, crops, TFRecord shards, batches.

The names below are imported from their modules on first use.
"""

import importlib

_HOMES = {  # name -> the module it lives in
    "SyntheticSpec": "synthetic_set",
    "prepare_synthetic": "synthetic_set",
    "PreparedSet": "synthetic_set",
    "prepare_mpii": "prepare",
    "make_dataset": "pipeline",
}

__all__ = list(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
