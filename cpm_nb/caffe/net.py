"""The released MPII model's network as a cpm-nb configuration, and back.

A deploy file whose layers are those of :func:`cpm_nb.model.cpm.architecture` (the VGG-trunk
network, ``pose_deploy_resize.prototxt``) is checked layer by layer against it
(:func:`check_net`) and gives its :class:`~cpm_nb.model.cpm.CPMConfig`
(:func:`config_from_net`); its weights become Keras weights by layer name
(:func:`keras_weights`, kernels ``[out, in, kh, kw]`` -> ``[kh, kw, in, out]``, ``conv1_1``
reversed to RGB) and a model (:func:`build_keras`).  The other way round,
:func:`deploy_prototxt` writes the deploy file of any configuration with the release's
layer names, and :func:`random_weights` matching weights (tests, examples).
"""

from __future__ import annotations

import math
import re

import numpy as np

from cpm_nb.caffe.proto import CaffeError, CaffeNet, CaffeWeights, dimension
from cpm_nb.caffe.release import RELEASE_BOX, RELEASE_SIGMA, joint_names
from cpm_nb.model import architecture as A


def relu_name(conv: str) -> str:
    """The release's name of a convolution's ReLU: conv1_1 -> relu1_1, Mconv1_stage2 ->
    Mrelu1_stage2."""
    return re.sub(r"^(M?)conv", r"\1relu", conv)


def _caffe_bottom(name: str) -> str:
    return "image" if name == "normalize" else name  # the release normalises outside the net


def _layer_text(name: str, kind: str, bottoms, tops, group: str = "", **params) -> list[str]:
    lines = ["layer {", f'  name: "{name}"', f'  type: "{kind}"']
    lines += [f'  bottom: "{b}"' for b in bottoms] + [f'  top: "{t}"' for t in tops]
    if group:
        lines += [f"  {group} {{"] + [f"    {k}: {v}" for k, v in params.items()] + ["  }"]
    return lines + ["}"]


def deploy_prototxt(config, name: str = "CPM") -> str:
    """The deploy file of a cpm-nb configuration with the release's layer names, types and
    parameters (4-channel ``data`` input sliced into image and centre map, ReLUs as
    separate in-place layers, ``pool_center_lower`` average pooling), for tests."""
    cfg = A.get_config(config)
    s = cfg.input_size
    lines = [f'name: "{name}"']
    if cfg.center_map:
        lines += ['input: "data"'] + [f"input_dim: {d}" for d in (1, 4, s, s)]
        lines += _layer_text("image", "Slice", ["data"], ["image", "center_map"], "slice_param",
                             slice_point=3, axis=1)
    else:
        lines += ['input: "image"'] + [f"input_dim: {d}" for d in (1, 3, s, s)]
    for spec in A.architecture(cfg):
        bottoms = [_caffe_bottom(b) for b in spec.inputs]
        if spec.kind == "conv":
            lines += _layer_text(spec.name, "Convolution", bottoms, [spec.name],
                                 "convolution_param", num_output=spec.channels,
                                 pad=spec.kernel // 2, kernel_size=spec.kernel)
            if spec.activation == "relu":
                lines += _layer_text(relu_name(spec.name), "ReLU", [spec.name], [spec.name])
        elif spec.kind in ("maxpool", "avgpool"):
            lines += _layer_text(spec.name, "Pooling", bottoms, [spec.name], "pooling_param",
                                 pool="MAX" if spec.kind == "maxpool" else "AVE",
                                 kernel_size=spec.kernel, stride=spec.stride)
        elif spec.kind == "concat":
            lines += _layer_text(spec.name, "Concat", bottoms, [spec.name], "concat_param", axis=1)
    return "\n".join(lines) + "\n"


def caffe_conv_shapes(config) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Caffe's blob shapes per convolution: (weights [out, in, k, k], bias [out])."""
    return {r.name: ((r.channels, r.in_channels, r.kernel, r.kernel), (r.channels,))
            for r in A.architecture(config) if r.kind == "conv"}


def random_weights(config, seed: int = 0, bias: float = 0.1) -> list[tuple[str, str, list]]:
    """He-normal random kernels (OIHW) and small random biases for every convolution, as
    (name, "Convolution", [weights, bias]) for :func:`write_caffemodel`."""
    rng = np.random.default_rng(seed)
    out = []
    for name, (w_shape, b_shape) in caffe_conv_shapes(config).items():
        fan_in = w_shape[1] * w_shape[2] * w_shape[3]
        w = rng.standard_normal(w_shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))
        b = rng.standard_normal(b_shape, dtype=np.float32) * np.float32(bias)
        out.append((name, "Convolution", [w, b]))
    return out


def _width_candidates(net: CaffeNet) -> list[float]:
    bases = {name: base for name, kind, _, base in A.TRUNK if kind == "conv"}
    out = []
    for name, base in bases.items():
        layer = net.get(name)
        n = layer.param("convolution_param", "num_output") if layer else None
        if isinstance(n, int) and n > 0 and n / base not in out:
            out.append(n / base)
    return sorted(out, key=lambda w: abs(w - 1.0))


def _input_size(net: CaffeNet, center_map: bool, where: str) -> int:
    name, channels = ("data", 4) if center_map else ("image", 3)
    shape = net.inputs.get(name)
    if shape is None and net.inputs:
        name, shape = next(iter(net.inputs.items()))
    if not shape or len(shape) != 4 or shape[1] != channels or shape[2] != shape[3]:
        raise CaffeError(f"{where}: input {name!r} is {list(shape or ())}; a CPM deploy file "
                         f"takes [1, {channels}, S, S]")
    if shape[2] % 8:
        raise CaffeError(f"{where}: input side {shape[2]} is not a multiple of 8")
    return int(shape[2])


def _first_conv_error(net: CaffeNet, where: str) -> CaffeError:
    first = next((layer for layer in net.layers if layer.type == "Convolution"), None)
    if first is None:
        return CaffeError(f"{where} has no Convolution layers: not a CPM deploy file")
    k = first.param("convolution_param", "kernel_size")
    hint = (" -- the original CPM architecture (the release's pose_deploy_centerMap.prototxt "
            "and FLIC/LSP models), not cpm-nb's layer table; convert() builds it from the "
            "prototxt (plan_prototxt)" if first.name.endswith("_stage1") else
            " -- not the CPM VGG trunk (conv1_1 ... conv4_7_CPM) that cpm-nb builds")
    return CaffeError(f"{where}: first layer mismatch at '{first.name}' ({k}x{k} convolution)"
                      f"{hint}")


def config_from_net(net: CaffeNet, where: str = "prototxt", joints=None):
    """The :class:`~cpm_nb.model.cpm.CPMConfig` that a deploy file describes, and its map names.

    Input side, centre map, stages (``Mconv7_stage*``), width (channels / the article's),
    stage kernel and number of maps come from the file; the map names from ``joints`` or,
    when the number of maps is one of the release's, its order (:data:`RELEASE_JOINTS`).
    The result is checked layer by layer with :func:`check_net`."""
    if net.get("conv1_1") is None or net.get("conv5_2_CPM") is None:
        raise _first_conv_error(net, where)
    center = net.get("pool_center_lower") is not None
    size = _input_size(net, center, where)
    stages = 1
    while net.get(f"Mconv7_stage{stages + 1}") is not None:
        stages += 1
    maps = dimension(net.get("conv5_2_CPM").param("convolution_param", "num_output", 0),
                     f"{where}: conv5_2_CPM num_output", 1, 4096)
    joints = joint_names(joints, maps, f"{where}: conv5_2_CPM")
    background = joints[-1] == "background"
    kernel = dimension(net.get("Mconv1_stage2").param("convolution_param", "kernel_size", 7),
                       f"{where}: Mconv1_stage2 kernel_size", 1, 4096) if stages > 1 else 7
    base = A.get_config("cpm-mpii-release")
    fields = dict(input_size=size, stages=stages, num_joints=maps - int(background),
                  background=background, center_map=center, stage_kernel=int(kernel),
                  center_sigma=RELEASE_SIGMA * size / RELEASE_BOX)
    error = None
    for width in _width_candidates(net) or [1.0]:
        cfg = A.CPMConfig(name="caffe", width=width, **fields)
        if cfg.replace(name=base.name) == base:
            cfg = base
        try:
            check_net(net, cfg, where)
            return cfg, joints
        except CaffeError as err:
            error = error or err
    raise error


def _expect(what: str, got, want, layer: str, where: str) -> None:
    if got == want:
        return
    if isinstance(want, dict):  # name only the parameters that differ
        keys = [k for k in want if got.get(k) != want[k]]
        got = ", ".join(f"{k} {got.get(k)}" for k in keys)
        want = ", ".join(f"{k} {want[k]}" for k in keys)
    raise CaffeError(f"{where}: first layer mismatch at '{layer}': {what} {got}, but "
                     f"cpm-nb's network has {want}")


# Caffe's defaults for the parameters a CPM layer sets (caffe.proto).
CONV_DEFAULTS = dict(num_output=None, kernel_size=None, pad=0, stride=1, group=1, dilation=1,
                     bias_term=True)
POOL_DEFAULTS = dict(pool="MAX", kernel_size=None, stride=1, pad=0)


def check_net(net: CaffeNet, config, where: str = "prototxt") -> None:
    """Check that the deploy file describes exactly :func:`cpm_nb.model.cpm.architecture`
    of ``config``: every layer's name, type, inputs and parameters, a ReLU after every
    convolution that has one, and no other layers with weights.  Raises
    :class:`CaffeError` naming the first layer that differs."""
    seen = {"image"}
    for spec in A.architecture(config):
        if spec.kind in ("input", "rescale"):
            continue
        layer = net.get(spec.name)
        if layer is None:
            raise CaffeError(f"{where}: first layer mismatch at '{spec.name}': the file has no "
                             f"such layer (cpm-nb's network needs it after "
                             f"'{_caffe_bottom(spec.inputs[0])}')")
        seen.add(spec.name)
        kind = {"conv": "Convolution", "maxpool": "Pooling", "avgpool": "Pooling",
                "concat": "Concat"}[spec.kind]
        _expect("type", layer.type, kind, spec.name, where)
        _expect("inputs", list(layer.bottom), [_caffe_bottom(b) for b in spec.inputs],
                spec.name, where)
        if spec.kind == "conv":
            got = {k: layer.param("convolution_param", k, d) for k, d in CONV_DEFAULTS.items()}
            want = dict(num_output=spec.channels, kernel_size=spec.kernel, pad=spec.kernel // 2,
                        stride=1, group=1, dilation=1, bias_term=True)
            _expect("convolution", got, want, spec.name, where)
            relu = next((r for r in net.layers if r.type == "ReLU" and r.bottom == (spec.name,)),
                        None)
            _expect("ReLU after it", relu is not None, spec.activation == "relu", spec.name,
                    where)
            if relu is not None:
                seen.add(relu.name)
                _expect("ReLU negative_slope", relu.param("relu_param", "negative_slope", 0), 0,
                        relu.name, where)
        elif spec.kind in ("maxpool", "avgpool"):
            got = {k: layer.param("pooling_param", k, d) for k, d in POOL_DEFAULTS.items()}
            want = dict(pool="MAX" if spec.kind == "maxpool" else "AVE", kernel_size=spec.kernel,
                        stride=spec.stride, pad=0)
            _expect("pooling", got, want, spec.name, where)
        else:
            _expect("concat axis", layer.param("concat_param", "axis", 1), 1, spec.name, where)
    for layer in net.layers:
        if layer.name not in seen and layer.type not in ("Slice", "Input", "Silence", "Split",
                                                         "ReLU"):
            raise CaffeError(f"{where}: first layer mismatch at '{layer.name}' ({layer.type}): "
                             "not part of cpm-nb's network")


# --- weights -> Keras ------------------------------------------------------------------------


def keras_weights(weights: dict[str, CaffeWeights], config, where: str = "caffemodel",
                  bgr_to_rgb: bool = True) -> dict[str, list[np.ndarray]]:
    """``{conv name: [kernel HWIO, bias]}`` from a caffemodel's layers; ``conv1_1``'s input
    channels are reversed (BGR -> RGB) unless ``bgr_to_rgb`` is False.  A missing layer or
    a blob of another shape is a :class:`CaffeError` naming the layer."""
    out = {}
    shapes = caffe_conv_shapes(config)
    missing = [n for n in shapes if n not in weights or not weights[n].blobs]
    if missing:  # first: is it a CPM at all?  then: does it match the prototxt?
        raise CaffeError(f"{where}: no weights for layer '{missing[0]}' ({len(missing)} of "
                         f"{len(shapes)} convolutions missing): not a CPM model, or not the "
                         "caffemodel of this prototxt")
    for name, (w_shape, b_shape) in shapes.items():
        layer = weights[name]
        if len(layer.blobs) != 2:
            raise CaffeError(f"{where}: layer '{name}' has {len(layer.blobs)} blobs, a "
                             "convolution with bias has 2")
        w, b = layer.blobs
        if w.shape != w_shape:
            raise CaffeError(f"{where}: layer '{name}' has weights of shape "
                             f"{'x'.join(map(str, w.shape))}, the prototxt needs "
                             f"{'x'.join(map(str, w_shape))}: the caffemodel does not match "
                             "the prototxt")
        if b.size != b_shape[0]:
            raise CaffeError(f"{where}: layer '{name}' has {b.size} biases, the prototxt "
                             f"needs {b_shape[0]}: the caffemodel does not match the prototxt")
        if name == "conv1_1" and bgr_to_rgb:
            w = w[:, ::-1]
        out[name] = [np.ascontiguousarray(w.transpose(2, 3, 1, 0)), b.reshape(-1).copy()]
    return out


def build_keras(config, weights: dict[str, list[np.ndarray]]):
    """The Keras CPM of ``config`` with the given convolution weights."""
    from cpm_nb.model import cpm as M

    model = M.build_cpm(config, seed=0)
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
    return model
