"""Running the released CPM Caffe models: a converter to cpm-nb run folders, without Caffe.

The authors of CPM released trained Caffe models: a deploy ``.prototxt`` (the network,
protobuf text format) and a ``.caffemodel`` (the weights, protobuf binary format) each.
:func:`convert` turns such a pair into a run folder (``model.keras`` + ``cpm_config.json``)
that :func:`cpm_nb.predict.load_predictor` loads like a trained run:

1. **The prototxt** is parsed (:func:`read_prototxt`, a small parser of the text format)
   and compared layer by layer with :func:`cpm_nb.model.architecture`: names, kinds,
   kernels, padding, strides, channels and inputs.  The configuration (input size,
   stages, width, maps, centre map) is derived from it (:func:`config_from_net`); the
   MPII model's ``pose_deploy_resize.prototxt`` gives exactly ``cpm-mpii-release``.
2. **The caffemodel** is read with a hand-written protobuf wire-format reader
   (:func:`read_caffemodel`) that knows the few fields of Caffe's ``caffe.proto`` it
   needs (layer name and type, blobs, blob shape and data; see the tables below) and
   skips everything else -- including the extra training layers of a snapshot, whose
   types BVLC's ``caffe.proto`` does not define.  Layers are matched by name.
3. **Kernels** go from Caffe's ``[out, in, kh, kw]`` to Keras' ``[kh, kw, in, out]``;
   ``conv1_1``'s input channels are reversed, so the Keras model takes **RGB** whereas
   the Caffe model takes BGR.  Nothing else changes: the model's ``normalize`` layer
   computes the release's ``x / 256 - 0.5``, and crops are padded with 128 as in the
   release.
4. **The run folder** is written atomically, with a ``preprocessing`` block in
   ``cpm_config.json`` (:func:`release_preprocessing`) that :mod:`cpm_nb.predict` reads:
   the release's joint order and its mapping to the 16 MPII joints, the centre map,
   the multi-scale search of the release's test code and its decoding
   (:func:`release_decode`).

For tests, and for anyone who wants to check the numerics without the real files,
:func:`deploy_prototxt` writes the deploy file of any cpm-nb configuration with the
release's layer names and :func:`write_caffemodel` writes weights in the same binary
format, so that OpenCV's Caffe importer -- an independent implementation -- can run the
same network (:func:`opencv_stage_maps`, :func:`parity`).

Which released files fit: the VGG-trunk network of the MPII model
(``_trained_MPI/pose_deploy_resize.prototxt`` with ``pose_iter_320000.caffemodel``, the
one of the release's Python demo) is checked against and built as ``cpm-mpii-release``.
The release's other pose models (MPII 630000, MPII+LSP, LSP: ``pose_deploy_centerMap.prototxt``;
FLIC: ``pose_deploy.prototxt``) use the original CPM architecture with 9x9 and 11x11
convolutions and an image branch per stage; any prototxt without the table's ``conv1_1`` /
``conv5_2_CPM`` is built layer by layer from the prototxt itself (section 3b:
:func:`plan_prototxt`, :func:`build_prototxt_keras`), its convolutions that read the image
reversed to RGB, its stage outputs the convolutions that no ReLU follows.  A layer type it
does not build, or a network whose outputs are not square ``S/8`` maps (the person-centre
detector), is a one-line error.  ``predict`` takes the 14-joint models; FLIC's 9 joints
include ``head``, which is not an MPII joint, so ``predict`` refuses that run (one line).

**Licence.**  The released prototxts, code and weights carry a non-commercial,
no-redistribution licence; a converted model is a derivative of the weights and keeps
that licence.  Nothing from the release is part of this project.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpm_nb import protowire
from cpm_nb.cli import CliError, Command, add_json_option

MODEL_FILE, CONFIG_FILE = "model.keras", "cpm_config.json"  # as cpm_nb.train writes them
LICENCE = ("converted from the CPM release (convolutional-pose-machines-release): the weights "
           "keep the release's licence (non-commercial use, no redistribution)")

# The release's map orders (its test configuration files), in cpm-nb joint names.
RELEASE_JOINTS = {
    15: ("head_top", "upper_neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
         "l_wrist", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "background"),
    10: ("l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist", "l_hip", "r_hip",
         "head", "background"),  # FLIC (upper body)
}  # fmt: skip
RELEASE_BOX = 368  # boxsize: the input side the release was trained and tested at
RELEASE_SIGMA = 21.0  # centre-map sigma at that size
RELEASE_TARGET_DIST = 41 / 35  # an MPII person (200*scale px) is 200*41/35 px tall in the box
RELEASE_SCALES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)  # the release's MPII test search
# MPII joints a 14-joint model does not predict: the midpoint of two it does.
DERIVED_JOINTS = {"pelvis": ("r_hip", "l_hip"), "thorax": ("r_shoulder", "l_shoulder")}


class CaffeError(ValueError):
    """A prototxt or caffemodel that cannot be read or converted (one line: what, where)."""


# --- 1. the prototxt: protobuf text format -------------------------------------------------

_TOKENS = re.compile(r"""\s+|\#[^\n]*|("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')|([{}<>\[\]:,;])"""
                     r"""|([^\s{}<>\[\]:,;"'\#]+)""")


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, value, line) with kind 'str', 'punct' or 'word'; comments dropped."""
    out, pos, line = [], 0, 1
    while pos < len(text):
        m = _TOKENS.match(text, pos)
        if m is None:
            raise CaffeError(f"line {line}: unexpected character {text[pos]!r}")
        if m.group(1):
            raw = m.group(1)[1:-1]
            value = raw.encode("latin-1", "backslashreplace").decode("unicode_escape")
            out.append(("str", value, line))
        elif m.group(2):
            out.append(("punct", m.group(2), line))
        elif m.group(3):
            out.append(("word", m.group(3), line))
        line += m.group(0).count("\n")
        pos = m.end()
    return out


def _scalar(kind: str, value: str):
    if kind == "str":
        return value
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value, value)  # enum names stay strings


def _message(tokens, i: int, close: str | None) -> tuple[dict, int]:
    """Parse fields until ``close`` ('}' or '>') or the end; returns (fields, next index).
    Every field is a list of values (scalars or nested dicts), in file order."""
    fields: dict[str, list] = {}
    while i < len(tokens):
        kind, value, line = tokens[i]
        if kind == "punct" and value == close:
            return fields, i + 1
        if kind == "punct" and value in ",;":
            i += 1
            continue
        if kind != "word":
            raise CaffeError(f"line {line}: expected a field name, found {value!r}")
        name, i = value, i + 1
        if i < len(tokens) and tokens[i][1] == ":" and tokens[i][0] == "punct":
            i += 1
        if i >= len(tokens):
            raise CaffeError(f"line {line}: field {name!r} has no value")
        kind, value, line = tokens[i]
        if kind == "punct" and value in "{<":
            sub, i = _message(tokens, i + 1, "}" if value == "{" else ">")
            fields.setdefault(name, []).append(sub)
        elif kind == "punct" and value == "[":
            i += 1
            while i < len(tokens) and tokens[i][1] != "]":
                if tokens[i][1] != ",":
                    fields.setdefault(name, []).append(_scalar(*tokens[i][:2]))
                i += 1
            if i == len(tokens):
                raise CaffeError(f"line {line}: field {name!r}: a ']' is missing")
            i += 1
        elif kind in ("str", "word"):
            fields.setdefault(name, []).append(_scalar(kind, value))
            i += 1
        else:
            raise CaffeError(f"line {line}: field {name!r}: unexpected {value!r}")
    if close is not None:
        raise CaffeError(f"unexpected end of file: a '{close}' is missing")
    return fields, i


def parse_prototxt(text: str) -> dict:
    """A protobuf text-format message as nested dicts: ``{field: [values...]}``."""
    return _message(_tokens(text), 0, None)[0]


@dataclass
class CaffeLayer:
    """One layer of a deploy file."""

    name: str
    type: str  # new-style name ("Convolution", "Pooling", ...)
    bottom: tuple[str, ...]
    top: tuple[str, ...]
    params: dict = field(repr=False, default_factory=dict)

    def param(self, group: str, name: str, default=None):
        """First value of ``group { name: ... }`` (e.g. convolution_param / kernel_size)."""
        values = (self.params.get(group) or [{}])[0].get(name)
        return values[0] if values else default


@dataclass
class CaffeNet:
    """A deploy file: its input blobs (name -> shape) and its layers in order."""

    name: str
    inputs: dict[str, tuple[int, ...]]
    layers: list[CaffeLayer]

    def get(self, name: str) -> CaffeLayer | None:
        return next((layer for layer in self.layers if layer.name == name), None)


# V1 ("layers {...}") type enums of caffe.proto that a CPM deploy file uses.
V1_TYPE_NAMES = {"CONCAT": "Concat", "CONVOLUTION": "Convolution", "POOLING": "Pooling",
                 "RELU": "ReLU", "SLICE": "Slice", "SILENCE": "Silence", "SPLIT": "Split"}
V1_TYPE_NUMBERS = {3: "Concat", 4: "Convolution", 17: "Pooling", 18: "ReLU", 33: "Slice",
                   36: "Silence", 22: "Split"}


def _net_from_message(msg: dict) -> CaffeNet:
    inputs: dict[str, tuple[int, ...]] = {}
    names, dims = msg.get("input", []), [int(d) for d in msg.get("input_dim", [])]
    shapes = [tuple(int(d) for d in s.get("dim", [])) for s in msg.get("input_shape", [])]
    for k, name in enumerate(names):
        inputs[name] = shapes[k] if k < len(shapes) else tuple(dims[4 * k:4 * k + 4])
    layers = []
    for new, entries in ((True, msg.get("layer", [])), (False, msg.get("layers", []))):
        for entry in entries:
            kind = str((entry.get("type") or [""])[0])
            kind = kind if new else V1_TYPE_NAMES.get(kind, kind)
            layer = CaffeLayer(str((entry.get("name") or [""])[0]), kind,
                               tuple(entry.get("bottom", [])), tuple(entry.get("top", [])), entry)
            if kind == "Input":
                for top, shape in zip(layer.top, layer.params.get("input_param", [{}])[0]
                                      .get("shape", [])):
                    inputs[top] = tuple(int(d) for d in shape.get("dim", []))
            layers.append(layer)
    return CaffeNet(str((msg.get("name") or [""])[0]), inputs, layers)


def read_prototxt(path) -> CaffeNet:
    """Read a deploy ``.prototxt``; :class:`CaffeError` names the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except FileNotFoundError:
        raise CaffeError(f"prototxt not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CaffeError(f"{path} is not a text prototxt: {err}") from None
    try:
        net = _net_from_message(parse_prototxt(text))
    except CaffeError as err:
        raise CaffeError(f"{path}: {err}") from None
    except (ValueError, TypeError, AttributeError) as err:  # a field of the wrong kind
        raise CaffeError(f"{path} is not a Caffe deploy prototxt: {err}") from None
    if not net.layers:
        raise CaffeError(f"{path} holds no layers: not a Caffe deploy prototxt")
    return net


# --- 2. the caffemodel: protobuf wire format -------------------------------------------------

# The fields of caffe.proto that the converter reads; all others are skipped.
NET_FIELDS = {"layers": 2, "layer": 100}  # NetParameter: V1LayerParameter, LayerParameter
LAYER_FIELDS = {"name": 1, "type": 2, "blobs": 7}  # LayerParameter (type: a string)
V1_LAYER_FIELDS = {"name": 4, "type": 5, "blobs": 6}  # V1LayerParameter (type: an enum)
BLOB_FIELDS = {"num": 1, "channels": 2, "height": 3, "width": 4, "data": 5, "shape": 7,
               "double_data": 8}  # BlobProto (data: packed float, double_data: packed double)
SHAPE_DIM = 1  # BlobShape: repeated int64 dim (packed)
VARINT, LENGTH = protowire.VARINT, protowire.LENGTH  # wire types


def _fields(buf):
    """:func:`cpm_nb.protowire.fields` with its errors as :class:`CaffeError`."""
    try:
        yield from protowire.fields(buf)
    except protowire.WireError as err:
        raise CaffeError(str(err)) from None


def _packed_varints(values: list) -> list[int]:
    out = []
    for wire, v in values:
        if wire == VARINT:
            out.append(v)
            continue
        try:
            out.extend(protowire.packed_varints(v))
        except protowire.WireError as err:
            raise CaffeError(str(err)) from None
    return out


def _floats(values: list, dtype: str) -> np.ndarray:
    """Packed (one length-delimited chunk) or unpacked (one fixed field per value) floats."""
    return np.frombuffer(b"".join(bytes(v) for _, v in values), dtype=dtype)


def _blob(buf) -> np.ndarray:
    got: dict[int, list] = {}
    for number, wire, value in _fields(buf):
        got.setdefault(number, []).append((wire, value))
    if BLOB_FIELDS["shape"] in got:
        shape_fields = [(w, v) for n, w, v in _fields(got[BLOB_FIELDS["shape"]][-1][1])
                        if n == SHAPE_DIM]
        shape = tuple(_packed_varints(shape_fields))
    else:  # the deprecated 4D dimensions
        legacy = [got.get(BLOB_FIELDS[k], [(VARINT, 0)])[-1][1]
                  for k in ("num", "channels", "height", "width")]
        shape = tuple(legacy)
    if BLOB_FIELDS["data"] in got:
        data = _floats(got[BLOB_FIELDS["data"]], "<f4")
    else:
        data = _floats(got.get(BLOB_FIELDS["double_data"], []), "<f8").astype(np.float32)
    if math.prod(shape) != data.size:
        raise CaffeError(f"a blob of shape {list(shape)} holds {data.size} values")
    return data.reshape(shape)


@dataclass
class CaffeWeights:
    """The weights of one layer of a caffemodel."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(repr=False)


def _layer_weights(buf, names: dict, v1: bool) -> CaffeWeights:
    name, kind, blobs = "", "", []
    for number, wire, value in _fields(buf):
        if number == names["name"] and wire == LENGTH:
            name = bytes(value).decode("utf-8", "replace")
        elif number == names["type"]:
            kind = V1_TYPE_NUMBERS.get(value, str(value)) if v1 and wire == VARINT else \
                bytes(value).decode("utf-8", "replace") if wire == LENGTH else str(value)
        elif number == names["blobs"] and wire == LENGTH:
            blobs.append(_blob(value))
    return CaffeWeights(name, kind, blobs)


def parse_caffemodel(data: bytes) -> dict[str, CaffeWeights]:
    """The layers of a binary ``NetParameter`` by name (new-style and V1 layers; a name
    seen twice keeps the entry that has weights)."""
    buf = memoryview(data)
    layers: dict[str, CaffeWeights] = {}
    for number, wire, value in _fields(buf):
        if wire != LENGTH or number not in NET_FIELDS.values():
            continue
        v1 = number == NET_FIELDS["layers"]
        layer = _layer_weights(value, V1_LAYER_FIELDS if v1 else LAYER_FIELDS, v1)
        if layer.name and (layer.name not in layers or layer.blobs):
            layers[layer.name] = layer
    return layers


def read_caffemodel(path) -> dict[str, CaffeWeights]:
    """Read a ``.caffemodel``; a file that is not one is a one-line :class:`CaffeError`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CaffeError(f"caffemodel not found: {path}") from None
    except OSError as err:
        raise CaffeError(f"cannot read {path}: {err}") from None
    try:
        layers = parse_caffemodel(data)
    except CaffeError as err:
        raise CaffeError(f"{path} is not a Caffe model (a binary NetParameter): {err}") from None
    if not layers:
        raise CaffeError(f"{path} is not a Caffe model: it holds no named layers")
    return layers


# Writing (for tests and examples: random weights in the release's format).

_varint_bytes = protowire.varint_bytes
_field_bytes = protowire.field_bytes


def blob_bytes(array, legacy_shape: bool = False) -> bytes:
    """A ``BlobProto``: the shape (``BlobShape``, or num/channels/height/width when
    ``legacy_shape``) and the values as packed little-endian float32."""
    a = np.ascontiguousarray(array, dtype="<f4")
    if legacy_shape:
        dims = (1,) * (4 - a.ndim) + a.shape
        head = b"".join(_field_bytes(BLOB_FIELDS[k], d)
                        for k, d in zip(("num", "channels", "height", "width"), dims))
    else:
        dims = b"".join(_varint_bytes(d) for d in a.shape)
        head = _field_bytes(BLOB_FIELDS["shape"], _field_bytes(SHAPE_DIM, dims))
    return head + _field_bytes(BLOB_FIELDS["data"], a.tobytes())


def caffemodel_bytes(layers: Iterable[tuple[str, str, list]], v1: bool = False,
                     legacy_shape: bool = False) -> bytes:
    """A binary ``NetParameter`` with the given (name, type, blobs) layers."""
    names = V1_LAYER_FIELDS if v1 else LAYER_FIELDS
    numbers = {v: k for k, v in V1_TYPE_NUMBERS.items()}
    out = [_field_bytes(1, b"cpm-nb")]  # NetParameter.name
    for name, kind, blobs in layers:
        body = _field_bytes(names["name"], name.encode())
        body += _field_bytes(names["type"], numbers.get(kind, 0) if v1 else kind.encode())
        body += b"".join(_field_bytes(names["blobs"], blob_bytes(b, legacy_shape))
                         for b in blobs)
        out.append(_field_bytes(NET_FIELDS["layers" if v1 else "layer"], body))
    return b"".join(out)


def write_caffemodel(path, layers: Iterable[tuple[str, str, list]], **kwargs) -> Path:
    """Write :func:`caffemodel_bytes` to ``path``."""
    path = Path(path)
    path.write_bytes(caffemodel_bytes(layers, **kwargs))
    return path


# --- 3. the network: a deploy file of a cpm-nb configuration, and back -------------------------


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


def deploy_prototxt(config=None, name: str = "CPM") -> str:
    """The deploy file of a cpm-nb configuration with the release's layer names, types and
    parameters (4-channel ``data`` input sliced into image and centre map, ReLUs as
    separate in-place layers, ``pool_center_lower`` average pooling), for tests."""
    from cpm_nb import model as M

    cfg = M.get_config(config)
    s = cfg.input_size
    lines = [f'name: "{name}"']
    if cfg.center_map:
        lines += ['input: "data"'] + [f"input_dim: {d}" for d in (1, 4, s, s)]
        lines += _layer_text("image", "Slice", ["data"], ["image", "center_map"], "slice_param",
                             slice_point=3, axis=1)
    else:
        lines += ['input: "image"'] + [f"input_dim: {d}" for d in (1, 3, s, s)]
    for spec in M.architecture(cfg):
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


def caffe_conv_shapes(config=None) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Caffe's blob shapes per convolution: (weights [out, in, k, k], bias [out])."""
    from cpm_nb import model as M

    return {r.name: ((r.channels, r.in_channels, r.kernel, r.kernel), (r.channels,))
            for r in M.architecture(config) if r.kind == "conv"}


def random_weights(config=None, seed: int = 0, bias: float = 0.1) -> list[tuple[str, str, list]]:
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
    from cpm_nb import model as M

    bases = {name: base for name, kind, _, base in M.TRUNK if kind == "conv"}
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


def _joint_names(joints, maps: int, where: str) -> tuple:
    """The names of a model's ``maps`` belief maps: given, or the release's order for that
    count; a count that does not match is a :class:`CaffeError`."""
    if joints is None:
        joints = RELEASE_JOINTS.get(maps, tuple(f"map{i}" for i in range(maps)))
    joints = tuple(joints)
    if len(joints) != maps:
        raise CaffeError(f"{where} has {maps} maps but {len(joints)} joint names were given")
    return joints


def config_from_net(net: CaffeNet, where: str = "prototxt", joints=None):
    """The :class:`~cpm_nb.model.CPMConfig` that a deploy file describes, and its map names.

    Input side, centre map, stages (``Mconv7_stage*``), width (channels / the article's),
    stage kernel and number of maps come from the file; the map names from ``joints`` or,
    when the number of maps is one of the release's, its order (:data:`RELEASE_JOINTS`).
    The result is checked layer by layer with :func:`check_net`."""
    from cpm_nb import model as M

    if net.get("conv1_1") is None or net.get("conv5_2_CPM") is None:
        raise _first_conv_error(net, where)
    center = net.get("pool_center_lower") is not None
    size = _input_size(net, center, where)
    stages = 1
    while net.get(f"Mconv7_stage{stages + 1}") is not None:
        stages += 1
    maps = int(net.get("conv5_2_CPM").param("convolution_param", "num_output", 0))
    joints = _joint_names(joints, maps, f"{where}: conv5_2_CPM")
    background = joints[-1] == "background"
    kernel = net.get("Mconv1_stage2").param("convolution_param", "kernel_size", 7) \
        if stages > 1 else 7
    base = M.get_config("cpm-mpii-release")
    fields = dict(input_size=size, stages=stages, num_joints=maps - int(background),
                  background=background, center_map=center, stage_kernel=int(kernel),
                  center_sigma=RELEASE_SIGMA * size / RELEASE_BOX)
    error = None
    for width in _width_candidates(net) or [1.0]:
        cfg = M.CPMConfig(name="caffe", width=width, **fields)
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
    """Check that the deploy file describes exactly :func:`cpm_nb.model.architecture`
    of ``config``: every layer's name, type, inputs and parameters, a ReLU after every
    convolution that has one, and no other layers with weights.  Raises
    :class:`CaffeError` naming the first layer that differs."""
    from cpm_nb import model as M

    seen = {"image"}
    for spec in M.architecture(config):
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


# --- 3b. any other CPM deploy file: a Keras network built from the prototxt itself ------------
#
# The release's original-architecture models (9x9 / 11x11 convolutions, layers named
# conv1_stage1, ..., an image branch per stage) do not fit cpm_nb.model's table, so they are
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


def _pair(layer: CaffeLayer, group: str, name: str, default) -> tuple[int, int]:
    """(h, w) of ``name`` (repeated, or ``name_h`` / ``name_w``) in ``group``."""
    p = (layer.params.get(group) or [{}])[0]
    if f"{name}_h" in p or f"{name}_w" in p:
        return (int((p.get(f"{name}_h") or [default])[0]),
                int((p.get(f"{name}_w") or [default])[0]))
    values = p.get(name) or [default]
    if values[0] is None:
        raise CaffeError(f"layer '{layer.name}' has no {group} {name}")
    return (int(values[0]), int(values[-1]))


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
    h, w = int(shape[2]), int(shape[3])
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
    from cpm_nb.runtime import import_keras

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
    """The :class:`~cpm_nb.model.CPMConfig` fields predict needs (input side, stages, maps,
    centre map) of a prototxt network, and its map names; the network itself is the saved
    model (``architecture: prototxt`` in ``cpm_config.json``)."""
    from cpm_nb import model as M

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
    joints = _joint_names(joints, maps, f"{where}: {plan.outputs[0]}")
    background = joints[-1] == "background"
    first = next((op for op in plan.ops if op.name == "Mconv1_stage2"), None)
    kernel = first.params["kernel"][0] if first and first.params["kernel"][0] % 2 else 7
    cfg = M.CPMConfig(name="caffe-prototxt", input_size=h, stages=len(plan.outputs),
                      num_joints=maps - int(background), background=background,
                      center_map=plan.center_map, stage_kernel=int(kernel),
                      center_sigma=RELEASE_SIGMA * h / RELEASE_BOX)
    return cfg, joints


# --- 4. weights -> Keras ------------------------------------------------------------------------


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
    from cpm_nb import model as M

    model = M.build_cpm(config, seed=0)
    for name, values in weights.items():
        model.get_layer(name).set_weights(values)
    return model


# --- 5. the release's test-time procedure -------------------------------------------------------


def mpii_map(joints) -> list[int | None]:
    """For each map name, its MPII joint id (None: background or not an MPII joint)."""
    from cpm_nb import skeleton

    return [skeleton.JOINT.get(j) for j in joints]


def release_preprocessing(joints, config, image_convs=("conv1_1",),
                          center_pooling: str = "pool_center_lower: average 9x9 stride 8, "
                                                "padding not counted") -> dict:
    """The ``preprocessing`` block of a converted run's ``cpm_config.json``: what the
    release does to an image before and after the network, as :mod:`cpm_nb.predict`
    applies it."""
    joints = list(joints)
    named = [j for j in joints if j != "background"]
    to_mpii = mpii_map(named)
    return {
        "from": "the CPM release's deploy network and test code",
        "caffe_input": "blob 'data' [1, 4, S, S]: B, G, R as x / 256 - 0.5, then the centre "
                       "map; a Slice layer splits it at channel 3",
        "channel_order": f"RGB: the input channels of {' and '.join(image_convs)} were "
                         "reversed at conversion (the Caffe model takes BGR)",
        "value_scaling": "x / 256 - 0.5, inside the Keras model (layer 'normalize')",
        "pad_value": 128,
        "resampling": "cpm-nb's crop: one bilinear affine warp per scale (the release: "
                      "MATLAB imresize, bicubic, then a crop)",
        "box_size": RELEASE_BOX,
        "input_size": config.input_size,
        "stride": 8,
        "center_map": {"sigma": RELEASE_SIGMA * config.input_size / RELEASE_BOX, "peak": 1.0,
                       "at": "the person centre: pixel 184 (0-based) of the 368 box in the "
                             "release's Python demo; cpm-nb crops with the person centre at "
                             "(S - 1) / 2 and puts the peak there",
                       "pooling": center_pooling},
        "person_height_px": round(200 * RELEASE_TARGET_DIST, 3),
        "target_dist": RELEASE_TARGET_DIST,
        "scales": list(RELEASE_SCALES),
        "decoding": "release",
        "decoding_note": "each scale's last-stage maps upsampled 8x (bicubic), resampled onto "
                         "the scale-1 crop, averaged; a joint is the argmax of its map",
        "joints": joints,
        "joints_to_mpii": to_mpii if None not in to_mpii else None,
        "derived_joints": {k: list(v) for k, v in DERIVED_JOINTS.items()},
    }


def upsample(maps: np.ndarray, factor: int = 8) -> np.ndarray:
    """``[M, M, C]`` maps resized ``factor`` times (bicubic, pixel centres aligned as in
    MATLAB's ``imresize`` and OpenCV's ``resize``)."""
    from PIL import Image

    m = maps.shape[0]
    size = (m * factor, m * factor)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(maps[..., c],
                                                                    dtype=np.float32), mode="F")
                                .resize(size, Image.Resampling.BICUBIC))
                     for c in range(maps.shape[-1])], axis=-1)


def _resample_axis(a: np.ndarray, factor: float, axis: int) -> np.ndarray:
    """Sample ``a`` along ``axis`` at ``half + factor * (i - half)`` (bilinear, 0 outside)."""
    n = a.shape[axis]
    half = (n - 1) / 2.0
    u = half + factor * (np.arange(n) - half)
    lo = np.floor(u).astype(int)
    frac = (u - lo).astype(np.float32)
    out = 0
    for k, w in ((lo, 1 - frac), (lo + 1, frac)):
        ok = (k >= 0) & (k < n)
        taken = np.take(a, np.clip(k, 0, n - 1), axis=axis)
        shape = [1] * a.ndim
        shape[axis] = n
        out = out + taken * (w * ok).reshape(shape)
    return out


def release_merge(maps: np.ndarray, factors) -> np.ndarray:
    """The release's multi-scale average, on the scale-1 crop at full resolution.

    ``maps[k]`` (``[M, M, C]``) come from the crop at scale ``factors[k]`` (same centre;
    ``factors[0] = 1``): each is upsampled 8x (bicubic), resampled onto the scale-1 crop
    (zero where that scale's crop does not reach) and the results are averaged -- the
    release sums the upsampled maps of all scales in the original image and divides by
    their number."""
    total = 0
    for f, one in zip(factors, maps):
        up = upsample(one, 8)
        total = total + _resample_axis(_resample_axis(up, f, 0), f, 1)
    return total / len(factors)


def argmax_joints(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) 0-based pixel of each channel's maximum ``[C, 2]`` and its value ``[C]``."""
    flat = maps.reshape(-1, maps.shape[-1])
    idx = flat.argmax(0)
    y, x = np.unravel_index(idx, maps.shape[:2])
    return np.stack([x, y], -1).astype(np.float64), flat[idx, np.arange(flat.shape[1])]


def release_decode(maps: np.ndarray, factors) -> tuple[np.ndarray, np.ndarray]:
    """Joints (0-based px of the scale-1 crop) and confidences from per-scale maps
    ``[n_scales, M, M, C]``: :func:`release_merge`, then :func:`argmax_joints`."""
    return argmax_joints(release_merge(maps, factors))


def to_mpii(joints: np.ndarray, conf: np.ndarray, to_ids) -> tuple[np.ndarray, np.ndarray]:
    """Joints of a model's maps ``[..., J, 2]`` in MPII order ``[..., 16, 2]``; the MPII
    joints the model lacks (:data:`DERIVED_JOINTS`) are the midpoint of two it has, with
    the lower of their confidences."""
    from cpm_nb import skeleton

    shape = joints.shape[:-2]
    out = np.zeros((*shape, skeleton.NUM_JOINTS, 2))
    c = np.zeros((*shape, skeleton.NUM_JOINTS))
    for k, j in enumerate(to_ids):
        out[..., j, :], c[..., j] = joints[..., k, :], conf[..., k]
    for name, (a, b) in DERIVED_JOINTS.items():
        j, a, b = skeleton.JOINT[name], skeleton.JOINT[a], skeleton.JOINT[b]
        if j not in to_ids:
            out[..., j, :] = (out[..., a, :] + out[..., b, :]) / 2
            c[..., j] = np.minimum(c[..., a], c[..., b])
    return out, c


def to_mpii_maps(maps: np.ndarray, to_ids) -> np.ndarray:
    """Maps ``[..., C]`` in MPII order ``[..., 16 (+1)]``: zeros for the joints the model
    does not predict, its background map (if any) last."""
    from cpm_nb import skeleton

    out = np.zeros((*maps.shape[:-1], skeleton.NUM_JOINTS + (maps.shape[-1] > len(to_ids))),
                   maps.dtype)
    for k, j in enumerate(to_ids):
        out[..., j] = maps[..., k]
    if maps.shape[-1] > len(to_ids):
        out[..., -1] = maps[..., len(to_ids)]
    return out


# --- 6. conversion -------------------------------------------------------------------------------


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _center_pooling(plan: NetPlan) -> str:
    pools = [op for op in plan.ops if op.kind == "pool" and plan.center_blob in op.bottoms]
    return "; ".join(f"{op.name}: {'average' if op.params['pool'] == 'AVE' else 'max'} "
                     f"{op.params['kernel'][0]}x{op.params['kernel'][1]} stride "
                     f"{op.params['stride'][0]}, Caffe's ceil mode, padding not counted"
                     for op in pools) or "none"


def _metadata(cfg, joints, prototxt: Path, caffemodel: Path, weights, seconds,
              plan: NetPlan | None = None) -> dict:
    import dataclasses

    from cpm_nb import skeleton
    from cpm_nb.runtime import versions

    named = [j for j in joints if j != "background"]
    short = dict(zip(skeleton.JOINT_NAMES, skeleton.SHORT_NAMES))
    used = set(plan.conv_shapes() if plan else caffe_conv_shapes(cfg))
    extra = {} if plan is None else {
        "architecture": "prototxt",
        "architecture_note": "built layer by layer from the prototxt (cpm_nb.caffe."
                             "build_prototxt_keras): cpm_config gives the input, stages, maps "
                             "and centre map; its width and stage_kernel do not describe "
                             "the layers, model.keras does",
        "params": plan.param_count()}
    preprocessing = release_preprocessing(joints, cfg) if plan is None else \
        release_preprocessing(joints, cfg, plan.image_convs, _center_pooling(plan))
    return {
        "format": "cpm-nb-model",
        "version": 1,
        "model_file": MODEL_FILE,
        "cpm_config": dataclasses.asdict(cfg),
        "joints": named,
        "joint_short_names": [short.get(j, j) for j in named],
        "input_size": cfg.input_size,
        "map_size": cfg.map_size,
        "stride": 8,
        "stages": cfg.stages,
        "outputs": plan.outputs if plan else cfg.output_names,
        "input": f"RGB uint8/float32 0..255, [B, S, S, 3], person centred, 200*scale px = "
                 f"{RELEASE_TARGET_DIST * 200 / RELEASE_BOX:.3f} x S (see cpm_nb.preprocess)",
        "normalisation": "inside the model: layer 'normalize' computes x / 256 - 0.5",
        "sigma": None,
        "training": None,
        "profile": None,
        "data": "the CPM release's trained weights",
        "steps": None,
        "wall_s": round(seconds, 1),
        "metrics": {},
        "source": "caffe",
        "caffe": {"prototxt": prototxt.name, "caffemodel": caffemodel.name,
                  "caffemodel_bytes": caffemodel.stat().st_size,
                  "caffemodel_sha256": _sha256(caffemodel),
                  "layers_converted": len(used),
                  "layers_ignored": sorted(n for n, w in weights.items() if n not in used)},
        "licence": LICENCE,
        "preprocessing": preprocessing,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def convert(prototxt, caffemodel, out, joints=None, force: bool = False) -> dict:
    """Convert a released CPM (deploy ``prototxt`` + ``caffemodel``) into the run folder
    ``out`` (``model.keras`` + ``cpm_config.json``, each written atomically).  Returns the
    ``cpm_config.json`` contents.  Raises :class:`CaffeError` (one line) for a file that
    is not a CPM caffemodel or does not match the prototxt, or an ``out`` that already
    holds a model (unless ``force``)."""
    start = time.perf_counter()
    prototxt, caffemodel, out = Path(prototxt), Path(caffemodel), Path(out)
    if (out / MODEL_FILE).exists() and not force:
        raise CaffeError(f"{out} already holds a {MODEL_FILE}; choose another --out or "
                         "pass --force to replace it")
    net = read_prototxt(prototxt)
    plan = None
    if net.get("conv1_1") is not None and net.get("conv5_2_CPM") is not None:
        cfg, names = config_from_net(net, str(prototxt), joints)  # cpm_nb.model's network
    else:  # e.g. the original architecture: built from the prototxt itself
        plan = plan_prototxt(net, str(prototxt))
        cfg, names = config_from_plan(plan, str(prototxt), joints)
    weights = read_caffemodel(caffemodel)
    if plan is None:
        model = build_keras(cfg, keras_weights(weights, cfg, str(caffemodel)))
    else:
        model = build_prototxt_keras(plan, prototxt_weights(weights, plan, str(caffemodel)))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CaffeError(f"cannot create the run folder {out}: {err}") from None
    _atomic_write(out / MODEL_FILE, model.save)
    meta = _metadata(cfg, names, prototxt, caffemodel, weights, time.perf_counter() - start,
                     plan)
    _atomic_write(out / CONFIG_FILE,
                  lambda p: p.write_text(json.dumps(meta, indent=1) + "\n"))
    return meta


# --- 7. the independent reference: OpenCV's Caffe importer --------------------------------------


def caffe_input(images: np.ndarray, center_maps: np.ndarray | None) -> np.ndarray:
    """The release's input blob ``[B, 4, S, S]`` (``[B, 3, S, S]`` without a centre map)
    for RGB images 0..255 ``[B, S, S, 3]``: BGR, ``x / 256 - 0.5``, then the centre map."""
    x = np.asarray(images, np.float32)[..., ::-1] / 256.0 - 0.5
    if center_maps is not None:
        x = np.concatenate([x, np.asarray(center_maps, np.float32)], axis=-1)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def opencv_stage_maps(prototxt, caffemodel, images, center_maps=None, outputs=None):
    """Run the Caffe files with OpenCV's importer (``cv2.dnn.readNetFromCaffe``, OpenCV 4)
    and return the blobs ``outputs`` (default: each stage's belief maps) as ``[B, M, M, C]``.
    For a convolution followed by a ReLU, ask for the ReLU's name to get the activated
    value (OpenCV returns a convolution's own blob before its in-place ReLU)."""
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    blob = caffe_input(images, center_maps)
    net.setInput(blob, "data" if center_maps is not None else "image")
    if outputs is None:
        stages = read_prototxt(prototxt)
        outputs = [n for n in ["conv5_2_CPM"] + [f"Mconv7_stage{t}" for t in range(2, 100)]
                   if stages.get(n) is not None]
    outs = net.forward(list(outputs))
    return [np.asarray(o).transpose(0, 2, 3, 1) for o in outs]


def parity(run, prototxt, caffemodel, images=None, seed: int = 0) -> list[dict]:
    """Compare a converted run with OpenCV on the same images, stage by stage: the largest
    absolute difference of the belief maps, and that difference relative to the maps'
    range.  ``images`` default: two random RGB images."""
    from cpm_nb import model as M
    from cpm_nb.predict import load_keras

    run = Path(run)
    meta = json.loads((run / CONFIG_FILE).read_text())
    cfg = M.CPMConfig(**meta["cpm_config"])
    names = meta.get("outputs") or cfg.output_names
    if images is None:
        rng = np.random.default_rng(seed)
        images = rng.integers(0, 256, (2, cfg.input_size, cfg.input_size, 3)).astype(np.float32)
    ours = M.make_predict_fn(load_keras(run / MODEL_FILE), config=cfg)(images)
    centers = M.center_maps(len(images), cfg) if cfg.center_map else None
    ref = opencv_stage_maps(prototxt, caffemodel, images, centers, names)
    rows = []
    for name, a, b in zip(names, ours, ref):
        diff = float(np.abs(a - b).max())
        span = float(b.max() - b.min()) or 1.0
        rows.append({"stage": name, "max_abs_diff": diff, "map_range": span,
                     "relative": diff / span})
    return rows


# --- 8. MPII validation predictions ---------------------------------------------------------------


def _split_order(split_file) -> list[tuple[int, int]]:
    from cpm_nb import mpii

    mat = mpii._load_mat(Path(split_file))
    if "RELEASE_img_index" not in mat or "RELEASE_person_index" not in mat:
        raise CaffeError(f"{split_file}: no RELEASE_img_index / RELEASE_person_index; "
                         "expected Tompson et al.'s detections.mat")
    img = np.asarray(mat["RELEASE_img_index"]).ravel().astype(int)
    per = np.asarray(mat["RELEASE_person_index"]).ravel().astype(int)
    return list(zip(img.tolist(), per.tolist()))


def _under(root, name: str, what: str) -> Path:
    hits = sorted(Path(root).expanduser().rglob(name)) if root else []
    if not hits:
        raise CaffeError(f"no {name} under {root}: give the {what} (or run "
                         "`cpm-nb prepare mpii --root DIR` first)")
    return hits[0]


def mpii_validation(run, out, root=None, annotations=None, split_file=None, images=None,
                    scales=None, limit=None, batch_size: int = 8,
                    progress: bool = True) -> tuple[Path, Path]:
    """Predict the standard 2,958 MPII validation people with a run folder (each person's
    ``objpos`` and ``scale``, the model's multi-scale search) and write the two files
    ``cpm-nb evaluate-mpii`` scores: ``out/gt_valid.mat`` (ground truth, ``pos_gt_src``
    16x2xN, ``jnt_missing``, ``headboxes_src``, ``dataset_joints``) and ``out/pred.mat``
    (``preds`` Nx16x2, 1-based original pixels), people in the order of the split file
    (Tompson et al.'s ``detections.mat``).  The annotation file, the split file and the
    ``images/`` folder are found under ``root`` (the folder of ``cpm-nb prepare mpii``)
    unless given.  ``limit``: only the first N people (a quick look)."""
    import scipy.io

    from cpm_nb import mpii, skeleton
    from cpm_nb.predict import ImageError, load_predictor

    annotations = annotations or _under(root, "mpii_human_pose_v1_u12_1.mat", "annotations")
    split_file = split_file or _under(root, "detections.mat", "split file")
    images = images or Path(root).expanduser() / "images"
    predictor = load_predictor(run)
    people = {p.key: p for p in mpii.read_annotations(annotations)}
    order = _split_order(split_file)[:limit]
    missing = [k for k in order if k not in people]
    if missing:
        raise CaffeError(f"{annotations}: {len(missing)} validation people of {split_file} "
                         f"are not in it (first: image {missing[0][0]}, person "
                         f"{missing[0][1]})")
    chosen = [people[k] for k in order]
    preds = np.zeros((len(chosen), skeleton.NUM_JOINTS, 2))
    for start in range(0, len(chosen), batch_size):
        group = chosen[start:start + batch_size]
        prepared = []
        for p in group:
            try:
                prepared.append(predictor.prepare(Path(images) / p.image, center=p.objpos,
                                                  scale=p.scale, scales=scales))
            except ImageError as err:
                raise CaffeError(str(err)) from None
        for k, pred in enumerate(predictor.run(prepared)):
            preds[start + k] = pred.joints
        if progress:
            print(f"\r{min(start + batch_size, len(chosen))}/{len(chosen)} people", end="",
                  flush=True)
    if progress:
        print()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    gt = np.stack([np.where(p.missing[:, None], 0.0, p.joints) for p in chosen])
    boxes = np.stack([np.asarray(p.head_box, float).reshape(2, 2) for p in chosen])
    names = np.array(skeleton.SHORT_NAMES, dtype=object)[None]
    gt_path, pred_path = out / "gt_valid.mat", out / "pred.mat"
    scipy.io.savemat(gt_path, {"pos_gt_src": gt.transpose(1, 2, 0),
                               "jnt_missing": np.stack([p.missing for p in chosen]).T
                               .astype(np.uint8),
                               "headboxes_src": boxes.transpose(1, 2, 0),
                               "dataset_joints": names})
    scipy.io.savemat(pred_path, {"preds": preds})
    return gt_path, pred_path


# --- 9. notebook 07: finding a converted model, an example without it, a figure -----------------


WITHOUT_RELEASE = """\
No converted release model was found, so there is nothing to draw here.  To see it:
  1. get the MPII model of the CPM release: model/_trained_MPI/pose_deploy_resize.prototxt
     from github.com/shihenw/convolutional-pose-machines-release, and
     pose_iter_320000.caffemodel (120 MB; the release's testing/get_model.sh downloads it);
  2. cpm-nb convert-caffe --prototxt pose_deploy_resize.prototxt \\
         --caffemodel pose_iter_320000.caffemodel --out runs/cpm-release --check
  3. set CPM_NB_RELEASE_RUN to that folder (on Colab: keep it in MyDrive/cpm_nb/runs/).
This cell then draws the released network's pose of the photo above, found with the
release's seven-scale search, next to its head (yellow), left knee (red) and right ankle
(blue) belief maps.  What to expect: a network trained on real MPII photos should put the
head, neck and shoulders on the person -- unlike our synthetic-data model in section 6 --
while the hips, knees and ankles, below the edge of this portrait, are guesses with low
confidence.  The weights keep the release's licence (non-commercial, no redistribution)."""


def find_converted(*candidates) -> Path | None:
    """The first of ``candidates`` (folders; None entries are skipped) that holds a model
    converted by :func:`convert`, or None."""
    for folder in candidates:
        if not folder:
            continue
        config = Path(folder).expanduser() / CONFIG_FILE
        try:
            meta = json.loads(config.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and meta.get("source") == "caffe":
            return config.parent
    return None


def example_files(folder, config="cpm-mpii-release", seed: int = 0) -> tuple[Path, Path]:
    """A deploy prototxt and a caffemodel with random weights for ``config``, in the
    release's layer names and binary format, plus two weightless training layers as a
    real snapshot has them: what can be converted when the real files are absent."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    proto = folder / "deploy.prototxt"
    proto.write_text(deploy_prototxt(config))
    extra = [("data", "CPMData", []), ("loss_stage1", "EuclideanLoss", [])]
    weights = write_caffemodel(folder / "random.caffemodel", extra + random_weights(config, seed))
    return proto, weights


def release_figure(pred, title: str | None = None):
    """The pose on the image, and the last stage's belief maps of the head, the left knee
    and the right ankle over the crop in the source article's colours (yellow, red, blue)."""
    import matplotlib.pyplot as plt

    from cpm_nb import evaluation, skeleton
    from cpm_nb.predict import draw_prediction, maps_overlay

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4), layout="constrained")
    draw_prediction(axes[0], pred, title=title)
    joints = [skeleton.JOINT[name] for name, _ in evaluation.ARTICLE_MAPS]
    colors = [color for _, color in evaluation.ARTICLE_MAPS]
    axes[1].imshow(maps_overlay(pred.crop, pred.stage_maps[-1], joints, colors))
    axes[1].set(xticks=[], yticks=[], title="head (yellow), left knee (red), right ankle (blue)")
    return fig


# --- CLI: cpm-nb convert-caffe --------------------------------------------------------------------


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prototxt", required=True, metavar="P",
                        help="the deploy file, e.g. pose_deploy_resize.prototxt")
    parser.add_argument("--caffemodel", required=True, metavar="W",
                        help="the trained weights, e.g. pose_iter_320000.caffemodel")
    parser.add_argument("--out", required=True, metavar="RUN",
                        help="run folder to write (model.keras + cpm_config.json)")
    parser.add_argument("--joints", metavar="NAMES",
                        help="comma-separated names of the maps, in order (default: the "
                             "release's order for 15 or 10 maps); 'background' last if any")
    parser.add_argument("--force", action="store_true",
                        help="replace the model of an existing run folder")
    parser.add_argument("--check", action="store_true",
                        help="compare the converted model with OpenCV's Caffe importer on two "
                             "random images, stage by stage (needs opencv-python-headless<5)")
    add_json_option(parser, "the conversion summary")


def summary(meta: dict, seconds: float) -> dict:
    """What ``cpm-nb convert-caffe`` reports about a conversion."""
    from cpm_nb import model as M

    cfg = M.CPMConfig(**meta["cpm_config"])
    return {"config": meta["cpm_config"], "params": meta.get("params") or M.count_params(cfg),
            "seconds": round(seconds, 2),
            "caffemodel_mb": round(meta["caffe"]["caffemodel_bytes"] / 1e6, 1),
            "layers_converted": meta["caffe"]["layers_converted"],
            "layers_ignored": meta["caffe"]["layers_ignored"],
            "joints": meta["preprocessing"]["joints"]}


def _run(args: argparse.Namespace) -> int:
    from cpm_nb import model as M
    from cpm_nb.cli import print_json

    joints = [j.strip() for j in args.joints.split(",")] if args.joints else None
    start = time.perf_counter()
    try:
        meta = convert(args.prototxt, args.caffemodel, args.out, joints, args.force)
    except CaffeError as err:
        raise CliError(str(err)) from None
    info = summary(meta, time.perf_counter() - start)
    cfg = M.CPMConfig(**meta["cpm_config"])
    if args.check:
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise CliError("--check needs OpenCV 4: pip install 'opencv-python-headless<5'") \
                from None
        info["check"] = parity(args.out, args.prototxt, args.caffemodel)
    if args.json:
        print_json(info, args.json)
        if args.json == "-":
            return 0
    print(f"converted {args.caffemodel} ({info['caffemodel_mb']} MB) in {info['seconds']} s: "
          f"{cfg.name}, {cfg.input_size} px, {cfg.stages} stages, {cfg.num_maps} maps, "
          f"{info['params']:,} parameters, {info['layers_converted']} convolutions")
    if info["layers_ignored"]:
        print(f"  ignored {len(info['layers_ignored'])} layers without a place in the network "
              f"(e.g. {', '.join(info['layers_ignored'][:3])})")
    for row in info.get("check", []):
        print(f"  OpenCV parity {row['stage']:<14} max |diff| {row['max_abs_diff']:.2e} = "
              f"{row['relative']:.1e} of the map range")
    print(f"  wrote {Path(args.out) / MODEL_FILE} and {CONFIG_FILE}; {LICENCE}")
    return 0


CONVERT_CAFFE = Command(
    name="convert-caffe",
    help="convert a released CPM Caffe model (prototxt + caffemodel) into a run folder",
    add_arguments=_arguments,
    run=_run,
    description="""\
Convert a Convolutional Pose Machine released by its authors (Caffe) into a
cpm-nb run folder (model.keras + cpm_config.json), without Caffe: the
prototxt is checked layer by layer against cpm-nb's network (or, for the
original architecture, the network is built from it), the weights are read
from the caffemodel by layer name (training-only layers are ignored), kernels
are turned into Keras layout and the image convolutions into RGB order. The run's
cpm_config.json records the release's preprocessing (BGR->RGB, x/256-0.5, pad
128, 368 box, centre map sigma 21, joint order) and test-time search, which
`cpm-nb predict` applies.

Bring the files yourself: the MPII model of convolutional-pose-machines-release
(model/_trained_MPI/pose_deploy_resize.prototxt and pose_iter_320000.caffemodel,
the network of the release's Python demo). The release's other pose models (MPII 630000,
MPII+LSP, LSP: pose_deploy_centerMap.prototxt; FLIC: pose_deploy.prototxt) use
the original 9x9/11x11 architecture: their network is built layer by layer
from the prototxt (Caffe layer names, ceil-mode pooling, every image branch
reversed to RGB, stage outputs = the convolutions no ReLU follows). predict
takes the 14-joint models; FLIC's 'head' is not an MPII joint, so predict
refuses a FLIC run. Converted weights keep the release's licence
(non-commercial use, no redistribution).

examples:
  cpm-nb convert-caffe --prototxt pose_deploy_resize.prototxt \\
                       --caffemodel pose_iter_320000.caffemodel --out runs/cpm-release
  cpm-nb convert-caffe --prototxt P --caffemodel W --out runs/cpm-release --check --json
  cpm-nb predict photo.jpg --model runs/cpm-release --box 120 40 330 600 --out poses/

scoring it on the MPII validation set (after `cpm-nb prepare mpii --root data/mpii`):
  python -c "from cpm_nb import caffe; caffe.mpii_validation('runs/cpm-release', \\
             'scores', root='data/mpii')"
  cpm-nb evaluate-mpii --annotations scores/gt_valid.mat --predictions scores/pred.mat
""",
)
