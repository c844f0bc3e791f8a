"""The released CPM Caffe models: reading, converting and running them without Caffe.

The names below are imported from their modules on first use.  A released model becomes a
run folder with :func:`cpm_nb.caffe.convert.convert` (not named here, where ``convert`` is
the module).
"""

import importlib

_HOMES = {  # name -> the module it lives in
    "parity": "convert",
    "mpii_validation": "convert",
    "find_converted": "convert",
    "CaffeError": "proto",
}

__all__ = list(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
