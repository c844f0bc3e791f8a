"""The record schema: the fields of the ``tf.train.Example`` that the prepared shards hold
for each person, in one table.

The writer (:mod:`cpm_nb.data.shards`), the tf.data reader (:mod:`cpm_nb.data.pipeline`)
and the NumPy reader (:mod:`cpm_nb.data.batches`) all follow :data:`FIELDS`: a field is
its name, its kind (``bytes``, ``float`` stored as float32, ``int`` stored as int64) and
its shape (``()`` for one bytes value; numbers are stored flat, row-major).
:func:`encode` and :func:`decode` are the plain-Python side (through
:mod:`cpm_nb.io.records`), :func:`tf_feature_spec` and :func:`tf_parse` the TensorFlow side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cpm_nb.core.errors import DataError
from cpm_nb.core.skeleton import NUM_JOINTS
from cpm_nb.io import records

KINDS = ("bytes", "float", "int")
_NUMPY = {"float": np.float32, "int": np.int64}


@dataclass(frozen=True)
class Field:
    """One feature of a record."""

    name: str
    kind: str  # one of KINDS
    shape: tuple[int, ...]  # () for a single bytes value
    doc: str

    @property
    def size(self) -> int:
        return math.prod(self.shape)


FIELDS: tuple[Field, ...] = (
    Field("image", "bytes", (), "JPEG of the context crop (the person, CONTEXT times wider)"),
    Field("joints", "float", (NUM_JOINTS, 2), "joints (x, y), 0-based context-crop pixels"),
    Field("visibility", "int", (NUM_JOINTS,), "0 missing, 1 occluded, 2 visible"),
    Field("center", "float", (2,), "the person's objpos, 1-based original pixels"),
    Field("scale", "float", (1,), "the person's scale (200 px units of its height)"),
    Field("orig_joints", "float", (NUM_JOINTS, 2), "joints, 1-based original pixels (0: missing)"),
    Field("head_box", "float", (4,), "head box x1, y1, x2, y2 (NaN: none)"),
    Field("ctx_matrix", "float", (3, 3), "original 1-based -> context-crop 0-based pixels"),
    Field("img_index", "int", (1,), "MPII image index (0: none)"),
    Field("person_index", "int", (1,), "MPII person index in its image (0: none)"),
    Field("image_name", "bytes", (), "the original image file, relative to the image folder"),
    Field("n_others", "int", (1,), "how many other people the image holds"),
)
BY_NAME = {f.name: f for f in FIELDS}


def encode(values: dict) -> bytes:
    """One serialised ``tf.train.Example`` of ``values`` (every field of :data:`FIELDS`,
    each of its shape); ``ValueError`` for a missing, extra or misshapen field."""
    extra = set(values) - set(BY_NAME)
    if extra:
        raise ValueError(f"not fields of the record schema: {sorted(extra)}")
    features = {}
    for field in FIELDS:
        if field.name not in values:
            raise ValueError(f"record field {field.name!r} is missing")
        value = values[field.name]
        if field.kind == "bytes":
            features[field.name] = value.encode() if isinstance(value, str) else bytes(value)
            continue
        array = np.asarray(value, _NUMPY[field.kind]).ravel()
        if array.size != field.size:
            raise ValueError(f"record field {field.name!r} needs {field.size} values "
                             f"(shape {field.shape}), got {array.size}")
        features[field.name] = array
    return records.encode_example(features)


def decode(data: bytes, source: str = "record") -> dict:
    """``{name: value}`` of a serialised record: bytes, or arrays of the field's shape
    (float32 / int64).  :class:`DataError` naming ``source`` for a record that does not
    follow the schema (a shard of another program or version)."""
    raw = records.decode_example(data)
    out = {}
    for field in FIELDS:
        value = raw.get(field.name)
        if field.kind == "bytes":
            if not isinstance(value, bytes):
                raise DataError(f"{source}: field {field.name!r} is missing or not one bytes "
                                "value; prepare the data again (`cpm-nb prepare ... --force`)")
            out[field.name] = value
            continue
        if not isinstance(value, np.ndarray) or value.size != field.size:
            got = "missing" if value is None else f"{getattr(value, 'size', '?')} values"
            raise DataError(f"{source}: field {field.name!r} should hold {field.size} "
                            f"{field.kind} values, found {got}; prepare the data again "
                            "(`cpm-nb prepare ... --force`)")
        out[field.name] = value.astype(_NUMPY[field.kind], copy=False).reshape(field.shape)
    return out


def tf_feature_spec(tf) -> dict:
    """The ``tf.io.parse_single_example`` features of :data:`FIELDS` (numbers flat)."""
    dtypes = {"bytes": tf.string, "float": tf.float32, "int": tf.int64}
    return {f.name: tf.io.FixedLenFeature([f.size] if f.shape else [], dtypes[f.kind])
            for f in FIELDS}


def tf_parse(record, tf) -> dict:
    """A serialised record parsed in the graph: ``{name: tensor}``, each of its field's shape."""
    parsed = tf.io.parse_single_example(record, tf_feature_spec(tf))
    return {f.name: tf.reshape(parsed[f.name], f.shape) if f.shape else parsed[f.name]
            for f in FIELDS}
