"""MPII Human Pose annotations: the official ``.mat`` files, a compact JSON form, the split.

The official annotation file ``mpii_human_pose_v1_u12_1.mat`` holds one MATLAB
struct ``RELEASE`` with ``annolist`` (one entry per image: ``image.name`` and an
``annorect`` struct array, one element per person), ``img_train`` (1 train /
0 test), ``single_person`` (per image, the indices of well separated people)
and ``act`` (per image, activity category and name).  Each person (``annorect``)
has a head box ``x1 y1 x2 y2``, a rough centre ``objpos.x/y``, a ``scale``
(person height / 200 px) and ``annopoints.point`` (one struct per *annotated*
joint: ``x, y, id, is_visible``).  Test people carry only ``objpos`` and ``scale``.

:func:`read_annotations` flattens this into one :class:`Person` per annotated
rectangle.  It also reads a ``.mat`` holding a bare ``annolist`` with one
person per entry plus ``RELEASE_img_index`` / ``RELEASE_person_index`` (the
layout of Tompson et al.'s ``detections.mat``, which defines the standard
2,958-person validation set), and the JSON written by :func:`write_json`.

Conventions
-----------
* **Coordinates stay 1-based**, as in the file (MATLAB: the centre of the
  top-left pixel is (1, 1)); :mod:`cpm_nb.data.preprocess` handles the shift.
* ``joints`` is (16, 2) float in MPII joint order (:mod:`cpm_nb.core.skeleton`);
  joints that are not annotated are ``missing`` and stored as (0, 0).
* ``visible``: ``is_visible`` read as a number, an empty array (always the case
  for ids 8 and 9, upper neck and head top, whose points come from the head box:
  read as visible) or a string ``'0'``/``'1'``.  ``visibility`` gives the int code
  used downstream: 0 missing, 1 occluded, 2 visible.
* ``img_index`` / ``person_index`` are the **1-based** indices of the image in
  ``RELEASE.annolist`` and of the person in its ``annorect``: the keys the
  standard split uses.

Quirks handled: ``is_visible`` empty / numeric / string; absent points; integer
(uint8/uint16) vs float coordinates; people without ``annopoints`` (kept, all
joints missing); test images without joints; rectangles without ``objpos`` or
``scale`` (no usable person: counted in ``skipped`` and left out).

The standard train/validation split
-----------------------------------
Validation is the 2,958-person set of Tompson et al. (CVPR 2015), published as
``mpii_valid_pred.zip`` (``data/detections.mat``, :data:`TOMPSON_SPLIT_URL`):
:func:`read_split` reads its ``RELEASE_img_index`` / ``RELEASE_person_index``
and :func:`split_train_val` puts exactly those people in validation and every
other annotated training person in train.  Nothing is guessed: without that
file there is no standard split (``cpm-nb prepare mpii`` downloads it, or takes
``--split-file``).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpm_nb.core import files, skeleton
from cpm_nb.core.errors import DataError

NUM_JOINTS = skeleton.NUM_JOINTS
JSON_FORMAT = "cpm-nb-annotations"
JSON_VERSION = 1

# Tompson et al.'s validation predictions; data/detections.mat defines the split.
TOMPSON_SPLIT_URL = "http://www.cims.nyu.edu/~tompson/data/mpii_valid_pred.zip"
NUM_VALIDATION_PEOPLE = 2958


class MpiiFormatError(DataError):
    """An annotation file that is missing, unreadable or not in the MPII layout."""


@dataclass(eq=False)
class Person:
    """One annotated person (1-based pixel coordinates, as in the MPII file)."""

    image: str | None
    joints: np.ndarray  # (16, 2) float64 x, y; (0, 0) where missing
    missing: np.ndarray  # (16,) bool: the joint is not annotated
    visible: np.ndarray  # (16,) bool: annotated and not occluded
    objpos: np.ndarray  # (2,) float64 rough person centre; NaN when the file has none
    scale: float  # person height / 200 px; NaN when the file has none
    head_box: np.ndarray | None = None  # (4,) x1, y1, x2, y2
    img_index: int | None = None  # 1-based index in RELEASE.annolist
    person_index: int | None = None  # 1-based index in the image's annorect
    is_train: bool | None = None
    single_person: bool | None = None
    activity: dict | None = None  # {"category", "name", "id"}
    image_size: tuple[int, int] | None = None  # (width, height) when known
    flags: dict = field(default_factory=dict)  # extra facts (the synthetic set's ground truth)

    @property
    def visibility(self) -> np.ndarray:
        """int32 (16,): 0 missing, 1 annotated but occluded, 2 annotated and visible."""
        v = np.where(self.missing, 0, np.where(self.visible, 2, 1))
        return v.astype(np.int32)

    @property
    def num_annotated(self) -> int:
        return int((~self.missing).sum())

    @property
    def key(self) -> tuple[int | None, int | None]:
        """(img_index, person_index): the identity the standard split uses."""
        return (self.img_index, self.person_index)

    def to_dict(self) -> dict:
        def num(v):
            v = float(v)
            return None if math.isnan(v) else v

        return {
            "image": self.image,
            "joints": [[num(x), num(y)] for x, y in self.joints],
            "missing": [bool(m) for m in self.missing],
            "visible": [bool(v) for v in self.visible],
            "objpos": [num(v) for v in self.objpos],
            "scale": num(self.scale),
            "head_box": None if self.head_box is None else [float(v) for v in self.head_box],
            "img_index": self.img_index,
            "person_index": self.person_index,
            "is_train": self.is_train,
            "single_person": self.single_person,
            "activity": self.activity,
            "image_size": None if self.image_size is None else list(self.image_size),
            "flags": self.flags,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Person:
        def arr(v, shape):
            a = np.array([np.nan if x is None else x for x in np.ravel(v)], dtype=np.float64)
            return a.reshape(shape)

        return cls(
            image=d.get("image"),
            joints=arr(d["joints"], (NUM_JOINTS, 2)),
            missing=np.array(d["missing"], dtype=bool),
            visible=np.array(d["visible"], dtype=bool),
            objpos=arr(d.get("objpos") or [None, None], (2,)),
            scale=float("nan") if d.get("scale") is None else float(d["scale"]),
            head_box=None if d.get("head_box") is None else arr(d["head_box"], (4,)),
            img_index=d.get("img_index"),
            person_index=d.get("person_index"),
            is_train=d.get("is_train"),
            single_person=d.get("single_person"),
            activity=d.get("activity"),
            image_size=None if d.get("image_size") is None else tuple(d["image_size"]),
            flags=d.get("flags") or {},
        )


# --- reading MATLAB structs -----------------------------------------------------------


def _items(value) -> list:
    """The elements of a MATLAB struct/cell array (any shape), or [] when empty."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return [v for v in value.ravel(order="F")]
        if value.size == 0:
            return []
        return [value]
    return [value]


def _struct(value):
    """The single struct in ``value`` (a 1x1 struct array), or None when empty."""
    items = _items(value)
    return items[0] if items and hasattr(items[0], "_fieldnames") else None


def _get(struct, name):
    return getattr(struct, name, None) if struct is not None else None


def _number(value) -> float | None:
    """A scalar from a numeric array, a string, or None when empty/unparseable."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    a = np.asarray(value)
    if a.size == 0:
        return None
    if a.dtype.kind in "US":
        return _number(str(a.ravel()[0]))
    if a.dtype == object:
        return _number(a.ravel()[0])
    return float(a.ravel()[0])


def _string(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    a = np.asarray(value)
    if a.size == 0:
        return None
    if a.dtype == object:
        return _string(a.ravel()[0])
    return str(a.ravel()[0]) if a.dtype.kind in "US" else None


def _visible_flag(value) -> bool:
    """``is_visible``: empty -> True (the head points), else number or string 0/1."""
    number = _number(value)
    return True if number is None else bool(number)


def _person(rect, image, img_index, person_index, is_train, single, activity,
            skipped: Counter | None) -> Person | None:
    objpos = _struct(_get(rect, "objpos"))
    x, y = _number(_get(objpos, "x")), _number(_get(objpos, "y"))
    scale = _number(_get(rect, "scale"))
    joints = np.zeros((NUM_JOINTS, 2))
    missing = np.ones(NUM_JOINTS, bool)
    visible = np.zeros(NUM_JOINTS, bool)
    annopoints = _struct(_get(rect, "annopoints"))
    for point in _items(_get(annopoints, "point")):
        jid, px, py = (_number(_get(point, k)) for k in ("id", "x", "y"))
        if jid is None or px is None or py is None:
            continue
        jid = int(jid)
        if not 0 <= jid < NUM_JOINTS or not missing[jid]:
            if skipped is not None:
                skipped["joint with a bad or repeated id (ignored)"] += 1
            continue
        joints[jid] = (px, py)
        missing[jid] = False
        visible[jid] = _visible_flag(_get(point, "is_visible"))
    if x is None or y is None or scale is None:
        if skipped is not None:
            skipped["rectangle without objpos or scale"] += 1
        return None
    box = [_number(_get(rect, k)) for k in ("x1", "y1", "x2", "y2")]
    return Person(
        image=image, joints=joints, missing=missing, visible=visible,
        objpos=np.array([x, y], dtype=np.float64), scale=float(scale),
        head_box=None if any(b is None for b in box) else np.array(box, dtype=np.float64),
        img_index=img_index, person_index=person_index, is_train=is_train,
        single_person=single, activity=activity,
    )


def _load_mat(path: Path) -> dict:
    from scipy.io import loadmat

    if not path.is_file():
        raise FileNotFoundError(f"MPII annotation file not found: {path}")
    try:
        return loadmat(path, struct_as_record=False, squeeze_me=False)
    except NotImplementedError as err:  # MATLAB v7.3 (HDF5)
        raise MpiiFormatError(f"{path}: MATLAB v7.3 files are not supported ({err}); "
                              "save it with -v7 or use the official file") from err
    except Exception as err:  # scipy raises ValueError, TypeError, MatReadError, ...
        raise MpiiFormatError(f"{path}: not a readable MATLAB .mat file ({type(err).__name__}: "
                              f"{err}); is the download complete?") from err


def read_annotations(path, skipped: Counter | None = None) -> list[Person]:
    """Read people from the official ``RELEASE`` .mat, a bare-``annolist`` .mat, or our JSON.

    Returns one :class:`Person` per rectangle that has a centre and a scale,
    in file order; ``skipped`` (a Counter), when given, counts what was left out
    and why.  Raises ``FileNotFoundError`` or :class:`MpiiFormatError` with a
    one-line reason for a missing, corrupt or foreign file.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        return read_json(path)
    mat = _load_mat(path)
    if "RELEASE" in mat:
        return _read_release(_struct(mat["RELEASE"]), path, skipped)
    if "annolist" in mat:
        return _read_annolist(mat, skipped)
    names = ", ".join(k for k in mat if not k.startswith("__")) or "none"
    raise MpiiFormatError(f"{path}: no RELEASE or annolist variable (variables: {names}); "
                          "not an MPII annotation file")


def _read_release(release, path: Path, skipped: Counter | None) -> list[Person]:
    if release is None or not hasattr(release, "annolist"):
        raise MpiiFormatError(f"{path}: RELEASE has no annolist field")
    annolist = _items(release.annolist)
    img_train = np.asarray(_get(release, "img_train") if hasattr(release, "img_train")
                           else []).ravel()
    singles = _items(_get(release, "single_person"))
    acts = _items(_get(release, "act"))
    people = []
    for i, entry in enumerate(annolist):
        image = _string(_get(_struct(_get(entry, "image")), "name"))
        is_train = bool(img_train[i]) if i < img_train.size else None
        single_set = None
        if i < len(singles):
            single_set = {int(v) for v in np.asarray(singles[i]).ravel()
                          if np.asarray(singles[i]).dtype != object}
        activity = None
        if i < len(acts):
            act = acts[i]
            act_id = _number(_get(act, "act_id"))
            activity = {"category": _string(_get(act, "cat_name")),
                        "name": _string(_get(act, "act_name")),
                        "id": None if act_id is None else int(act_id)}
        for r, rect in enumerate(_items(_get(entry, "annorect"))):
            single = None if single_set is None else (r + 1) in single_set
            person = _person(rect, image, i + 1, r + 1, is_train, single, activity, skipped)
            if person is not None:
                people.append(person)
    return people


def _read_annolist(mat: dict, skipped: Counter | None) -> list[Person]:
    annolist = _items(mat["annolist"])
    img_idx = np.asarray(mat.get("RELEASE_img_index", [])).ravel()
    per_idx = np.asarray(mat.get("RELEASE_person_index", [])).ravel()
    people = []
    for i, entry in enumerate(annolist):
        image = _string(_get(_struct(_get(entry, "image")), "name"))
        rects = _items(_get(entry, "annorect"))
        for r, rect in enumerate(rects):
            if len(rects) == 1 and i < img_idx.size and i < per_idx.size:
                keys = int(img_idx[i]), int(per_idx[i])  # Tompson layout: one person per entry
            else:
                keys = i + 1, r + 1  # indices within this annolist
            person = _person(rect, image, keys[0], keys[1], None, None, None, skipped)
            if person is not None:
                people.append(person)
    return people


# --- JSON -----------------------------------------------------------------------------


def write_json(people: list[Person], path, **meta) -> Path:
    """Write people (and optional metadata) as compact JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": JSON_FORMAT, "version": JSON_VERSION, "meta": meta,
           "people": [p.to_dict() for p in people]}
    files.atomic_write_json(path, doc, indent=None)
    return path


def read_json(path) -> list[Person]:
    """Read people written by :func:`write_json` (clear errors for other files)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        doc = files.read_json(path, "annotation file")
    except DataError as err:
        raise MpiiFormatError(str(err)) from None
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        raise MpiiFormatError(f"{path}: not a {JSON_FORMAT} file")
    try:
        return [Person.from_dict(d) for d in doc["people"]]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise MpiiFormatError(f"{path}: a person record is malformed ({type(err).__name__}: "
                              f"{err}); write the file again with write_json") from None


def read_json_meta(path) -> dict:
    """The ``meta`` block of a file written by :func:`write_json`."""
    doc = files.read_json(path, "annotation file")
    return doc.get("meta", {}) if isinstance(doc, dict) else {}


# --- the standard split ----------------------------------------------------------------


def read_split(path) -> set[tuple[int, int]]:
    """The validation people, as (img_index, person_index) 1-based pairs, from a
    ``detections.mat``-style file (``RELEASE_img_index``, ``RELEASE_person_index``)."""
    mat = _load_mat(Path(path))
    if "RELEASE_img_index" not in mat or "RELEASE_person_index" not in mat:
        raise MpiiFormatError(f"{path}: no RELEASE_img_index / RELEASE_person_index; "
                              "expected Tompson et al.'s detections.mat")
    try:
        img = np.asarray(mat["RELEASE_img_index"]).ravel().astype(int)
        per = np.asarray(mat["RELEASE_person_index"]).ravel().astype(int)
    except (TypeError, ValueError) as err:
        raise MpiiFormatError(f"{path}: RELEASE_img_index / RELEASE_person_index must be "
                              f"numbers ({err})") from None
    if img.size != per.size:
        raise MpiiFormatError(f"{path}: RELEASE_img_index has {img.size} entries but "
                              f"RELEASE_person_index {per.size}")
    return set(zip(img.tolist(), per.tolist()))


def split_train_val(people: list[Person], validation: set[tuple[int, int]]):
    """(train, val): val = the people whose key is in ``validation``; train = every other
    person of a training image (``is_train`` not False).  Test-set people are in neither."""
    val = [p for p in people if p.key in validation]
    train = [p for p in people if p.key not in validation and p.is_train is not False]
    return train, val


# --- statistics -------------------------------------------------------------------------


def missing_counts(people: list[Person]) -> dict[str, int]:
    """Per joint name, how many people lack that joint."""
    counts = np.sum([p.missing for p in people], axis=0) if people else np.zeros(NUM_JOINTS)
    return {name: int(c) for name, c in zip(skeleton.JOINT_NAMES, counts)}


def people_per_image(people: list[Person]) -> Counter:
    """Histogram: number of people per image -> number of images."""
    per_image = Counter(p.image if p.image is not None else p.img_index for p in people)
    return Counter(per_image.values())


def statistics(people: list[Person]) -> dict:
    """Counts a notebook plots: people per image, annotated / visible people per joint,
    the scales and the activities."""
    vis = np.stack([p.visibility for p in people]) if people else np.zeros((0, NUM_JOINTS))
    acts = Counter((p.activity or {}).get("name") or "unknown" for p in people)
    return {
        "people": len(people),
        "images": len({p.image if p.image is not None else p.img_index for p in people}),
        "people_per_image": dict(sorted(people_per_image(people).items())),
        "annotated_per_joint": (vis > 0).sum(0).astype(int),
        "visible_per_joint": (vis == 2).sum(0).astype(int),
        "scales": np.array([p.scale for p in people]),
        "activities": dict(acts.most_common()),
    }


# --- writing the official layout (small files for tests and examples) -------------------


def _struct_array(dicts: list[dict]) -> np.ndarray:
    names = []
    for d in dicts:
        names += [k for k in d if k not in names]
    arr = np.zeros((1, len(dicts)), dtype=[(n, object) for n in names])
    for i, d in enumerate(dicts):
        for n in names:
            arr[0, i][n] = d.get(n, np.zeros((0, 0)))
    return arr


def write_release_mat(path, images: list[dict]) -> Path:
    """Write a small annotation file in the official ``RELEASE`` layout.

    ``images``: dicts with ``name``, ``train`` (bool), ``people`` (list of dicts with
    any of ``objpos`` (x, y), ``scale``, ``head_box`` (x1, y1, x2, y2) and
    ``points`` (list of (id, x, y, is_visible) with values stored as given, so a
    test can use uint16, float or string ``is_visible``)), optional ``single``
    (1-based person indices) and ``activity`` (category, name, id).
    """
    from scipy.io import savemat

    annolist, single, acts = [], [], []
    for img in images:
        rects = []
        for p in img.get("people", []):
            rect = {}
            if "head_box" in p:
                for k, v in zip(("x1", "y1", "x2", "y2"), p["head_box"]):
                    rect[k] = v
            if "points" in p:
                pts = [{"x": x, "y": y, "id": np.uint8(j),
                        "is_visible": np.zeros((0, 0)) if vis is None else vis}
                       for j, x, y, vis in p["points"]]
                rect["annopoints"] = {"point": _struct_array(pts)}
            if "scale" in p:
                rect["scale"] = p["scale"]
            if "objpos" in p:
                rect["objpos"] = {"x": p["objpos"][0], "y": p["objpos"][1]}
            rects.append(rect)
        annolist.append({"image": {"name": img["name"]},
                         "annorect": _struct_array(rects) if rects else np.zeros((0, 0))})
        single.append(np.array(img.get("single", []), dtype=np.float64).reshape(-1, 1))
        cat, name, aid = img.get("activity", ("", "", -1))
        acts.append({"cat_name": cat, "act_name": name, "act_id": aid})
    single_cell = np.empty((len(images), 1), dtype=object)
    for i, s in enumerate(single):
        single_cell[i, 0] = s
    release = {
        "annolist": _struct_array(annolist),
        "img_train": np.array([[1 if img.get("train", True) else 0 for img in images]]),
        "single_person": single_cell,
        "act": _struct_array(acts).reshape(-1, 1),
        "version": "12",
    }
    path = Path(path)
    savemat(path, {"RELEASE": release}, do_compression=True)
    return path
