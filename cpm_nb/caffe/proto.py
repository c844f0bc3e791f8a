"""Reading and writing the released CPM Caffe files without Caffe: the deploy ``.prototxt``
(protobuf text format) and the ``.caffemodel`` (protobuf binary format).

:func:`read_prototxt` parses the text format into a :class:`CaffeNet` of
:class:`CaffeLayer` (a small parser of the text format, both the current ``layer`` and the
old ``layers`` syntax).  :func:`read_caffemodel` reads the weights with the wire-format
reader of :mod:`cpm_nb.io.protowire`, knowing only the few fields of Caffe's ``caffe.proto``
it needs (layer name and type, blobs, blob shape and data) and skipping everything else;
:func:`write_caffemodel` writes the same format (for tests and examples).  A file that
cannot be read is a :class:`CaffeError` naming it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpm_nb.core import files
from cpm_nb.core.errors import ModelError
from cpm_nb.io import protowire


class CaffeError(ModelError):
    """A prototxt or caffemodel that cannot be read or converted (one line: what, where)."""


# --- the prototxt: protobuf text format -------------------------------------------------

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


MAX_DEPTH = 32  # a deploy file nests 3 deep; more is not a Caffe network


def _message(tokens, i: int, close: str | None, depth: int = 0) -> tuple[dict, int]:
    """Parse fields until ``close`` ('}' or '>') or the end; returns (fields, next index).
    Every field is a list of values (scalars or nested dicts), in file order."""
    if depth > MAX_DEPTH:
        raise CaffeError(f"line {tokens[i - 1][2]}: messages nested more than {MAX_DEPTH} "
                         "deep: not a Caffe deploy file")
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
            sub, i = _message(tokens, i + 1, "}" if value == "{" else ">", depth + 1)
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


MAX_DIM = 1 << 16  # an input dimension (batch, channels, pixels) beyond this is a typo


def dimension(value, what: str, lo: int = 1, hi: int = MAX_DIM) -> int:
    """``value`` read from a prototxt as an integer in ``lo..hi``; :class:`CaffeError`
    naming ``what`` for 9.5, 1e400, 'abc', 0 or a negative size (Caffe's fields are
    integers: a fraction is a typo, never something to round)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CaffeError(f"{what} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise CaffeError(f"{what} must be from {lo} to {hi}, got {value}")
    return value


def _dims(values, what: str) -> tuple[int, ...]:
    return tuple(dimension(d, what) for d in values)


def _net_from_message(msg: dict) -> CaffeNet:
    inputs: dict[str, tuple[int, ...]] = {}
    names, dims = msg.get("input", []), list(_dims(msg.get("input_dim", []), "input_dim"))
    shapes = [_dims(s.get("dim", []), "input_shape dim") for s in msg.get("input_shape", [])]
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
                    inputs[top] = _dims(shape.get("dim", []), f"{layer.name}: input dim")
            layers.append(layer)
    _check_names(layers)
    for layer in layers:
        _check_sizes(layer)
    return CaffeNet(str((msg.get("name") or [""])[0]), inputs, layers)


# the size fields of a layer and their smallest value (a kernel or stride of 0 divides by 0)
SIZE_FIELDS = {"kernel_size": 1, "kernel_h": 1, "kernel_w": 1, "stride": 1, "stride_h": 1,
               "stride_w": 1, "pad": 0, "pad_h": 0, "pad_w": 0, "num_output": 1,
               "dilation": 1, "group": 1}


def _check_sizes(layer: CaffeLayer) -> None:
    """Every size field of ``convolution_param`` / ``pooling_param`` is an integer in
    range, whether or not the converter reads it."""
    for group in ("convolution_param", "pooling_param"):
        for params in layer.params.get(group) or []:
            for name, lowest in SIZE_FIELDS.items():
                for value in params.get(name, []) if isinstance(params, dict) else []:
                    dimension(value, f"layer '{layer.name}': {group} {name}", lowest, 4096)


_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def _check_names(layers: list[CaffeLayer]) -> None:
    """Layer names are unique and plain (letters, digits, ``_ . -``): they become Keras
    layer names and keys of the weights."""
    seen: set[str] = set()
    for layer in layers:
        if not _NAME.fullmatch(layer.name):
            raise CaffeError(f"layer name {layer.name!r} is empty or holds characters other "
                             "than letters, digits, '_', '.' and '-'")
        if layer.name in seen:
            raise CaffeError(f"layer name {layer.name!r} appears twice; names must be unique")
        seen.add(layer.name)


def read_prototxt(path) -> CaffeNet:
    """Read a deploy ``.prototxt``; :class:`CaffeError` names the file and line."""
    path = Path(path)
    data = files.read_input(path, "prototxt", MAX_PROTOTXT_BYTES, CaffeError)
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as err:
        raise CaffeError(f"{path} is not a text prototxt: {err}") from None
    try:
        net = _net_from_message(parse_prototxt(text))
    except CaffeError as err:
        raise CaffeError(f"{path}: {err}") from None
    except (ValueError, TypeError, AttributeError, RecursionError) as err:  # wrong kind
        raise CaffeError(f"{path} is not a Caffe deploy prototxt: {err}") from None
    if not net.layers:
        raise CaffeError(f"{path} holds no layers: not a Caffe deploy prototxt")
    return net


# --- the caffemodel: protobuf wire format -------------------------------------------------

# The fields of caffe.proto that the converter reads; all others are skipped.
NET_FIELDS = {"layers": 2, "layer": 100}  # NetParameter: V1LayerParameter, LayerParameter
LAYER_FIELDS = {"name": 1, "type": 2, "blobs": 7}  # LayerParameter (type: a string)
V1_LAYER_FIELDS = {"name": 4, "type": 5, "blobs": 6}  # V1LayerParameter (type: an enum)
BLOB_FIELDS = {"num": 1, "channels": 2, "height": 3, "width": 4, "data": 5, "shape": 7,
               "double_data": 8}  # BlobProto (data: packed float, double_data: packed double)
SHAPE_DIM = 1  # BlobShape: repeated int64 dim (packed)
MAX_BLOB_DIM = 1 << 20
MAX_CAFFEMODEL_BYTES = 2 << 30  # the release's model is 0.2 GB; protobuf stops at 2 GB
MAX_PROTOTXT_BYTES = 16 << 20
VARINT, LENGTH = protowire.VARINT, protowire.LENGTH  # wire types


def _fields(buf):
    """:func:`cpm_nb.io.protowire.fields` with its errors as :class:`CaffeError`."""
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
    if any(isinstance(v, int) for _, v in values):
        raise CaffeError(f"blob data sent as a varint, not as {dtype[-1]}-byte floats")
    raw = b"".join(bytes(v) for _, v in values)
    size = np.dtype(dtype).itemsize
    if len(raw) % size:
        raise CaffeError(f"blob data of {len(raw)} bytes is not a whole number of "
                         f"{size}-byte floats")
    return np.frombuffer(raw, dtype=dtype)


def _blob(buf) -> np.ndarray:
    got: dict[int, list] = {}
    for number, wire, value in _fields(buf):
        got.setdefault(number, []).append((wire, value))
    if BLOB_FIELDS["shape"] in got:
        if got[BLOB_FIELDS["shape"]][-1][0] != LENGTH:
            raise CaffeError("a blob shape sent as a number, not as a BlobShape message")
        shape_fields = [(w, v) for n, w, v in _fields(got[BLOB_FIELDS["shape"]][-1][1])
                        if n == SHAPE_DIM]
        shape = tuple(_packed_varints(shape_fields))
    else:  # the deprecated 4D dimensions
        legacy = [got.get(BLOB_FIELDS[k], [(VARINT, 0)])[-1][1]
                  for k in ("num", "channels", "height", "width")]
        shape = tuple(legacy)
    if any(not isinstance(d, int) or d < 0 or d > MAX_BLOB_DIM for d in shape):
        raise CaffeError(f"a blob shape {list(shape)} with a dimension out of range")
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
    for k, blob in enumerate(blobs):
        bad = int(np.size(blob) - np.count_nonzero(np.isfinite(blob)))
        if bad:
            raise CaffeError(f"layer {name!r}: blob {k} holds {bad} NaN or infinite "
                             "weights; the file is damaged or was saved from a diverged run")
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
    data = files.read_input(path, "caffemodel", MAX_CAFFEMODEL_BYTES, CaffeError)
    try:
        layers = parse_caffemodel(data)
    except (CaffeError, RecursionError) as err:
        raise CaffeError(f"{path} is not a Caffe model (a binary NetParameter): {err}") from None
    if not layers:
        raise CaffeError(f"{path} is not a Caffe model: it holds no named layers")
    return layers


# Writing (for tests and examples: random weights in the release's format).

def blob_bytes(array, legacy_shape: bool = False) -> bytes:
    """A ``BlobProto``: the shape (``BlobShape``, or num/channels/height/width when
    ``legacy_shape``) and the values as packed little-endian float32."""
    a = np.ascontiguousarray(array, dtype="<f4")
    if legacy_shape:
        dims = (1,) * (4 - a.ndim) + a.shape
        head = b"".join(protowire.field_bytes(BLOB_FIELDS[k], d)
                        for k, d in zip(("num", "channels", "height", "width"), dims))
    else:
        dims = b"".join(protowire.varint_bytes(d) for d in a.shape)
        head = protowire.field_bytes(BLOB_FIELDS["shape"], protowire.field_bytes(SHAPE_DIM, dims))
    return head + protowire.field_bytes(BLOB_FIELDS["data"], a.tobytes())


def caffemodel_bytes(layers: Iterable[tuple[str, str, list]], v1: bool = False,
                     legacy_shape: bool = False) -> bytes:
    """A binary ``NetParameter`` with the given (name, type, blobs) layers."""
    names = V1_LAYER_FIELDS if v1 else LAYER_FIELDS
    numbers = {v: k for k, v in V1_TYPE_NUMBERS.items()}
    out = [protowire.field_bytes(1, b"cpm-nb")]  # NetParameter.name
    for name, kind, blobs in layers:
        body = protowire.field_bytes(names["name"], name.encode())
        body += protowire.field_bytes(names["type"], numbers.get(kind, 0) if v1 else kind.encode())
        body += b"".join(protowire.field_bytes(names["blobs"], blob_bytes(b, legacy_shape))
                         for b in blobs)
        out.append(protowire.field_bytes(NET_FIELDS["layers" if v1 else "layer"], body))
    return b"".join(out)


def write_caffemodel(path, layers: Iterable[tuple[str, str, list]], **kwargs) -> Path:
    """Write :func:`caffemodel_bytes` to ``path``."""
    path = Path(path)
    path.write_bytes(caffemodel_bytes(layers, **kwargs))
    return path
