"""Any other CPM deploy file: a Keras network built layer by layer from the prototxt itself.

The release's original-architecture models (9x9 / 11x11 convolutions, an image branch
per stage) do not fit :func:`cpm_nb.model.cpm.architecture`, so :func:`plan_prototxt` turns
the parsed prototxt into a :class:`NetPlan` and :func:`build_prototxt_keras` builds it
with built-in Keras layers, reproducing Caffe's semantics (below).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from cpm_nb.caffe.proto import CaffeError, CaffeLayer, CaffeNet, CaffeWeights, dimension
from cpm_nb.caffe.release import RELEASE_BOX, RELEASE_SIGMA, joint_names
from cpm_nb.model import architecture as A

# --- any other CPM deploy file: a Keras network built from the prototxt itself ------------
#
# The release's original-architecture models (9x9 / 11x11 convolutions, layers named
# conv1_stage1, ..., an image branch per stage) do not fit cpm_nb.model.cpm's table, so they are
# built layer by layer from the parsed prototxt.  Caffe's semantics are reproduced exactly
# with built-in Keras layers (the saved model.keras loads in safe mode):
#
# - Convolution: pad p, kernel k, stride s -> Conv2D "same" when that is the same thing
#   (stride 1, odd k, p = (k - 1) / 2), otherwise ZeroPadding2D(p) + Conv2D "valid".
# - Pooling: Caffe rounds the output size *up* (ceil mode), so the last window of a row may
#   hang over the edge (and the first over the padding); MAX takes the maximum of the pixels
#   inside, AVE divides by the window clipped to [-pad, size + pad).  Keras' "same" puts its
#   padding elsewhere at odd sizes and "valid" drops the last window, so each axis is pooled
#   separately (both poolings are separable): the run of whole windows with one
#   MaxPooling2D/AveragePooling2D "valid" on a cropped range, and each partial window with a
#   pooling of its own length (AVE: rescaled when Caffe's divisor differs), concatenated.
# - ReLU: fused into the convolution it follows in place; otherwise a ReLU layer.
# - Slice of the 4-channel input at channel 3: the two Keras inputs ``image`` (RGB 0..255,
#   normalised by the layer ``normalize``) and ``center_map``.  Every convolution reading the
#   image gets its input channels reversed (BGR -> RGB): one per stage image branch.
# - Concat (channel axis), Split (an alias), Silence (nothing).
#
# The stage outputs are the convolutions whose result no ReLU follows -- the belief maps, the
# blobs each stage's Euclidean loss reads in training -- in file order: conv7_stage1 and
# Mconv5_stage2 ... in the original architecture.

GENERIC_TYPES = ("Input", "Slice", "Convolution", "ReLU", "Pooling", "Concat", "Split",
                 "Silence")


@dataclass
class NetOp:
    """One step of a prototxt network: a Caffe layer with its inferred shapes."""

    name: str
    kind: str  # conv, relu, pool, concat
    bottoms: tuple[str, ...]
    top: str
    params: dict
    shape: tuple[int, int, int]  # output (C, H, W)


@dataclass
class NetPlan:
    """A deploy file checked and shaped for :func:`build_prototxt_keras`."""

    name: str
    input_size: tuple[int, int]  # (H, W)
    center_map: bool
    ops: list[NetOp]
    outputs: list[str]  # stage outputs (convolutions without ReLU), file order
    image_convs: list[str]  # convolutions reading the image (BGR -> RGB)
    shapes: dict[str, tuple[int, int, int]]  # blob -> (C, H, W)
    image_blob: str = "image"
    center_blob: str | None = None

    def conv_shapes(self) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """Caffe's blob shapes per convolution: (weights [O, I, kh, kw], bias [O] or ())."""
        return {op.name: ((op.shape[0], self.shapes[op.bottoms[0]][0], *op.params["kernel"]),
                          (op.shape[0],) if op.params["bias"] else ())
                for op in self.ops if op.kind == "conv"}

    def param_count(self) -> int:
        return sum(math.prod(w) + math.prod(b) if b else math.prod(w)
                   for w, b in self.conv_shapes().values())


# the smallest value of each size field: a kernel or stride of 0 divides by zero
_LOWEST = {"kernel_size": 1, "stride": 1, "pad": 0}


def _pair(layer: CaffeLayer, group: str, name: str, default) -> tuple[int, int]:
    """(h, w) of ``name`` (repeated, or ``name_h`` / ``name_w``) in ``group``: integers
    in range (:func:`cpm_nb.caffe.proto.dimension`), or :class:`CaffeError`."""
    p = (layer.params.get(group) or [{}])[0]
    if f"{name}_h" in p or f"{name}_w" in p:
        pair = ((p.get(f"{name}_h") or [default])[0], (p.get(f"{name}_w") or [default])[0])
    else:
        values = p.get(name) or [default]
        pair = (values[0], values[-1])
    if pair[0] is None or pair[1] is None:
        raise CaffeError(f"layer '{layer.name}' has no {group} {name}")
    what = f"layer '{layer.name}': {group} {name}"
    return tuple(dimension(v, what, _LOWEST.get(name, 0), 4096) for v in pair)


def _pool_size(n: int, k: int, s: int, p: int) -> int:
    """Caffe's pooled size: ceil mode, minus a last window that starts in the padding."""
    out = -(-(n + 2 * p - k) // s) + 1
    if p and (out - 1) * s >= n + p:
        out -= 1
    return out


def plan_prototxt(net: CaffeNet, where: str = "prototxt") -> NetPlan:
    """Check a deploy file against what :func:`build_prototxt_keras` builds and infer every
    blob's shape; :class:`CaffeError` (one line) names the first layer it cannot take."""
    if len(net.inputs) != 1:
        raise CaffeError(f"{where}: {len(net.inputs)} input blobs; a CPM deploy file has one "
                         "('data' [1, 4, S, S] or 'image' [1, 3, S, S])")
    data, shape = next(iter(net.inputs.items()))
    if len(shape) != 4 or shape[1] not in (3, 4):
        raise CaffeError(f"{where}: input {data!r} is {list(shape)}; a CPM deploy file takes "
                         "[1, 4, H, W] (image + centre map) or [1, 3, H, W]")
    h, w = shape[2], shape[3]  # integers in range (proto.dimension)
    center = shape[1] == 4
    shapes: dict[str, tuple[int, int, int]] = {}
    image_blob = data if not center else None
    center_blob = None
    if not center:
        shapes[data] = (3, h, w)
    ops: list[NetOp] = []
    producer: dict[str, NetOp] = {}  # blob -> the convolution that wrote it, until read
    relu_after: set[str] = set()
    image_convs: list[str] = []
    for layer in net.layers:
        at = f"{where}: layer '{layer.name}' ({layer.type})"
        if layer.type not in GENERIC_TYPES:
            raise CaffeError(f"{at} is not supported by the converter (it builds "
                             f"{', '.join(GENERIC_TYPES)})")
        if layer.type == "Input" or layer.type == "Silence":
            continue
        missing = [b for b in layer.bottom if b not in shapes and b != data]
        if missing:
            raise CaffeError(f"{at} reads blob {missing[0]!r}, which no earlier layer writes")
        if layer.type == "Slice":
            points = (layer.params.get("slice_param") or [{}])[0].get("slice_point", [])
            axis = layer.param("slice_param", "axis", layer.param("slice_param", "slice_dim", 1))
            if not (center and layer.bottom == (data,) and list(points) == [3] and axis == 1
                    and len(layer.top) == 2):
                raise CaffeError(f"{at}: only the input's split into image and centre map "
                                 "(slice_point 3 of a 4-channel input, channel axis) is "
                                 "supported")
            image_blob, center_blob = layer.top
            shapes[layer.top[0]], shapes[layer.top[1]] = (3, h, w), (1, h, w)
            continue
        if len(layer.bottom) < 1 or (layer.type != "Split" and len(layer.top) != 1):
            raise CaffeError(f"{at} has {len(layer.bottom)} inputs and {len(layer.top)} outputs")
        if data in layer.bottom and center:
            raise CaffeError(f"{at} reads the 4-channel input before its Slice")
        ins = [shapes[b] for b in layer.bottom]
        top = layer.top[0] if layer.top else layer.name
        for b in layer.bottom:
            if b in producer and not (layer.type == "ReLU" and layer.top == layer.bottom):
                producer.pop(b)  # read by another layer: a later ReLU is no longer fusable
        if layer.type == "Split":
            for t in layer.top:
                shapes[t] = ins[0]
            ops.extend(NetOp(f"{layer.name}:{t}", "alias", layer.bottom, t, {}, ins[0])
                       for t in layer.top)
            continue
        if layer.type != "Convolution" and image_blob in layer.bottom:
            raise CaffeError(f"{at} reads the image: only convolutions may (their input "
                             "channels are reversed, BGR -> RGB)")
        if layer.type == "Convolution":
            (kh, kw), (ph, pw), (sh, sw) = (_pair(layer, "convolution_param", "kernel_size",
                                                  None),
                                            _pair(layer, "convolution_param", "pad", 0),
                                            _pair(layer, "convolution_param", "stride", 1))
            n = layer.param("convolution_param", "num_output")
            dilation = layer.param("convolution_param", "dilation", 1)
            group = layer.param("convolution_param", "group", 1)
            if not isinstance(n, int) or n < 1 or dilation != 1 or group != 1:
                raise CaffeError(f"{at}: num_output {n}, dilation {dilation}, group {group}; "
                                 "the converter takes num_output >= 1, dilation 1, group 1")
            c, hh, ww = ins[0]
            oh, ow = (hh + 2 * ph - kh) // sh + 1, (ww + 2 * pw - kw) // sw + 1
            if oh < 1 or ow < 1:
                raise CaffeError(f"{at}: a {kh}x{kw} kernel does not fit its {hh}x{ww} input")
            op = NetOp(layer.name, "conv", layer.bottom, top,
                       dict(kernel=(kh, kw), pad=(ph, pw), stride=(sh, sw), relu=False,
                            bias=bool(layer.param("convolution_param", "bias_term", True))),
                       (n, oh, ow))
            if layer.bottom[0] == image_blob:
                image_convs.append(layer.name)
            producer[top] = op
        elif layer.type == "ReLU":
            slope = float(layer.param("relu_param", "negative_slope", 0) or 0)
            conv = producer.get(layer.bottom[0])
            relu_after.add(layer.bottom[0])
            if conv is not None and layer.top == layer.bottom and slope == 0:
                conv.params["relu"] = True  # fused: the convolution's output is the ReLU's
                producer.pop(layer.bottom[0])
                continue
            op = NetOp(layer.name, "relu", layer.bottom, top, dict(slope=slope), ins[0])
        elif layer.type == "Pooling":
            if layer.param("pooling_param", "global_pooling", False):
                raise CaffeError(f"{at}: global pooling is not supported")
            pool = layer.param("pooling_param", "pool", "MAX")
            pool = {0: "MAX", 1: "AVE"}.get(pool, pool)
            if pool not in ("MAX", "AVE"):
                raise CaffeError(f"{at}: {pool} pooling is not supported (MAX and AVE are)")
            (kh, kw), (ph, pw), (sh, sw) = (_pair(layer, "pooling_param", "kernel_size", None),
                                            _pair(layer, "pooling_param", "pad", 0),
                                            _pair(layer, "pooling_param", "stride", 1))
            c, hh, ww = ins[0]
            if ph >= kh or pw >= kw:
                raise CaffeError(f"{at}: pad {ph}x{pw} must be smaller than the kernel")
            op = NetOp(layer.name, "pool", layer.bottom, top,
                       dict(pool=pool, kernel=(kh, kw), pad=(ph, pw), stride=(sh, sw)),
                       (c, _pool_size(hh, kh, sh, ph), _pool_size(ww, kw, sw, pw)))
        else:  # Concat
            axis = layer.param("concat_param", "axis", layer.param("concat_param",
                                                                   "concat_dim", 1))
            if axis != 1 or len({s[1:] for s in ins}) != 1:
                raise CaffeError(f"{at}: only a channel concat of equal-sized blobs is "
                                 f"supported (axis {axis}, inputs {[list(s) for s in ins]})")
            op = NetOp(layer.name, "concat", layer.bottom, top, {},
                       (sum(s[0] for s in ins), *ins[0][1:]))
        ops.append(op)
        shapes[top] = op.shape
    if image_blob is None:
        raise CaffeError(f"{where}: the 4-channel input {data!r} is never sliced into image and "
                         "centre map")
    outputs = [op.name for op in ops if op.kind == "conv" and not op.params["relu"]
               and op.top not in relu_after]
    if not outputs:
        raise CaffeError(f"{where}: no convolution without a ReLU: no belief-map outputs")
    return NetPlan(net.name, (h, w), center, ops, outputs, image_convs, shapes, image_blob,
                   center_blob)


def _pool_axis(keras, x, axis: int, n: int, pool: str, k: int, s: int, p: int, name: str,
               final: str | None):
    """Caffe pooling along one axis (1: rows, 2: columns) of an NHWC tensor of size ``n``."""
    layers = keras.layers
    windows = []
    for i in range(_pool_size(n, k, s, p)):
        raw = i * s - p
        a, b = max(raw, 0), min(raw + k, n)
        windows.append((a, b, min(raw + k, n + p) - raw))
    segments: list[tuple[int, int, int, int, float]] = []  # (start, end, pool, stride, scale)
    for a, b, div in windows:
        full = b - a == k
        if full and segments and segments[-1][2] == k and segments[-1][1] + s - k == a:
            segments[-1] = (segments[-1][0], b, k, s, 1.0)
        else:
            segments.append((a, b, b - a, s if full else 1,
                             1.0 if pool == "MAX" or full else (b - a) / div))
    Pool = layers.MaxPooling2D if pool == "MAX" else layers.AveragePooling2D
    tag = "r" if axis == 1 else "c"
    outs = []
    for j, (a, b, size, stride, scale) in enumerate(segments):
        last = final if len(segments) == 1 else None
        y = x
        if a > 0 or b < n:
            crop = ((a, n - b), (0, 0)) if axis == 1 else ((0, 0), (a, n - b))
            y = layers.Cropping2D(crop, name=f"{name}__{tag}{j}_crop")(y)
        shape = (size, 1) if axis == 1 else (1, size)
        strides = (stride, 1) if axis == 1 else (1, stride)
        y = Pool(shape, strides, padding="valid",
                 name=last if last and scale == 1.0 else f"{name}__{tag}{j}")(y)
        if scale != 1.0:
            y = layers.Rescaling(scale, name=last or f"{name}__{tag}{j}_scale")(y)
        outs.append(y)
    if len(outs) == 1:
        return outs[0]
    return layers.Concatenate(axis=axis, name=final or f"{name}__{tag}")(outs)


def build_prototxt_keras(plan: NetPlan, weights: dict[str, list[np.ndarray]] | None = None,
                         outputs=None):
    """The Keras network of a :class:`NetPlan` (built-in layers only), Caffe layer names
    kept; ``weights``: ``{conv name: [kernel HWIO, (bias)]}`` (:func:`prototxt_weights`);
    ``outputs``: blob names (default: the stage outputs)."""
    from cpm_nb.core.runtime import import_keras

    keras = import_keras()
    layers = keras.layers
    h, w = plan.input_size
    image = keras.Input((h, w, 3), name="image")
    inputs = [image]
    blobs = {plan.image_blob: layers.Rescaling(1 / 256, offset=-0.5, name="normalize")(image)}
    if plan.center_map:
        center = keras.Input((h, w, 1), name="center_map")
        inputs.append(center)
        blobs[plan.center_blob] = center
    for op in plan.ops:
        ins = [blobs[b] for b in op.bottoms]
        if op.kind == "alias":
            out = ins[0]
        elif op.kind == "conv":
            (kh, kw), (ph, pw), stride = op.params["kernel"], op.params["pad"], \
                op.params["stride"]
            same = stride == (1, 1) and kh % 2 and kw % 2 and (ph, pw) == (kh // 2, kw // 2)
            x = ins[0]
            if not same and (ph or pw):
                x = layers.ZeroPadding2D((ph, pw), name=f"{op.name}__pad")(x)
            out = layers.Conv2D(op.shape[0], (kh, kw), strides=stride,
                                padding="same" if same else "valid",
                                activation="relu" if op.params["relu"] else None,
                                use_bias=op.params["bias"], name=op.name)(x)
        elif op.kind == "relu":
            out = layers.ReLU(negative_slope=op.params["slope"], name=op.name)(ins[0])
        elif op.kind == "pool":
            _, hh, ww = plan.shapes[op.bottoms[0]]
            (kh, kw), (ph, pw), (sh, sw) = op.params["kernel"], op.params["pad"], \
                op.params["stride"]
            rows = _pool_axis(keras, ins[0], 1, hh, op.params["pool"], kh, sh, ph, op.name,
                              None)
            out = _pool_axis(keras, rows, 2, ww, op.params["pool"], kw, sw, pw, op.name,
                             op.name)
        else:
            out = layers.Concatenate(axis=-1, name=op.name)(ins)
        blobs[op.top] = out
    names = {op.name: op.top for op in plan.ops}
    outs = [blobs[names.get(n, n)] for n in (outputs or plan.outputs)]
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0], outs,
                        name=re.sub(r"[^A-Za-z0-9_.-]", "_", plan.name or "caffe"))
    for name, values in (weights or {}).items():
        model.get_layer(name).set_weights(values)
    return model


def prototxt_weights(weights: dict[str, CaffeWeights], plan: NetPlan, where: str = "caffemodel",
                     bgr_to_rgb: bool = True) -> dict[str, list[np.ndarray]]:
    """``{conv name: [kernel HWIO, (bias)]}`` for a :class:`NetPlan`; the convolutions that
    read the image get their input channels reversed (BGR -> RGB)."""
    shapes = plan.conv_shapes()
    missing = [n for n in shapes if n not in weights or not weights[n].blobs]
    if missing:
        raise CaffeError(f"{where}: no weights for layer '{missing[0]}' ({len(missing)} of "
                         f"{len(shapes)} convolutions missing): not the caffemodel of this "
                         "prototxt")
    out = {}
    for name, (w_shape, b_shape) in shapes.items():
        blobs = weights[name].blobs
        if len(blobs) != 1 + bool(b_shape):
            raise CaffeError(f"{where}: layer '{name}' has {len(blobs)} blobs, the prototxt "
                             f"needs {1 + bool(b_shape)}")
        w = blobs[0].reshape(blobs[0].shape[-4:]) if blobs[0].ndim > 4 else blobs[0]
        if w.shape != w_shape:
            raise CaffeError(f"{where}: layer '{name}' has weights of shape "
                             f"{'x'.join(map(str, w.shape))}, the prototxt needs "
                             f"{'x'.join(map(str, w_shape))}: the caffemodel does not match "
                             "the prototxt")
        if b_shape and blobs[1].size != b_shape[0]:
            raise CaffeError(f"{where}: layer '{name}' has {blobs[1].size} biases, the "
                             f"prototxt needs {b_shape[0]}: the caffemodel does not match the "
                             "prototxt")
        if name in plan.image_convs and bgr_to_rgb:
            w = w[:, ::-1]
        out[name] = [np.ascontiguousarray(w.transpose(2, 3, 1, 0))]
        if b_shape:
            out[name].append(blobs[1].reshape(-1).copy())
    return out


def random_prototxt_weights(plan: NetPlan, seed: int = 0,
                            bias: float = 0.1) -> list[tuple[str, str, list]]:
    """He-normal random kernels and small random biases for every convolution of a
    :class:`NetPlan`, for :func:`write_caffemodel`."""
    rng = np.random.default_rng(seed)
    out = []
    for name, (w_shape, b_shape) in plan.conv_shapes().items():
        fan_in = w_shape[1] * w_shape[2] * w_shape[3]
        w = rng.standard_normal(w_shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))
        blobs = [w] + ([rng.standard_normal(b_shape, dtype=np.float32) * np.float32(bias)]
                       if b_shape else [])
        out.append((name, "Convolution", blobs))
    return out


def config_from_plan(plan: NetPlan, where: str = "prototxt", joints=None):
    """The :class:`~cpm_nb.model.cpm.CPMConfig` fields predict needs (input side, stages, maps,
    centre map) of a prototxt network, and its map names; the network itself is the saved
    model (``architecture: prototxt`` in ``cpm_config.json``)."""
    h, w = plan.input_size
    shapes = {plan.shapes[next(op.top for op in plan.ops if op.name == n)]
              for n in plan.outputs}
    if h != w or h % 8:
        raise CaffeError(f"{where}: input {h}x{w}; a pose CPM takes a square crop whose side is "
                         "a multiple of 8 (a person detector is not converted)")
    if len(shapes) != 1 or next(iter(shapes))[1:] != (h // 8, h // 8):
        raise CaffeError(f"{where}: the stage outputs {', '.join(plan.outputs)} are "
                         f"{sorted(list(s) for s in shapes)}; a pose CPM gives "
                         f"[maps, {h // 8}, {h // 8}] at every stage")
    maps = next(iter(shapes))[0]
    joints = joint_names(joints, maps, f"{where}: {plan.outputs[0]}")
    background = joints[-1] == "background"
    first = next((op for op in plan.ops if op.name == "Mconv1_stage2"), None)
    kernel = first.params["kernel"][0] if first and first.params["kernel"][0] % 2 else 7
    cfg = A.CPMConfig(name="caffe-prototxt", input_size=h, stages=len(plan.outputs),
                      num_joints=maps - int(background), background=background,
                      center_map=plan.center_map, stage_kernel=int(kernel),
                      center_sigma=RELEASE_SIGMA * h / RELEASE_BOX)
    return cfg, joints
