"""The network: the CPM layer table, the Keras model, receptive fields, the heat-map codec,
VGG-19's ImageNet weights for the trunk.

The names below are imported from their modules on first use (:class:`CPM`,
:func:`load_keras`, :func:`as_cpm` and :func:`make_predict_fn` import Keras).
"""

import importlib

_HOMES = {  # name -> the module it lives in
    "CPMConfig": "architecture",
    "NAMED_CONFIGS": "architecture",
    "get_config": "architecture",
    "from_profile": "architecture",
    "count_params": "architecture",
    "flops_per_image": "architecture",
    "stage_receptive_fields": "architecture",
    "build_cpm": "cpm",
    "CPM": "network",
    "as_cpm": "network",
    "load_keras": "network",
    "make_predict_fn": "network",
    "center_map": "inputs",
    "model_inputs": "inputs",
    "render": "heatmaps",
    "render_numpy": "heatmaps",
    "decode": "heatmaps",
    "to_original": "heatmaps",
    "upsample": "heatmaps",
    "pack_targets_numpy": "targets",
    "init_trunk_from_vgg19": "imagenet",
}

__all__ = list(_HOMES)


def __getattr__(name):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
