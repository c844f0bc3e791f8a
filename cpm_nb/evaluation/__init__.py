"""Scoring: the metrics (official MPII PCKh), validation passes, MPII .mat files, and the
statistics that compare scores (paired differences by seed, sampling errors).

The names below are imported from their modules on first use.  The scores of a model on a
prepared folder are :func:`cpm_nb.evaluation.evaluate.evaluate` (``cpm_nb.evaluate``; not
named here, where ``evaluate`` is the module).
"""

import importlib

_HOMES = {  # name -> the module it lives in
    "collect": "evaluate",
    "summarize": "evaluate",
    "format_scores": "evaluate",
    "ValidationPredictions": "evaluate",
    "pckh": "metrics",
    "PCKhResult": "metrics",
    "pck": "metrics",
    "pcp": "metrics",
    "fixed_radius": "metrics",
    "evaluate_mpii": "mpii_mat",
    "paired_difference": "statistics",
    "PairedDifference": "statistics",
    "binomial_se": "statistics",
    "bootstrap_se": "statistics",
}

__all__ = list(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
