"""Running a trained CPM on any image: place the person, crop, predict, decode.

The path of one image
---------------------
1. **Load** the image as 8-bit RGB (:mod:`cpm_nb.io.images`: a file in any format
   Pillow reads, bytes, a PIL image or an array; EXIF orientation applied).
2. **Place the person**: CPM is a single-person estimator that expects the person
   centred at a known size.  The person is given by its MPII centre and scale
   (``200 * scale`` pixels ~ the person's height), or by a box
   (:func:`person_from_box`: centre of the box, ``scale = max(box side) / 200``),
   or, by default, the image centre with the person as tall as the image.
3. **Crop** the ``S x S`` model input with the training crop matrix
   (:func:`cpm_nb.data.preprocess.crop_matrix`: the person spans 0.64 of the crop side;
   pixels outside the image are grey).  Optionally at several scale factors
   (the paper averages the belief maps over scales 0.7 ... 1.3): each scale's maps
   are resampled onto the grid of the scale-1 crop and averaged there
   (:func:`cpm_nb.inference.decoding.merge_scales`).
4. **Predict** with the compiled forward pass (:func:`cpm_nb.model.network.make_predict_fn`),
   several images per call.
5. **Decode** the last stage's maps (:mod:`cpm_nb.inference.decoding`: by default the
   peak with sub-pixel refinement, :func:`cpm_nb.model.heatmaps.decode`; the confidence of
   a joint is its map's peak value) and map the joints back to the original image with
   ``inv(M)`` (:func:`cpm_nb.model.heatmaps.to_original`).

Pixel convention of the results
-------------------------------
Joint coordinates (and ``--center`` / ``--box`` on the command line) are
**1-based**, as in MPII and MATLAB: the centre of the top-left pixel is (1, 1).
Subtract 1 for 0-based NumPy / PIL / matplotlib ``imshow`` coordinates
(:func:`cpm_nb.course.viz.draw_prediction` does).  The same numbers can therefore be put
into an MPII predictions file and scored with ``cpm-nb evaluate-mpii``.

Models
------
A model is a run folder of ``cpm-nb train`` (``model.keras`` + ``cpm_config.json``)
or a ``.keras`` file, loaded by :func:`cpm_nb.training.runs.load_run` with Keras *safe mode*
(no arbitrary Python code is deserialised) as a :class:`~cpm_nb.model.network.CPM`, which
carries its configuration.  :func:`~cpm_nb.inference.model_check.check_model` checks that
it is a CPM for the 16 MPII joints (an optional background map is ignored) and that
``cpm_config.json`` agrees with the network; anything else is a :class:`ModelError`.  A run folder may describe how its
maps are read (``preprocessing`` in ``cpm_config.json``, as the runs converted from the
released Caffe models do): the joint order of its maps (``joints_to_mpii``; pelvis and
thorax derived when missing), the default scales and the decoding
(:mod:`cpm_nb.inference.decoding`).  A converted run with ``"procedure": "release"`` is
run as the release's test code ran it (:func:`prepare_release`,
:mod:`cpm_nb.inference.release_demo`): steps 3 and 5 become the whole image resized per
scale (MATLAB's antialiased bicubic), a box around the rounded centre, the maps taken back
to the image and the joints found there; a box gives the release's 4 scales.  Runs
converted before that key existed keep the path above.

Drawing a :class:`Prediction` is :mod:`cpm_nb.course.viz`; ``cpm-nb predict`` is
:mod:`cpm_nb.cli.commands.predict` and ``python -m cpm_nb.bench predict`` is
:mod:`cpm_nb.bench.predict`.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from cpm_nb.core import skeleton
from cpm_nb.core.errors import ModelError
from cpm_nb.data import preprocess
from cpm_nb.inference import decoding, release_demo
from cpm_nb.inference.model_check import check_model
from cpm_nb.io.images import (
    ImageError,
    decode,
    load_image,
    open_image,
    oriented_size,
    read_once,
    source_name,
)
from cpm_nb.training.runs import CONFIG_FILE  # the model description of a run

PIXEL_CONVENTION = ("1-based (MPII / MATLAB): the centre of the top-left pixel is (1, 1); "
                    "subtract 1 for 0-based NumPy / PIL indices")
PAPER_SCALES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)  # the paper's multi-scale test search
DEFAULT_BATCH = 8
MAX_BATCH = 256


# --- the person ------------------------------------------------------------------------------


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


MIN_PERSON_PX = 8  # a person this small has no pose to estimate
MAX_PERSON_SIZE = 10  # a person at most 10x the image's longer side (far beyond: a typo)
MAX_SCALE_FACTOR = 10  # --scales: crop scale factors from 1/10 to 10


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
    tallest = MAX_PERSON_SIZE * max(width, height)
    if not (MIN_PERSON_PX <= 200 * person.scale <= tallest):
        raise ValueError(f"a person scale of {person.scale:g} ({200 * person.scale:g} px "
                         f"tall) does not fit the {width}x{height} image: give a scale from "
                         f"{MIN_PERSON_PX / 200:g} to {tallest / 200:g}")
    if not (0.5 <= cx <= width + 0.5 and 0.5 <= cy <= height + 0.5):
        raise ValueError(f"the person centre ({cx:g}, {cy:g}) lies outside the "
                         f"{width}x{height} image (coordinates are 1-based pixels)")
    return person


# --- crops -----------------------------------------------------------------------------------


@dataclass
class Prepared:
    """One image made ready for the network: its crops (one per scale) and their matrices."""

    name: str
    image_size: tuple[int, int]  # (width, height)
    person: Person
    scales: tuple[float, ...]
    crops: np.ndarray  # uint8 [n_scales, S, S, 3]; crops[0]: scale 1 (the release's: its first)
    matrices: np.ndarray  # [n_scales, 3, 3], original 1-based -> crop 0-based
    image: np.ndarray | None = None  # the RGB image, when kept for drawing
    boxes: tuple | None = None  # the release's procedure: where each crop lies (DemoBox)


def scale_factors(scales) -> tuple[float, ...]:
    """Scale factors with 1.0 first (the reference crop), duplicates removed."""
    out = [1.0]
    for f in scales or ():
        f = float(f)
        if not (math.isfinite(f) and 1 / MAX_SCALE_FACTOR <= f <= MAX_SCALE_FACTOR):
            raise ValueError(f"scale factors must be from {1 / MAX_SCALE_FACTOR:g} to "
                             f"{MAX_SCALE_FACTOR:g}, got {f:g}")
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
    name = source_name(source)
    source = read_once(source)  # a pipe's bytes: it is read again for keep_image
    im = open_image(source)
    stored_width, stored_height = im.size
    width, height = oriented_size(im)  # where the user sees the person (EXIF applied)
    try:
        person = place_person(width, height, center, scale, box)
        factors = scale_factors(scales)
    except ValueError as err:
        raise ImageError(f"{name}: {err}") from None
    matrices = np.stack([preprocess.crop_matrix(person.center, person.scale, input_size,
                                                scale_factor=f) for f in factors])
    reduce = 1
    ours = isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview))
    if ours and getattr(im, "format", None) == "JPEG":
        shrink = 1.0 / preprocess.pixel_scale(person.scale, input_size, max(factors))
        if shrink >= 2:
            im.draft("RGB", (math.ceil(stored_width / shrink),
                             math.ceil(stored_height / shrink)))
            reduce = stored_width / im.size[0]  # 1, 2, 4 or 8
    rgb = decode(im, name)
    # (reduced) image 1-based -> original 1-based: x = k (x' - 0.5) + 0.5
    from_reduced = np.array([[reduce, 0, 0.5 - 0.5 * reduce],
                             [0, reduce, 0.5 - 0.5 * reduce], [0, 0, 1.0]])
    crops = np.stack([np.asarray(preprocess.warp_pil(rgb, m @ from_reduced, input_size))
                      for m in matrices])
    image = None
    if keep_image:  # the full-resolution pixels, for drawing
        image = np.asarray(rgb) if reduce == 1 else load_image(source)
    return Prepared(name, (width, height), person, factors, crops, matrices, image)


def prepare_release(source, input_size: int, settings: release_demo.DemoSettings, center=None,
                    scale=None, box=None, scales=None, keep_image: bool = False,
                    resample: str = "imresize") -> Prepared:
    """Load ``source`` and cut the person's crops as the CPM release does
    (:mod:`cpm_nb.inference.release_demo`): the whole image resized per scale, a box around
    the rounded centre.  ``scales``: factors of the release's reference scale (``None``: its
    own search -- 4 scales for a box, ``settings.scales`` otherwise).  Raises
    :class:`ImageError`."""
    name = source_name(source)
    im = open_image(read_once(source))  # a pipe is read once
    width, height = oriented_size(im)  # the image as the user sees it (decode applies EXIF)
    try:
        person = place_person(width, height, center, scale, box)
        factors = None if scales is None else _distinct(scales)
        centre, pixel_scales, factors = release_demo.demo_scales(
            settings, input_size, (width, height), person.center, person.scale, person.box,
            factors)
    except ValueError as err:
        raise ImageError(f"{name}: {err}") from None
    rgb = np.asarray(decode(im, name))
    boxes, crops = release_demo.demo_crops(rgb, centre, pixel_scales, input_size,
                                           settings.pad_value, resample)
    return Prepared(name, (width, height), person, factors, crops,
                    np.stack([b.matrix() for b in boxes]), rgb if keep_image else None,
                    tuple(boxes))


def _distinct(scales) -> tuple[float, ...]:
    """Positive scale factors, duplicates removed, in their order."""
    out: list[float] = []
    for f in scales:
        f = float(f)
        if not (math.isfinite(f) and f > 0):
            raise ValueError(f"scale factors must be positive, got {f}")
        if all(abs(f - g) > 1e-9 for g in out):
            out.append(f)
    if not out:
        raise ValueError("no scale factors given")
    return tuple(out)


# --- prediction --------------------------------------------------------------------------------


@dataclass
class Prediction:
    """The pose of one person: joints in the original image (1-based px) and more.

    ``stage_maps[t]`` is stage ``t+1``'s belief maps ``[M, M, J]`` on the grid of
    the scale-1 crop (averaged over the scales); ``joints_crop`` the decoded joints
    in that crop (0-based px).  With the release's procedure the joints are found on the
    image, and ``crop`` / ``stage_maps`` / ``joints_crop`` belong to its first scale (the
    other scales' maps moved onto it by their scale about the crop centre, which the
    release's rounded centres miss by under a pixel: for drawing only).
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
    to_mpii: list | None = field(repr=False, default=None)  # another joint order: map -> MPII id

    def stage_joints(self, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """Joints (original 1-based px) and confidences decoded from one stage (1-based)."""
        from cpm_nb.model import heatmaps

        j, c = heatmaps.decode(self.stage_maps[stage - 1][..., : skeleton.NUM_JOINTS])
        if self.to_mpii:  # the joints such a model lacks are not in its maps: derive them
            j, c = decoding.to_mpii(j[self.to_mpii], c[self.to_mpii], self.to_mpii)
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


class Predictor:
    """A loaded model ready to run on images (see the module docstring).

    ``Predictor(model, meta)`` or :func:`load_predictor` (path).  Call it on one image
    (``predictor(image, box=...)``) or use :meth:`predict_many` for a stream of images.
    """

    def __init__(self, model, meta: dict | None = None, source: str | None = None,
                 refine: str | None = "gaussian"):
        self.model = model
        self.meta = meta or {}
        self.source = source or getattr(model, "name", "model")
        self.config = check_model(model, self.meta)
        # how the run reads its maps (e.g. a converted release model): its own joint order,
        # scale search and decoding
        self.preprocessing = self.meta.get("preprocessing") or {}
        self.to_mpii = self.preprocessing.get("joints_to_mpii")
        self.num_joints = len(self.to_mpii) if self.to_mpii else skeleton.NUM_JOINTS
        self.default_scales = tuple(self.preprocessing.get("scales") or (1.0,))
        try:
            self.decoding = decoding.check_decoding(self.preprocessing.get("decoding"))
        except ValueError as err:
            raise ModelError(f"{self.source}: {err}") from None
        # the release's own test procedure (whole-image resizing, its box scales, the
        # arg-max over the image), for converted runs whose metadata opts in
        self.release = release_demo.DemoSettings.from_preprocessing(self.preprocessing)
        if self.release is not None and self.decoding != decoding.RELEASE:
            raise ModelError(f"{self.source}: the release's procedure needs the release's "
                             f"decoding, not {self.decoding!r}: fix 'preprocessing' in "
                             f"{CONFIG_FILE}")
        self.input_size = self.config.input_size
        self.refine = refine
        self.forward = model.belief_maps if self.release is None else self._release_forward

    @property
    def stages(self) -> int:
        return self.config.stages

    def __repr__(self) -> str:
        return (f"Predictor({self.source}: {self.input_size} px, {self.stages} stages, "
                f"{self.config.num_maps} maps)")

    def prepare(self, source, keep_image: bool = False, **person) -> Prepared:
        """Load and crop one image; ``scales=None``: the model's default search."""
        if self.release is not None:
            return prepare_release(source, self.input_size, self.release,
                                   keep_image=keep_image, **person)
        if person.get("scales") is None:
            person["scales"] = self.default_scales
        return prepare(source, self.input_size, keep_image=keep_image, **person)

    def _release_forward(self, crops) -> list[np.ndarray]:
        """The network on the release's boxes: the centre map where the release puts it,
        on the box's centre pixel ``S/2 - 1`` (cpm-nb's crops: ``(S - 1) / 2``)."""
        if not self.config.center_map:
            return self.model.belief_maps(crops)
        one = release_demo.center_map(self.input_size, self.config.center_sigma)
        centres = np.broadcast_to(one[None, :, :, None], (len(crops), *one.shape, 1))
        outs = self.model.predict_on_batch([np.asarray(crops, np.float32),
                                            np.ascontiguousarray(centres)])
        return [np.asarray(o) for o in (outs if isinstance(outs, (list, tuple)) else [outs])]

    def finish(self, prepared: Sequence[Prepared], outs: list[np.ndarray]) -> list[Prediction]:
        """Turn the network outputs for the crops of ``prepared`` (``[sum of n_scales, M,
        M, C]`` per stage) into one :class:`Prediction` per image (decoded together)."""
        from cpm_nb.model import heatmaps

        starts = np.cumsum([0] + [len(p.crops) for p in prepared])
        per_image = [[decoding.merge_scales(o[a:b], np.divide(p.scales, p.scales[0]))
                      .astype(np.float32, copy=False)
                      for o in outs] for p, a, b in zip(prepared, starts, starts[1:])]
        if self.release is not None:  # the release's procedure: joints in the image
            return self._finish_release(prepared, outs[-1], starts, per_image)
        if self.decoding == decoding.RELEASE:  # upsample, average, argmax
            decoded = [decoding.upsampled_argmax(outs[-1][a:b, ..., : self.num_joints], p.scales)
                       for p, a, b in zip(prepared, starts, starts[1:])]
            joints_crop, conf = (np.stack(v) for v in zip(*decoded))
        else:
            last = np.stack([maps[-1][..., : self.num_joints] for maps in per_image])
            joints_crop, conf = heatmaps.decode(last, refine=self.refine)
        if self.to_mpii:  # the model's joint order -> the 16 MPII joints
            joints_crop, conf = decoding.to_mpii(joints_crop, conf, self.to_mpii)
            per_image = [[decoding.to_mpii_maps(m, self.to_mpii) for m in maps]
                         for maps in per_image]
        matrices = np.stack([p.matrices[0] for p in prepared])
        joints = heatmaps.to_original(joints_crop, matrices)
        return [Prediction(p.name, joints[i], conf[i], p.person, p.image_size, p.scales,
                           p.crops[0], p.matrices[0], joints_crop[i], per_image[i], p.image,
                           self.to_mpii)
                for i, p in enumerate(prepared)]

    def _finish_release(self, prepared, last, starts, per_image) -> list[Prediction]:
        """:meth:`finish` for the release's procedure: joints found on the original image
        (:func:`cpm_nb.inference.release_demo.demo_joints`), maps on the first crop."""
        out = []
        for i, (p, a, b) in enumerate(zip(prepared, starts, starts[1:])):
            joints, conf = release_demo.demo_joints(last[a:b, ..., : self.num_joints], p.boxes,
                                                    p.image_size)
            maps = per_image[i]
            if self.to_mpii:  # the model's joint order -> the 16 MPII joints
                joints, conf = decoding.to_mpii(joints, conf, self.to_mpii)
                maps = [decoding.to_mpii_maps(m, self.to_mpii) for m in maps]
            crop_joints = preprocess.apply_matrix(p.matrices[0], joints)
            out.append(Prediction(p.name, joints, conf, p.person, p.image_size, p.scales,
                                  p.crops[0], p.matrices[0], crop_joints, maps, p.image,
                                  self.to_mpii))
        return out

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


def load_predictor(path, refine: str | None = "gaussian") -> Predictor:
    """A :class:`Predictor` from a run folder (``model.keras`` + ``cpm_config.json``), a
    ``.keras`` file or a shipped preset (``"preset:cpu"``), loaded by
    :func:`cpm_nb.training.runs.load_run` (Keras safe mode); raises :class:`ModelError`
    with a one-line reason."""
    from cpm_nb.training import presets, runs

    trained = runs.load_run(presets.resolve(path))
    return Predictor(trained.model, trained.meta or None, source=str(path), refine=refine)
