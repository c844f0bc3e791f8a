"""What a model must be for :class:`~cpm_nb.inference.predict.Predictor`: a CPM (square RGB
crops in, one ``[B, S/8, S/8, maps]`` tensor per stage out) of the 16 MPII joints, or of joints
its preprocessing maps onto them, whose run description matches the network."""

from __future__ import annotations

from cpm_nb.core import skeleton
from cpm_nb.core.config import OUTPUT_STRIDE
from cpm_nb.core.errors import ModelError
from cpm_nb.model.architecture import CPMConfig
from cpm_nb.training.runs import CONFIG_FILE  # the model description of a run


def check_model(model, meta: dict | None = None) -> CPMConfig:
    """The :class:`~cpm_nb.model.architecture.CPMConfig` of ``model`` after checking that it
    is a CPM for the 16 MPII joints (or for joints its ``preprocessing`` maps onto them)
    whose ``cpm_config.json`` (``meta``) matches; :class:`ModelError` otherwise."""
    from cpm_nb.model.network import CPM, mismatches

    _check_shapes(model)
    if not isinstance(model, CPM):
        raise ModelError(f"the model {model.name!r} carries no CPM configuration: it is not a "
                         "cpm-nb model, or a model file saved by an older version -- load that "
                         f"one from its run folder, whose {CONFIG_FILE} describes it")
    cfg = model.cpm_config
    meta = meta or {}
    if meta:
        if meta.get("format") != "cpm-nb-model":
            raise ModelError(f"{CONFIG_FILE} is not a cpm-nb model description "
                             f"(format {meta.get('format')!r})")
        saved = meta.get("cpm_config")
        bad = mismatches(model, CPMConfig.from_dict(saved)) if saved else []
        if bad:
            raise ModelError(f"{CONFIG_FILE} describes another configuration than the network: "
                             + ", ".join(bad))
    _check_joints(cfg, meta.get("preprocessing") or {})
    return cfg


def _shape(t) -> tuple:
    return tuple(None if d is None else int(d) for d in t.shape)


def _check_shapes(model) -> None:
    """Square RGB crops in (and a centre map), one ``[B, S/8, S/8, maps]`` tensor per stage
    out."""
    inputs = list(model.inputs)
    outputs = list(model.outputs) if isinstance(model.outputs, (list, tuple)) else [model.outputs]
    if not 1 <= len(inputs) <= 2:
        raise ModelError(f"a CPM takes an image (and a centre map); this model has "
                         f"{len(inputs)} inputs")
    shape = _shape(inputs[0])
    if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2] or not shape[1] \
            or shape[1] % OUTPUT_STRIDE:
        raise ModelError(f"a CPM takes square RGB crops [B, S, S, 3] with S a multiple of "
                         f"{OUTPUT_STRIDE}; this model's input is {list(shape)}")
    size = shape[1]
    maps = {_shape(o) for o in outputs}
    want = (None, size // OUTPUT_STRIDE, size // OUTPUT_STRIDE)
    if len(maps) != 1 or next(iter(maps))[:3] != want:
        raise ModelError(f"a CPM outputs one [B, {size // 8}, {size // 8}, maps] tensor per "
                         f"stage; this model outputs {sorted(str(list(m)) for m in maps)}")


def _check_joints(cfg: CPMConfig, preprocessing: dict) -> None:
    """The model's maps are the 16 MPII joints (+ background), or joints that its
    ``preprocessing`` maps onto them."""
    if preprocessing.get("joints") and not preprocessing.get("joints_to_mpii"):
        other = [j for j in preprocessing["joints"] if j not in (*skeleton.JOINT, "background")]
        raise ModelError(f"the model predicts joints that MPII does not have ({', '.join(other)}),"
                         " so predict cannot place its 16 MPII joints")
    joints = len(preprocessing.get("joints_to_mpii") or ()) or skeleton.NUM_JOINTS
    if cfg.num_maps not in (joints, joints + 1):
        raise ModelError(f"the model predicts {cfg.num_maps} maps per stage, so it is not a model "
                         f"of the {joints} MPII joints (+ background) that predict draws "
                         "(e.g. the 14-joint cpm-mpii-release configuration)")
