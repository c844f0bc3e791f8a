"""Running a trained CPM on any image: load, place the person, crop, predict, decode, draw.

The path of one image
---------------------
1. **Load** a file (any format Pillow reads; grayscale, palette, CMYK and RGBA
   images are converted to RGB, and the EXIF orientation of a phone photo is
   applied) or an array (``[H, W]`` grayscale, ``[H, W, 3|4]``; uint8, or float
   in 0..1).
2. **Place the person**: CPM is a single-person estimator that expects the person
   centred at a known size.  The person is given by its MPII centre and scale
   (``200 * scale`` pixels ~ the person's height), or by a box
   (:func:`person_from_box`: centre of the box, ``scale = max(box side) / 200``),
   or, by default, the image centre with the person as tall as the image.
3. **Crop** the ``S x S`` model input with the training crop matrix
   (:func:`cpm_nb.preprocess.crop_matrix`: the person spans 0.64 of the crop side;
   pixels outside the image are grey).  Optionally at several scale factors
   (the paper averages the belief maps over scales 0.7 ... 1.3): each scale's maps
   are resampled onto the grid of the scale-1 crop and averaged there.
4. **Predict** with the compiled forward pass (:func:`cpm_nb.model.make_predict_fn`),
   several images per call.
5. **Decode** the last stage's maps with sub-pixel refinement
   (:func:`cpm_nb.heatmaps.decode`; the confidence of a joint is its map's peak
   value) and map the joints back to the original image with ``inv(M)``
   (:func:`cpm_nb.heatmaps.to_original`).

Pixel convention of the results
-------------------------------
Joint coordinates (and ``--center`` / ``--box`` on the command line) are
**1-based**, as in MPII and MATLAB: the centre of the top-left pixel is (1, 1).
Subtract 1 for 0-based NumPy / PIL / matplotlib ``imshow`` coordinates
(:func:`draw_prediction` does).  The same numbers can therefore be put into an
MPII predictions file and scored with ``cpm-nb evaluate-mpii``.

Models
------
A model is a run folder of ``cpm-nb train`` (``model.keras`` + ``cpm_config.json``)
or a ``.keras`` file; it is loaded with Keras *safe mode* (no arbitrary Python
code is deserialised).  :func:`load_predictor` checks that it is a CPM for the 16
MPII joints (an optional background map is ignored) and that ``cpm_config.json``
agrees with the network; anything else is a :class:`ModelError`.  A run converted
from the released Caffe models (:mod:`cpm_nb.caffe`) carries a ``preprocessing``
block: its 14 joints are put in MPII order (pelvis and thorax are the midpoints of
the hips and of the shoulders), the default scales are the release's search
(0.7 ... 1.3) and joints are decoded as the release does (:func:`cpm_nb.caffe.release_decode`).

``cpm-nb predict`` (:data:`PREDICT`) runs this on image files and writes overlay
PNGs and JSON; ``python -m cpm_nb.bench predict`` (:func:`bench_predict`) times
the whole path against the raw forward pass.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpm_nb import files, preprocess, skeleton
from cpm_nb.cli import (
    CliError,
    Command,
    add_json_option,
    finite_float,
    float_in_range,
    int_in_range,
    positive_float,
)
from cpm_nb.config import OUTPUT_STRIDE

MODEL_FILE = "model.keras"  # the names cpm_nb.train writes (kept here: no TF import at start)
CONFIG_FILE = "cpm_config.json"
PIXEL_CONVENTION = ("1-based (MPII / MATLAB): the centre of the top-left pixel is (1, 1); "
                    "subtract 1 for 0-based NumPy / PIL indices")
PAPER_SCALES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)  # the paper's multi-scale test search
DEFAULT_BATCH = 8
MAX_BATCH = 256


class ImageError(files.DataError):
    """An image that cannot be read or used (one image of a batch; the others go on)."""


class ModelError(ValueError):
    """A model file or folder that is missing, unreadable or not a 16-joint CPM."""


# --- 1. images -------------------------------------------------------------------------------


def _to_rgb(im):
    """A PIL image in 8-bit RGB: EXIF orientation applied, alpha composited on white,
    16-bit scaled (:func:`cpm_nb.files.decode_rgb`)."""
    return files.decode_rgb(im, _name(im), exif=True)[0]


def _array_to_pil(array):
    from PIL import Image

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise ImageError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4], got {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ImageError("the image array holds NaN or infinite values")
        if a.max(initial=0) <= 1.0:  # floats in 0..1
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))  # L, RGB or RGBA from the shape


def open_image(source):
    """``source`` (a path, JPEG/PNG bytes, a PIL image or an array) as a PIL image (lazy:
    a file's pixels are decoded on first use).  Raises :class:`ImageError` (one line
    naming the file) for a missing, unreadable or oversized (decompression bomb) image."""
    from PIL import Image

    try:
        if isinstance(source, Image.Image):
            files.check_size(source, _name(source))
            return source
        if isinstance(source, (bytes, bytearray, memoryview)):
            return _open_bytes(bytes(source))
        if isinstance(source, (str, os.PathLike)):
            return files.open_image(source)
    except files.ImageFileError as err:
        raise ImageError(str(err)) from None
    return _array_to_pil(source)


def _open_bytes(data: bytes):
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad data
        raise ImageError(f"unreadable image data: {type(err).__name__}: {err}") from None
    files.check_size(im, "image data")
    return im


def _decode(im, name: str):
    """Decode the pixels of a lazily opened image and convert them to 8-bit RGB (EXIF
    orientation applied; see :func:`cpm_nb.files.decode_rgb`)."""
    try:
        return files.decode_rgb(im, name, exif=True)[0]
    except files.ImageFileError as err:
        raise ImageError(str(err)) from None


def load_image(source) -> np.ndarray:
    """``source`` as a uint8 RGB array ``[H, W, 3]`` (see the module docstring)."""
    return np.asarray(_decode(open_image(source), _name(source)))


def _name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"array{list(source.shape)}"
    return type(source).__name__


# --- 2. the person ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    """Where the person is: MPII centre (1-based x, y) and scale (200*scale px ~ height)."""

    center: tuple[float, float]
    scale: float
    source: str  # "center", "box" or "image"
    box: tuple[float, float, float, float] | None = None

    def as_json(self) -> dict:
        out = {"center": [float(v) for v in self.center], "scale": float(self.scale),
               "from": self.source}
        if self.box is not None:
            out["box"] = [float(v) for v in self.box]
        return out


def person_from_box(box) -> Person:
    """A person from a box ``(x1, y1, x2, y2)`` (1-based): its centre, and
    ``scale = max(width, height) / 200`` (the box's longer side is the person's height)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ValueError(f"box coordinates must be finite, got {tuple(box)}")
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box needs x1 < x2 and y1 < y2, got ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
    return Person(((x1 + x2) / 2, (y1 + y2) / 2), max(x2 - x1, y2 - y1) / 200.0, "box",
                  (x1, y1, x2, y2))


def place_person(width: int, height: int, center=None, scale=None, box=None) -> Person:
    """The person to crop in a ``width`` x ``height`` image: from ``box``, or from
    ``center`` / ``scale`` (each defaults to the image centre / the image height)."""
    if box is not None:
        if center is not None or scale is not None:
            raise ValueError("give either a box or a centre and scale, not both")
        person = person_from_box(box)
    else:
        c = ((width + 1) / 2, (height + 1) / 2) if center is None else tuple(map(float, center))
        s = height / 200.0 if scale is None else float(scale)
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"the person scale must be a positive number, got {scale}")
        if len(c) != 2 or not all(math.isfinite(v) for v in c):
            raise ValueError(f"the centre must be two finite numbers, got {center}")
        source = "image" if center is None and scale is None else "center"
        person = Person(c, s, source)
    cx, cy = person.center
    if not (0.5 <= cx <= width + 0.5 and 0.5 <= cy <= height + 0.5):
        raise ValueError(f"the person centre ({cx:g}, {cy:g}) lies outside the "
                         f"{width}x{height} image (coordinates are 1-based pixels)")
    return person


# --- 3. crops --------------------------------------------------------------------------------


@dataclass
class Prepared:
    """One image made ready for the network: its crops (one per scale) and their matrices."""

    name: str
    image_size: tuple[int, int]  # (width, height)
    person: Person
    scales: tuple[float, ...]
    crops: np.ndarray  # uint8 [n_scales, S, S, 3]; crops[0] is the scale-1 crop
    matrices: np.ndarray  # [n_scales, 3, 3], original 1-based -> crop 0-based
    image: np.ndarray | None = None  # the RGB image, when kept for drawing


def _scales(scales) -> tuple[float, ...]:
    """Scale factors with 1.0 first (the reference crop), duplicates removed."""
    out = [1.0]
    for f in scales or ():
        f = float(f)
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"scale factors must be positive, got {f}")
        if all(abs(f - g) > 1e-9 for g in out):
            out.append(f)
    return tuple(out)


def prepare(source, input_size: int, center=None, scale=None, box=None, scales=(1.0,),
            keep_image: bool = False) -> Prepared:
    """Load ``source`` and cut the ``input_size`` crops of the person (see the module doc).

    JPEG files (paths or bytes) are decoded at a reduced size when the crop shrinks the
    image by 2x or more (the decoder's DCT scaling: faster, and it low-pass filters the
    image, which the bilinear crop alone does not); ``keep_image`` then decodes the full
    image once more, for drawing.  Raises :class:`ImageError`.
    """
    name = _name(source)
    im = open_image(source)
    width, height = im.size
    try:
        person = place_person(width, height, center, scale, box)
        factors = _scales(scales)
    except ValueError as err:
        raise ImageError(f"{name}: {err}") from None
    matrices = np.stack([preprocess.crop_matrix(person.center, person.scale, input_size,
                                                scale_factor=f) for f in factors])
    reduce = 1
    ours = isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview))
    if ours and getattr(im, "format", None) == "JPEG":
        shrink = 1.0 / preprocess.pixel_scale(person.scale, input_size, max(factors))
        if shrink >= 2:
            im.draft("RGB", (math.ceil(width / shrink), math.ceil(height / shrink)))
            reduce = width / im.size[0]  # 1, 2, 4 or 8
    rgb = _decode(im, name)
    # (reduced) image 1-based -> original 1-based: x = k (x' - 0.5) + 0.5
    from_reduced = np.array([[reduce, 0, 0.5 - 0.5 * reduce],
                             [0, reduce, 0.5 - 0.5 * reduce], [0, 0, 1.0]])
    crops = np.stack([np.asarray(preprocess.warp_pil(rgb, m @ from_reduced, input_size))
                      for m in matrices])
    image = None
    if keep_image:  # the full-resolution pixels, for drawing
        image = np.asarray(rgb) if reduce == 1 else load_image(source)
    return Prepared(name, (width, height), person, factors, crops, matrices, image)


# --- 4./5. prediction --------------------------------------------------------------------------


@dataclass
class Prediction:
    """The pose of one person: joints in the original image (1-based px) and more.

    ``stage_maps[t]`` is stage ``t+1``'s belief maps ``[M, M, J]`` on the grid of
    the scale-1 crop (averaged over the scales); ``joints_crop`` the decoded joints
    in that crop (0-based px).
    """

    name: str
    joints: np.ndarray  # [16, 2] original image, 1-based
    confidence: np.ndarray  # [16]
    person: Person
    image_size: tuple[int, int]
    scales: tuple[float, ...]
    crop: np.ndarray  # uint8 [S, S, 3] (scale 1)
    crop_matrix: np.ndarray  # [3, 3]
    joints_crop: np.ndarray  # [16, 2] 0-based crop px
    stage_maps: list = field(repr=False, default_factory=list)
    image: np.ndarray | None = field(repr=False, default=None)
    to_mpii: list | None = field(repr=False, default=None)  # converted models: map -> MPII id

    def stage_joints(self, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """Joints (original 1-based px) and confidences decoded from one stage (1-based)."""
        from cpm_nb import heatmaps

        j, c = heatmaps.decode(self.stage_maps[stage - 1][..., : skeleton.NUM_JOINTS])
        if self.to_mpii:  # the joints such a model lacks are not in its maps: derive them
            from cpm_nb import caffe

            j, c = caffe.to_mpii(j[self.to_mpii], c[self.to_mpii], self.to_mpii)
        return heatmaps.to_original(j, self.crop_matrix), c

    def as_json(self) -> dict:
        w, h = self.image_size
        return {
            "image": self.name,
            "width": int(w),
            "height": int(h),
            "pixel_convention": PIXEL_CONVENTION,
            "person": self.person.as_json(),
            "scales": [float(f) for f in self.scales],
            "joints": [{"id": j, "name": n, "x": round(float(x), 2), "y": round(float(y), 2),
                        "confidence": round(float(c), 4)}
                       for j, (n, (x, y), c) in enumerate(zip(skeleton.JOINT_NAMES, self.joints,
                                                              self.confidence))],
        }


def _resample_matrix(map_size: int, factor: float, input_size: int) -> np.ndarray:
    """Bilinear weights ``W [M, M]``: row i samples the scale-``factor`` map at the point of
    reference cell i (zero outside it).  Crops share the centre, so the map of scale f
    seen from the reference crop is ``W @ maps @ W.T`` (per channel)."""
    half = (input_size - 1) / 2.0
    centre = (OUTPUT_STRIDE - 1) / 2.0
    p_ref = np.arange(map_size) * OUTPUT_STRIDE + centre
    u = (half + factor * (p_ref - half) - centre) / OUTPUT_STRIDE  # cell coordinate in map f
    lo = np.floor(u).astype(int)
    frac = u - lo
    w = np.zeros((map_size, map_size))
    for k, wt in ((lo, 1 - frac), (lo + 1, frac)):
        ok = (k >= 0) & (k < map_size)
        w[np.flatnonzero(ok), k[ok]] += wt[ok]
    return w


def merge_scales(maps: np.ndarray, factors: Sequence[float], input_size: int) -> np.ndarray:
    """Average belief maps ``[n_scales, M, M, C]`` of crops at ``factors`` (``factors[0]``
    = 1) on the grid of the scale-1 crop; each cell is averaged over the scales covering it.

    The maps are resampled bilinearly on their own coarse grid (stride 8).  Peaks
    narrower than a cell are blurred by that: on ideal maps the merged peak moves by
    up to ~1.5 crop px (mean ~0.5 px) against < 0.1 px at one scale.  What the average
    buys is robustness: a joint the network misses at one scale is found at another.
    """
    if len(factors) == 1:
        return maps[0]
    m = maps.shape[1]
    total = np.zeros(maps.shape[1:])
    cover = np.zeros((m, m, 1))
    for f, one in zip(factors, maps):
        w = _resample_matrix(m, f, input_size)
        total += np.einsum("ya,abc,xb->yxc", w, one, w, optimize=True)
        cover += np.outer(w.sum(1), w.sum(1))[..., None]
    return total / np.maximum(cover, 1e-6)


class Predictor:
    """A loaded model ready to run on images (see the module docstring).

    ``Predictor(model, meta)`` or :func:`load_predictor` (path).  Call it on one image
    (``predictor(image, box=...)``) or use :meth:`predict_many` for a stream of images.
    """

    def __init__(self, model, meta: dict | None = None, source: str | None = None,
                 refine: str | None = "gaussian"):
        from cpm_nb import model as M

        self.model = model
        self.meta = meta or {}
        self.source = source or getattr(model, "name", "model")
        self.config = check_model(model, self.meta)
        # a converted release model (cpm_nb.caffe): its own joint order, search and decoding
        self.preprocessing = self.meta.get("preprocessing") or {}
        self.to_mpii = self.preprocessing.get("joints_to_mpii")
        self.num_joints = len(self.to_mpii) if self.to_mpii else skeleton.NUM_JOINTS
        self.default_scales = tuple(self.preprocessing.get("scales") or (1.0,))
        self.input_size = self.config.input_size
        self.refine = refine
        self.forward = M.make_predict_fn(model, config=self.config)

    @property
    def stages(self) -> int:
        return self.config.stages

    def __repr__(self) -> str:
        return (f"Predictor({self.source}: {self.input_size} px, {self.stages} stages, "
                f"{self.config.num_maps} maps)")

    def prepare(self, source, keep_image: bool = False, **person) -> Prepared:
        """Load and crop one image; ``scales=None``: the model's default search."""
        if person.get("scales") is None:
            person["scales"] = self.default_scales
        return prepare(source, self.input_size, keep_image=keep_image, **person)

    def finish(self, prepared: Sequence[Prepared], outs: list[np.ndarray]) -> list[Prediction]:
        """Turn the network outputs for the crops of ``prepared`` (``[sum of n_scales, M,
        M, C]`` per stage) into one :class:`Prediction` per image (decoded together)."""
        from cpm_nb import heatmaps

        per_image, start = [], 0
        for p in prepared:
            n = len(p.crops)
            per_image.append([merge_scales(o[start:start + n], p.scales, self.input_size)
                              .astype(np.float32, copy=False) for o in outs])
            start += n
        last = np.stack([maps[-1][..., : self.num_joints] for maps in per_image])
        if self.preprocessing.get("decoding") == "release":  # upsample, average, argmax
            from cpm_nb import caffe

            starts = np.cumsum([0] + [len(p.crops) for p in prepared])
            decoded = [caffe.release_decode(outs[-1][a:b, ..., : self.num_joints], p.scales)
                       for p, a, b in zip(prepared, starts, starts[1:])]
            joints_crop, conf = (np.stack(v) for v in zip(*decoded))
        else:
            joints_crop, conf = heatmaps.decode(last, refine=self.refine)
        if self.to_mpii:  # the model's joint order -> the 16 MPII joints
            from cpm_nb import caffe

            joints_crop, conf = caffe.to_mpii(joints_crop, conf, self.to_mpii)
            per_image = [[caffe.to_mpii_maps(m, self.to_mpii) for m in maps]
                         for maps in per_image]
        matrices = np.stack([p.matrices[0] for p in prepared])
        joints = heatmaps.to_original(joints_crop, matrices)
        return [Prediction(p.name, joints[i], conf[i], p.person, p.image_size, p.scales,
                           p.crops[0], p.matrices[0], joints_crop[i], per_image[i], p.image,
                           self.to_mpii)
                for i, p in enumerate(prepared)]

    def run(self, prepared: Sequence[Prepared]) -> list[Prediction]:
        """One forward call for the crops of several prepared images."""
        crops = np.concatenate([p.crops for p in prepared])
        return self.finish(prepared, self.forward(crops))

    def __call__(self, source, center=None, scale=None, box=None, scales=None,
                 keep_image: bool = True) -> Prediction:
        """The pose in one image (``keep_image``: keep the RGB image for drawing;
        ``scales=None``: the model's default, 1.0 or the release's search)."""
        prep = self.prepare(source, keep_image=keep_image, center=center, scale=scale, box=box,
                            scales=scales)
        return self.run([prep])[0]

    def predict_many(self, sources: Iterable, batch_size: int = DEFAULT_BATCH,
                     workers: int | None = None, keep_image: bool = False,
                     **person) -> Iterator[tuple[int, Prediction | ImageError]]:
        """Predict a stream of images, ``batch_size`` per forward call; yields
        ``(index, Prediction)``, or ``(index, ImageError)`` for an image that failed
        (the others go on).  Loading and cropping run in ``workers`` threads while the
        network runs on the previous batch (Pillow and TensorFlow release the GIL)."""
        workers = workers or min(4, os.cpu_count() or 1)
        items = iter(enumerate(sources))
        pending: deque = deque()

        def job(src):
            try:
                return self.prepare(src, keep_image=keep_image, **person)
            except ImageError as err:
                return err

        with ThreadPoolExecutor(workers) as pool:
            def fill():
                while len(pending) < 2 * batch_size:
                    nxt = next(items, None)
                    if nxt is None:
                        return
                    pending.append((nxt[0], pool.submit(job, nxt[1])))

            fill()
            while pending:
                batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
                done = [(i, f.result()) for i, f in batch]
                fill()  # the next batch is prepared while this one runs
                good = [(i, p) for i, p in done if not isinstance(p, ImageError)]
                preds = dict(zip([i for i, _ in good], self.run([p for _, p in good]))) \
                    if good else {}
                for i, p in done:
                    yield i, preds.get(i, p)


# --- models ----------------------------------------------------------------------------------


def _shape(t) -> tuple:
    return tuple(None if d is None else int(d) for d in t.shape)


def check_model(model, meta: dict | None = None):
    """The :class:`~cpm_nb.model.CPMConfig` of ``model`` after checking that it is a CPM
    for the 16 MPII joints whose ``cpm_config.json`` (``meta``) matches; :class:`ModelError`
    otherwise."""
    from cpm_nb import model as M

    meta = meta or {}
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
    channels = next(iter(maps))[3]
    joints = skeleton.NUM_JOINTS
    preprocessing = (meta or {}).get("preprocessing") or {}
    if preprocessing.get("joints") and not preprocessing.get("joints_to_mpii"):
        other = [j for j in preprocessing["joints"] if j not in (*skeleton.JOINT, "background")]
        raise ModelError(f"the model predicts joints that MPII does not have ({', '.join(other)}),"
                         " so predict cannot place its 16 MPII joints")
    if preprocessing.get("joints_to_mpii"):  # converted (cpm_nb.caffe): 14 joints + background
        joints = len(preprocessing["joints_to_mpii"])
    if channels not in (joints, joints + 1):
        raise ModelError(f"the model predicts {channels} maps per stage, so it is not a model "
                         f"of the {joints} MPII joints (+ background) that predict draws "
                         "(e.g. the 14-joint cpm-mpii-release configuration)")
    cfg = M.CPMConfig(name=model.name, input_size=size, stages=len(outputs), num_joints=joints,
                      background=channels == joints + 1, center_map=len(inputs) == 2,
                      center_sigma=21.0 * size / 368)
    if meta:
        if meta.get("format") != "cpm-nb-model":
            raise ModelError(f"{CONFIG_FILE} is not a cpm-nb model description "
                             f"(format {meta.get('format')!r})")
        saved = dict(meta.get("cpm_config") or {})
        expect = {"input_size": size, "stages": len(outputs),
                  "num_joints + background": channels, "centre-map input": len(inputs) == 2}
        have = {"input_size": saved.get("input_size", meta.get("input_size")),
                "stages": saved.get("stages", meta.get("stages")),
                "num_joints + background": (saved.get("num_joints", 0)
                                            + int(bool(saved.get("background")))),
                "centre-map input": bool(saved.get("center_map"))}
        bad = [f"{k} {have[k]} (network: {expect[k]})" for k in expect if have[k] != expect[k]]
        if bad:
            raise ModelError(f"{CONFIG_FILE} describes another configuration than the network: "
                             + ", ".join(bad))
        fields = {k: v for k, v in saved.items() if k in M.CPMConfig.__dataclass_fields__}
        cfg = M.CPMConfig(**fields)
    return cfg


def load_predictor(path, refine: str | None = "gaussian") -> Predictor:
    """A :class:`Predictor` from a run folder (``model.keras`` + ``cpm_config.json``) or a
    ``.keras`` file, loaded by :func:`cpm_nb.runs.load_run` (Keras safe mode); raises
    :class:`ModelError` with a one-line reason."""
    from cpm_nb import runs

    try:
        trained = runs.load_run(path)
    except runs.RunError as err:
        raise ModelError(str(err)) from None
    return Predictor(trained.model, trained.meta or None, source=str(path), refine=refine)


def load_keras(model_file):
    """:func:`cpm_nb.runs.load_keras` (safe mode) with :class:`ModelError` for errors."""
    from cpm_nb import runs

    try:
        return runs.load_keras(model_file)
    except runs.RunError as err:
        raise ModelError(str(err)) from None


# --- drawing ---------------------------------------------------------------------------------


def draw_prediction(ax, pred: Prediction, image=None, min_confidence: float = 0.0,
                    show_crop: bool = True, title: str | None = None):
    """The skeleton on the original image (matplotlib), with the square the model saw."""
    from cpm_nb.viz import draw_skeleton

    image = pred.image if image is None else image
    if image is not None:
        ax.imshow(image)
    joints0 = pred.joints - 1.0  # 1-based -> imshow's 0-based pixel centres
    if show_crop:
        s = pred.crop.shape[0]
        corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [s - 0.5, s - 0.5], [-0.5, s - 0.5],
                            [-0.5, -0.5]])
        from cpm_nb.heatmaps import to_original

        sq = to_original(corners, pred.crop_matrix) - 1.0
        ax.plot(*sq.T, "--", color="w", lw=1, alpha=0.8)
    draw_skeleton(ax, joints0, pred.confidence >= min_confidence)
    w, h = pred.image_size  # the image, widened to joints predicted outside it
    shown = joints0[pred.confidence >= min_confidence]
    lo = np.minimum([-0.5, -0.5], shown.min(0, initial=np.inf) - 8)
    hi = np.maximum([w - 0.5, h - 0.5], shown.max(0, initial=-np.inf) + 8)
    ax.set(title=title if title is not None else Path(pred.name).name,
           xlabel="x (px)", ylabel="y (px)", xlim=(lo[0], hi[0]), ylim=(hi[1], lo[1]))
    return ax


def overlay(image: np.ndarray, pred: Prediction, min_confidence: float = 0.0):
    """A PIL image: the skeleton drawn on ``image`` at its own resolution (for PNG output)."""
    from PIL import Image, ImageDraw

    from cpm_nb.heatmaps import to_original

    im = Image.fromarray(np.asarray(image)).convert("RGB")
    draw = ImageDraw.Draw(im)
    w, h = im.size
    lw = max(2, round(min(w, h) / 150))
    pts = pred.joints - 0.5  # 1-based centres -> PIL (pixel (0, 0) spans 0..1)
    ok = pred.confidence >= min_confidence
    s = pred.crop.shape[0]
    corners = np.array([[-0.5, -0.5], [s - 0.5, -0.5], [s - 0.5, s - 0.5], [-0.5, s - 0.5]])
    square = to_original(corners, pred.crop_matrix) - 0.5
    draw.polygon([tuple(p) for p in square], outline=(255, 255, 255))
    for a, b in skeleton.LIMBS:
        if ok[a] and ok[b]:
            draw.line([tuple(pts[a]), tuple(pts[b])], fill=skeleton.JOINT_COLORS[b], width=lw)
    r = lw * 1.5
    for j in np.flatnonzero(ok):
        x, y = pts[j]
        draw.ellipse([x - r, y - r, x + r, y + r], fill=skeleton.JOINT_COLORS[j],
                     outline=(0, 0, 0))
    return im


def maps_overlay(crop: np.ndarray, maps: np.ndarray, joints: Sequence[int],
                 colors: Sequence, gamma: float = 1.0) -> np.ndarray:
    """The crop (dimmed) with the belief maps of ``joints`` upsampled to the crop and laid
    over it in ``colors`` (the source article's figure: head yellow, left knee red, right
    ankle blue).  Returns float RGB ``[S, S, 3]`` in 0..1."""
    from matplotlib.colors import to_rgb
    from PIL import Image

    s = crop.shape[0]
    out = crop.astype(np.float64) / 255.0 * 0.45
    for j, c in zip(joints, colors):
        m = np.clip(maps[..., j], 0, None)
        m = m / max(m.max(), 1e-6)
        up = np.asarray(Image.fromarray(m.astype(np.float32), mode="F").resize(
            (s, s), Image.Resampling.BILINEAR)) ** gamma
        alpha = np.clip(up, 0, 1)[..., None]
        out = out * (1 - alpha) + alpha * np.asarray(to_rgb(c))[None, None]
    return np.clip(out, 0, 1)


# --- CLI: cpm-nb predict ------------------------------------------------------------------------


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (JPEG, PNG, ...; grayscale and CMYK are converted)")
    parser.add_argument("--model", required=True, metavar="M",
                        help="a run folder of `cpm-nb train` (model.keras + cpm_config.json) "
                             "or a .keras file")
    where = parser.add_argument_group("where the person is (default: the image centre, the "
                                      "person as tall as the image); 1-based pixels")
    where.add_argument("--center", nargs=2, type=finite_float, metavar=("X", "Y"),
                       help="person centre (MPII objpos)")
    where.add_argument("--scale", type=positive_float, metavar="S",
                       help="person scale, a number > 0: 200*S px ~ the person's height "
                            "(MPII scale)")
    where.add_argument("--box", nargs=4, type=finite_float, metavar=("X1", "Y1", "X2", "Y2"),
                       help="person box; centre = box centre, scale = longer side / 200")
    parser.add_argument("--scales", nargs="+", type=positive_float, metavar="F",
                        help="average the maps over these crop scale factors (1.0 is always "
                             "included), e.g. --scales 0.7 0.85 1 1.15 1.3 (the paper: "
                             "0.7 .. 1.3; default: 1.0 alone, or the release's 0.7 .. 1.3 for "
                             "a model converted with cpm-nb convert-caffe)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for <name>_pose.png (overlay) and <name>_pose.json")
    parser.add_argument("--min-confidence", type=float_in_range(0, 1), default=0.0,
                        metavar="C", help="hide joints whose peak belief is below C in the "
                        "overlay, 0 to 1 (default 0: draw all)")
    parser.add_argument("--batch-size", type=int_in_range(1, MAX_BATCH), default=DEFAULT_BATCH,
                        help=f"images per forward pass, 1 to {MAX_BATCH} "
                             f"(default {DEFAULT_BATCH})")
    add_json_option(parser, "all results in one document",
                    "; on stdout it replaces the line per image")


def _check_arguments(args) -> None:
    if args.box is not None and (args.center is not None or args.scale is not None):
        raise CliError("give either --box or --center/--scale, not both")
    if args.box is not None:
        try:
            person_from_box(args.box)
        except ValueError as err:
            raise CliError(f"--box: {err}") from None
    if args.scales:
        try:
            _scales(args.scales)
        except ValueError as err:
            raise CliError(f"--scales: {err}") from None
    files.check_output_path(args.out, "dir", "--out")
    inputs = {Path(i).resolve() for i in args.images}
    outputs = [Path(args.out) / f"{n}.{ext}" for n in _out_names(args.images)
               for ext in ("png", "json")]
    if args.json not in (None, "-"):
        outputs.append(Path(args.json))
    for path in outputs:
        if path.resolve() in inputs:
            raise CliError(f"{path} is both an input image and an output; choose another "
                           "--out or --json-out")


def _out_names(images: list[str]) -> list[str]:
    """``<stem>_pose`` per image, made unique when two files share a stem."""
    names, seen = [], {}
    for path in images:
        stem = Path(path).stem or "image"
        k = seen.get(stem, 0)
        seen[stem] = k + 1
        names.append(f"{stem}_pose" if k == 0 else f"{stem}_{k + 1}_pose")
    return names


def _run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    try:
        predictor = load_predictor(args.model)
    except ModelError as err:
        raise CliError(str(err)) from None
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    quiet = args.json == "-"
    person = dict(center=args.center, scale=args.scale, box=args.box,
                  scales=tuple(args.scales) if args.scales else None)
    names = _out_names(args.images)
    results, failed = [None] * len(args.images), 0
    start = time.perf_counter()
    for i, pred in predictor.predict_many(args.images, batch_size=args.batch_size,
                                          keep_image=True, **person):
        image = args.images[i]
        if isinstance(pred, ImageError):
            failed += 1
            message = " ".join(str(pred).split())
            if image not in message:
                message = f"{image}: {message}"
            print(f"cpm-nb predict: error: {message}", file=sys.stderr, flush=True)
            results[i] = {"image": image, "error": message}
            continue
        record = pred.as_json()
        record["image"] = image
        png, js = out / f"{names[i]}.png", out / f"{names[i]}.json"
        with files.atomic_output(png) as tmp:
            overlay(pred.image, pred, args.min_confidence).save(tmp, format="PNG")
        record["overlay"] = str(png)
        record["model"] = predictor.source
        files.atomic_write_json(js, record)
        results[i] = record
        if not quiet:
            conf = float(np.mean(pred.confidence))
            print(f"{image}: {png} + {js.name} (mean joint confidence {conf:.2f})")
    seconds = time.perf_counter() - start
    done = len(args.images) - failed
    if args.json:
        from cpm_nb.cli import print_json

        print_json({"model": predictor.source, "input_size": predictor.input_size,
                    "stages": predictor.stages, "pixel_convention": PIXEL_CONVENTION,
                    "results": results, "failed": failed}, args.json)
    if not quiet:
        print(f"{done} of {len(args.images)} image(s) done in {seconds:.1f} s"
              + (f"; {failed} failed (see the errors above)" if failed else ""))
    return 1 if failed else 0


PREDICT = Command(
    name="predict",
    help="estimate the pose in image files: overlay PNGs and joints in original pixels (JSON)",
    add_arguments=_arguments,
    run=_run,
    description="""\
Run a trained CPM on image files. For each IMAGE, write DIR/<name>_pose.png
(the skeleton on the image; the dashed square is what the network saw) and
DIR/<name>_pose.json (the 16 MPII joints: x, y in original-image pixels,
1-based as in MPII -- the top-left pixel's centre is (1, 1) -- and the
confidence, the peak of the joint's belief map, about 0..1).

CPM estimates one person, centred in its input: say where the person is with
--center X Y --scale S (MPII objpos and scale: 200*S px ~ the person's height)
or --box X1 Y1 X2 Y2; by default the person is at the image centre and as tall
as the image. The same placement applies to every IMAGE.

A model trained on the synthetic set (the CI / laptop profiles) does poorly on
real photos; train on MPII on a GPU (`cpm-nb train --data mpii ...`, e.g. on
Colab, notebook 05) and pass that run folder to --model.

An image that cannot be read (missing, truncated, corrupt, not an image, or a
decompression bomb of more than 89 million pixels) is reported on one line and
skipped; the others are still processed and the exit status is 1. 16-bit,
palette and transparent images are converted (16-bit scaled to 8 bits). A
missing or incompatible model, or an --out / --json-out that cannot be written,
stops with status 2 before any work. Every output file is written atomically.

examples:
  cpm-nb predict photo.jpg --model runs/cpu-3st-synthetic-<hash> --out poses/
  cpm-nb predict a.jpg b.png --model my_model.keras --box 120 40 330 600 --out poses/
  cpm-nb predict img.jpg --model RUN --center 594 257 --scale 3.02 --scales 0.8 1 1.2 \\
                 --out poses/ --json-out poses/all.json
  cpm-nb predict --model RUN --out poses/ --json a.jpg b.jpg > all.json
""",
)


# --- benchmark: python -m cpm_nb.bench predict ------------------------------------------------


def _bench_jpegs(n: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """``n`` distinct JPEG photos (the matplotlib sample portrait, shifted and tinted)."""
    from PIL import Image

    from cpm_nb.convolution import sample_photo

    w, h = size
    base = (sample_photo(max(w, h)) * 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        dy, dx = rng.integers(0, max(w, h) - h + 1), rng.integers(0, max(w, h) - w + 1)
        gray = base[dy:dy + h, dx:dx + w].astype(np.float32)
        tint = rng.uniform(0.7, 1.0, 3)
        rgb = np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _bench_one(cfg, image_size, batch: int, n_batches: int, repeat: int) -> dict:
    from cpm_nb import bench
    from cpm_nb import model as M

    model = M.build_cpm(cfg, seed=0)
    predictor = Predictor(model, source=cfg.name)
    raw = M.make_predict_fn(model, config=predictor.config)
    jpegs = _bench_jpegs(batch * n_batches, image_size)
    w, h = image_size
    person = dict(center=((w + 1) / 2, (h + 1) / 2), scale=0.8 * h / 200)
    crops = [np.concatenate([predictor.prepare(j, **person).crops
                             for j in jpegs[b * batch:(b + 1) * batch]])
             for b in range(n_batches)]

    def forward():
        for c in crops:
            raw(c)

    def end_to_end():
        n = 0
        for _, p in predictor.predict_many(jpegs, batch_size=batch, **person):
            assert not isinstance(p, Exception), p
            n += 1
        assert n == len(jpegs)

    def prep_only():
        for j in jpegs:
            predictor.prepare(j, **person)

    images = batch * n_batches
    first = {}
    for name, fn in (("forward", forward), ("end_to_end", end_to_end)):
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    samples = {"forward": [], "end_to_end": []}
    cpu = {"forward": 0.0, "end_to_end": 0.0}
    pair = (("forward", forward), ("end_to_end", end_to_end))
    for r in range(repeat):  # interleaved A B B A ..., so that load changes hit both alike
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            c0 = time.process_time()
            samples[name].append(bench.timeit(fn, items=images, warmup=0, repeat=1,
                                              min_time=0.0)["median_s"])
            cpu[name] += time.process_time() - c0
    prep = bench.timeit(prep_only, items=images, warmup=0, repeat=max(1, repeat // 2),
                        min_time=0.0)
    out = {"config": cfg.name, "input_size": cfg.input_size, "stages": cfg.stages,
           "width": cfg.width, "params": M.count_params(cfg), "image_size": list(image_size),
           "batch": batch, "images_per_run": images, "repeat": repeat,
           "first_run_s": first, "prep_only_per_s": prep["per_s"]}
    for name, runs in samples.items():
        times = sorted(runs)
        med = times[len(times) // 2]
        out[name] = {"median_s": med, "best_s": times[0], "per_s": images / med,
                     "cores_used": cpu[name] / sum(times)}
    out["ratio"] = out["end_to_end"]["per_s"] / out["forward"]["per_s"]
    out["ratio_best"] = out["forward"]["best_s"] / out["end_to_end"]["best_s"]
    pairs = [f / e for f, e in zip(samples["forward"], samples["end_to_end"])]
    out["ratio_per_round"] = pairs
    out["within_15_percent"] = bool(out["ratio"] >= 0.85)
    return out


def bench_predict(args) -> dict:
    """End-to-end images/s of the predict path (JPEG bytes -> decode -> crop -> network ->
    decoded joints in original pixels; overlay drawing and file writing excluded) against
    the raw compiled forward pass of the same crops (:func:`cpm_nb.model.make_predict_fn`),
    batch 8, for the paper configuration (source-article, 368 px, 1280x720 photos;
    untrained weights) and the ``cpu`` profile's model (128 px on 288x224 images, the
    synthetic image size).  Goal: end to end >= 85 % of the raw forward rate."""
    from cpm_nb import bench, synthetic
    from cpm_nb import model as M
    from cpm_nb.runtime import import_keras

    import_keras()
    quick = getattr(args, "quick", False)
    load = os.getloadavg()[0]
    cpu_cfg = M.from_profile("cpu")
    cases = getattr(args, "cases", None) or [
        ("paper", M.get_config("source-article"), (1280, 720), 1, 2 if quick else 6),
        ("cpu", cpu_cfg, synthetic.image_size(cpu_cfg.input_size), 2 if quick else 8,
         2 if quick else 9),
    ]
    results = {"batch": DEFAULT_BATCH, "quick": quick, "load_average_1min_before": load,
               "cases": {}}
    for label, cfg, size, n_batches, repeat in cases:
        r = _bench_one(cfg, size, DEFAULT_BATCH, n_batches, repeat)
        results["cases"][label] = r
        bench.print_table(
            f"predict path vs raw forward: {label} ({cfg.name}, {cfg.input_size} px, "
            f"{cfg.stages} stages, width {cfg.width:g}; {size[0]}x{size[1]} JPEGs), batch "
            f"{DEFAULT_BATCH}",
            [("raw forward (make_predict_fn)",
              f"{r['forward']['per_s']:8.2f} images/s  ({r['forward']['cores_used']:.2f} cores)"),
             ("end to end (decode+crop+net+joints)",
              f"{r['end_to_end']['per_s']:8.2f} images/s  "
              f"({r['end_to_end']['cores_used']:.2f} cores)"),
             ("ratio end-to-end / forward", f"{r['ratio']:8.3f}  (goal >= 0.85: "
                                            f"{'met' if r['within_15_percent'] else 'NOT met'})"),
             ("ratio of the best runs", f"{r['ratio_best']:8.3f}"),
             ("ratio per round", " ".join(f"{v:.2f}" for v in r["ratio_per_round"])),
             ("decode+crop alone, 1 thread", f"{r['prep_only_per_s']:8.1f} images/s"),
             ("images per timed run x runs", f"{r['images_per_run']} x {r['repeat']}")])
        print()
    results["load_average_1min_after"] = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, 1-min load average {load:.2f} before, "
          f"{results['load_average_1min_after']:.2f} after (other processes share the cores)")
    return results
