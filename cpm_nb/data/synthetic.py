"""An embedded, procedurally generated dataset in the MPII record format.

Real MPII (12.9 GB) cannot be downloaded in CI or on a laptop in minutes, so the
course trains and tests on *synthetic people*: articulated figures on the MPII
16-joint skeleton, rendered with PIL on textured, cluttered backgrounds,
written as JPEG files plus annotations in exactly the record format of
:mod:`cpm_nb.data.mpii` (so every later step is the same code for both).

What a figure looks like
------------------------
* Limbs of random length (+-12 %), width and colour (shirt, trousers, skin),
  a torso quad, a head ellipse with a face (the person faces the camera, so
  their right side is on the image's left: the face and the limb connectivity
  make left/right well defined, also after a flip augmentation), hands and
  feet, and a darker knob at each elbow and knee so joints are well localised.
* Random poses within joint-angle limits, from a few activities (standing,
  walking, arms up, reaching, crouching, kicking, dancing, sitting, bending).
* Every image has 1-3 people: the multi-person problem. Each person is
  annotated (one record each), with ``flags["n_others"]`` giving the number of
  other people in the image. People may overlap and be cut by the image border
  (joints outside the image are *missing*, as in MPII).
* With probability ``OCCLUDER_PROB`` an image gets 1-2 occluding objects placed
  over someone's joints. A joint hidden by an occluder or by another person is
  annotated but *occluded* (``visible = False``); ``flags["occluded"]`` lists them.

The MPII conventions hold: 1-based coordinates, ``objpos`` near the body centre,
``head_box`` the axis-aligned box of the head and ``200 * scale = 4.8`` head-box
diagonals exactly (as for the MPII validation people).  Head boxes are drawn
loosely (:data:`HEAD_BOX_MARGIN`), as MPII's are, so that in a crop from
:mod:`cpm_nb.data.preprocess` limbs have MPII's lengths and the joints of a person span
about half the crop side, as they do for the MPII validation people.

How close to MPII?  :mod:`cpm_nb.data.pose_stats` measures people in their crops (size,
limb lengths, pose spread, truncation, others in the crop) on the real annotation
slice and on this generator; version 2 of the generator (more bent limbs, sitting and
bending people, legs cut by the image's bottom edge, fewer crowded images, people
turned sideways) closed the largest gaps.  Notebook 02 shows the numbers.

Images are sized for the profile (``IMAGE_ASPECT`` x ``input_size``), so that
the person crops are at about native resolution.  Generation is deterministic:
image ``i`` of split ``s`` uses ``numpy.random.default_rng([seed, s, i])``,
whatever the number of worker processes.

Use :func:`load_or_generate` (the cache lives in ``data/synthetic/`` of the
package's checkout, or ``$CPM_NB_DATA/synthetic``, else the user cache: see
:mod:`cpm_nb.core.paths`).  A set is rendered into a staging folder and swapped in when
complete, under a folder lock: an interrupted run leaves the previous set intact,
and two processes asking for the same set at once render it once.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cpm_nb.core import errors, files, skeleton
from cpm_nb.core.progress import track
from cpm_nb.data import mpii
from cpm_nb.data.poses import ACTIVITIES, ACTIVITY_PROBS, make_skeleton

GENERATOR_VERSION = 2  # 2: people, poses and truncation closer to MPII (pose_stats)
DATA_ENV = "CPM_NB_DATA"  # see cpm_nb.core.paths
IMAGE_ASPECT = (2.25, 1.75)  # image width, height in units of input_size
PEOPLE_PROBS = (0.7, 0.22, 0.08)  # 1, 2 or 3 people in an image
OCCLUDER_PROB = 0.35
JPEG_QUALITY = 90
HEAD_DIAGONALS_PER_SCALE = 4.8  # 200 * scale = 4.8 head-box diagonals (MPII)
SPLITS = {"train": 0, "val": 1}
# MPII draws head boxes loosely around the head; a box this much larger than the drawn
# head gives synthetic limbs MPII's lengths in units of 200 * scale (see pose_stats).
HEAD_BOX_MARGIN = 1.17
# Share of people whose legs leave the image at the bottom (MPII: ankles are not
# annotated for 28 % of the validation people, knees for 16 %).
LEGS_CUT_PROB = 0.28

J = skeleton.JOINT


def data_dir() -> Path:
    """Where generated data goes: ``$CPM_NB_DATA``, else ``data/`` of the package's
    checkout, else the cache (:func:`cpm_nb.core.paths.data_root`)."""
    from cpm_nb.core import paths

    return paths.data_root()


def image_size(input_size: int) -> tuple[int, int]:
    """(width, height) of the synthetic images for a profile's ``input_size``."""
    return int(round(IMAGE_ASPECT[0] * input_size)), int(round(IMAGE_ASPECT[1] * input_size))


# --- drawing -------------------------------------------------------------------------


def _color(rng, lo=0, hi=255) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def _shade(color, f) -> tuple[int, int, int]:
    return tuple(int(max(0, min(255, c * f))) for c in color)


def _limb_polygon(p, q, w0, w1):
    d = np.asarray(q, float) - np.asarray(p, float)
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    pts = [p + n * w0 / 2, q + n * w1 / 2, q - n * w1 / 2, p - n * w0 / 2]
    return [tuple(v) for v in pts]


def _disc(draw, c, r, fill):
    draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=fill)


def _ellipse_points(center, axis, half_len, half_w, n=24):
    axis = axis / (np.hypot(*axis) + 1e-9)
    perp = np.array([-axis[1], axis[0]])
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = center + np.outer(np.cos(t), axis * half_len) + np.outer(np.sin(t), perp * half_w)
    return [tuple(v) for v in pts]


def _draw_figure(draws, fig):
    """Draw one figure (0-based pixel coords) with each ``(draw, paint)`` pair:
    ``paint`` maps a colour to the fill (the identity, or a label value)."""
    for draw, paint in draws:
        _draw_figure_on(draw, paint, fig)


def _draw_figure_on(draw, paint, fig):
    j, w = fig["pix"], fig["widths"]
    c = fig["colors"]

    def limb(a, b, wa, wb, col, knob=None):
        draw.polygon(_limb_polygon(j[a], j[b], wa, wb), fill=paint(col))
        _disc(draw, j[a], wa / 2, paint(col))
        _disc(draw, j[b], wb / 2, paint(col))
        if knob is not None:
            _disc(draw, j[knob], wb * 0.42, paint(_shade(col, 0.55)))

    for s in "rl":  # legs
        limb(J[f"{s}_hip"], J[f"{s}_knee"], w["thigh"], w["thigh"] * 0.85, c["pants"],
             knob=J[f"{s}_knee"])
        limb(J[f"{s}_knee"], J[f"{s}_ankle"], w["shin"], w["shin"] * 0.8, c["pants"])
        foot = j[J[f"{s}_ankle"]]
        _disc(draw, foot, w["shin"] * 0.55, paint(c["shoes"]))
    torso = [j[J["r_shoulder"]], j[J["l_shoulder"]], j[J["l_hip"]], j[J["r_hip"]]]
    grow = (np.mean(torso, axis=0))
    torso = [tuple(grow + (p - grow) * 1.18) for p in torso]
    draw.polygon(torso, fill=paint(c["shirt"]))
    limb(J["thorax"], J["upper_neck"], w["neck"], w["neck"], c["skin"])
    head_axis = j[J["head_top"]] - j[J["upper_neck"]]
    center = (j[J["head_top"]] + j[J["upper_neck"]]) / 2
    draw.polygon(_ellipse_points(center, head_axis, fig["head_len"] / 2, w["head_w"]),
                 fill=paint(c["skin"]))
    # the face: eyes and mouth below the head's centre (it faces the camera)
    ax = head_axis / (np.hypot(*head_axis) + 1e-9)
    perp = np.array([-ax[1], ax[0]])
    r = max(fig["head_len"] * 0.06, 0.8)
    for e in (-1, 1):
        _disc(draw, center + ax * fig["head_len"] * 0.08 + perp * e * w["head_w"] * 0.4, r,
              paint((20, 20, 30)))
    _disc(draw, center - ax * fig["head_len"] * 0.22, r * 1.2, paint((150, 40, 40)))
    for s in "rl":  # arms over the torso
        limb(J[f"{s}_shoulder"], J[f"{s}_elbow"], w["upper_arm"], w["upper_arm"] * 0.9,
             c["shirt"], knob=J[f"{s}_elbow"])
        limb(J[f"{s}_elbow"], J[f"{s}_wrist"], w["forearm"], w["forearm"] * 0.85, c["skin"])
        _disc(draw, j[J[f"{s}_wrist"]], w["forearm"] * 0.65, paint(c["skin"]))


def _background(rng, width, height):
    from PIL import Image, ImageDraw

    coarse = rng.integers(0, 256, (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(np.uint8)
    base = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
    arr = np.asarray(base, dtype=np.int16)
    arr = arr + rng.integers(-12, 13, (height, width, 1), dtype=np.int16)  # grain
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    scale = min(width, height)
    for _ in range(rng.integers(6, 16)):  # clutter, including limb-like sticks
        kind = rng.integers(0, 4)
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        s = rng.uniform(0.05, 0.3) * scale
        col = _color(rng)
        if kind == 0:
            draw.rectangle([x, y, x + s, y + s * rng.uniform(0.3, 2)], fill=col)
        elif kind == 1:
            draw.ellipse([x, y, x + s, y + s * rng.uniform(0.5, 1.5)], fill=col)
        elif kind == 2:
            t = rng.uniform(0, np.pi)
            draw.line([x, y, x + s * math.cos(t), y + s * math.sin(t)], fill=col,
                      width=int(max(1, rng.uniform(0.02, 0.06) * scale)))
        else:
            pts = [(x + rng.uniform(-s, s), y + rng.uniform(-s, s)) for _ in range(3)]
            draw.polygon(pts, fill=col)
    return img


def _head_box(fig) -> np.ndarray:
    j = fig["pix"]
    axis = j[J["head_top"]] - j[J["upper_neck"]]
    phi = math.atan2(axis[1], axis[0])
    a, b = fig["head_len"] / 2, fig["widths"]["head_w"]
    ex = math.hypot(a * math.cos(phi), b * math.sin(phi))
    ey = math.hypot(a * math.sin(phi), b * math.cos(phi))
    ex, ey = ex * HEAD_BOX_MARGIN, ey * HEAD_BOX_MARGIN
    c = (j[J["head_top"]] + j[J["upper_neck"]]) / 2
    return np.array([c[0] - ex, c[1] - ey, c[0] + ex, c[1] + ey])


def render_image(rng: np.random.Generator, input_size: int, size=None):
    """One synthetic image (PIL RGB) and its people as MPII-style dicts (0-based px).

    ``size`` (width, height) defaults to :func:`image_size` of ``input_size``.
    """
    from PIL import Image, ImageDraw

    width, height = size or image_size(input_size)
    img = _background(rng, width, height)
    n_people = int(rng.choice(len(PEOPLE_PROBS), p=PEOPLE_PROBS)) + 1
    target = input_size * 0.636  # 200*scale in px at a pixel density of ~1 in the crop
    figures = []
    for k in range(n_people):
        activity = str(rng.choice(ACTIVITIES, p=ACTIVITY_PROBS))
        h = target * 1.07 * rng.uniform(0.8, 1.3) * (1.0 if k == 0 else rng.uniform(0.8, 1.1))
        fig = make_skeleton(rng, h, activity)
        j = fig["joints"]
        lo, hi = j.min(0), j.max(0)
        # the first person fits the image (but for legs cut at the bottom, as in MPII's
        # upper-body shots); others may be cut by any border
        slack = 0.0 if k == 0 else 0.15 * h
        margin = 0.06 * h
        xmin, xmax = margin - lo[0] - slack, width - margin - hi[0] + slack
        ymin, ymax = margin - lo[1] - slack, height - margin - hi[1] + slack
        off = np.array([rng.uniform(xmin, max(xmin, xmax)), rng.uniform(ymin, max(ymin, ymax))])
        if rng.random() < LEGS_CUT_PROB:  # the image ends between the hips and the feet
            hip_y = j[[J["r_hip"], J["l_hip"]], 1].max()
            cut = hip_y + rng.uniform(0.1, 0.95) * (hi[1] - hip_y)
            off[1] = max(height - 1 - cut, margin - lo[1])
        fig.update(pix=j + off, activity=activity, id=k + 1,
                   colors={"shirt": _color(rng), "pants": _color(rng, 0, 200),
                           "skin": _color(rng, 60, 255), "shoes": _color(rng, 0, 120)})
        figures.append(fig)
    order = rng.permutation(n_people)
    label = Image.new("L", (width, height), 0)
    draw, ldraw = ImageDraw.Draw(img), ImageDraw.Draw(label)
    for k in order:
        fig = figures[k]
        _draw_figure([(draw, lambda col: col), (ldraw, lambda col, v=fig["id"]: v)], fig)
    occluders = 0
    if rng.random() < OCCLUDER_PROB:
        occluders = int(rng.integers(1, 3))
        for _ in range(occluders):
            fig = figures[rng.integers(n_people)]
            c = fig["pix"][rng.integers(16)] + rng.normal(0, 0.03 * input_size, 2)
            s = rng.uniform(0.08, 0.2) * input_size
            box = [c[0] - s, c[1] - s * rng.uniform(0.5, 1.2), c[0] + s,
                   c[1] + s * rng.uniform(0.5, 1.2)]
            col = _color(rng)
            if rng.random() < 0.5:
                draw.rectangle(box, fill=col)
                draw.rectangle(box, outline=_shade(col, 0.6), width=2)
                ldraw.rectangle(box, fill=255)
            else:
                draw.ellipse(box, fill=col)
                ldraw.ellipse(box, fill=255)
    lab = np.asarray(label)
    people = []
    for fig in figures:
        pix = fig["pix"]
        inside = ((pix[:, 0] >= 0) & (pix[:, 0] <= width - 1)
                  & (pix[:, 1] >= 0) & (pix[:, 1] <= height - 1))
        xi = np.clip(np.rint(pix[:, 0]).astype(int), 0, width - 1)
        yi = np.clip(np.rint(pix[:, 1]).astype(int), 0, height - 1)
        occluded = inside & (lab[yi, xi] != fig["id"])
        box = _head_box(fig)
        diag = math.hypot(box[2] - box[0], box[3] - box[1])
        centre = (pix[J["pelvis"]] + pix[J["thorax"]]) / 2 + rng.normal(0, 0.02 * diag * 4.8, 2)
        people.append({
            "joints": pix, "inside": inside, "occluded": occluded, "head_box": box,
            "scale": HEAD_DIAGONALS_PER_SCALE * diag / 200.0, "objpos": centre,
            "activity": fig["activity"],
        })
    return img, people, occluders


def _make_records(people, name, img_index, is_train, size, occluders) -> list[mpii.Person]:
    records = []
    n = len(people)
    for k, p in enumerate(people):
        missing = ~p["inside"]
        records.append(mpii.Person(
            image=name,
            joints=np.where(missing[:, None], 0.0, p["joints"] + 1.0),  # 0-based -> 1-based
            missing=missing, visible=p["inside"] & ~p["occluded"],
            objpos=p["objpos"] + 1.0, scale=float(p["scale"]), head_box=p["head_box"] + 1.0,
            img_index=img_index, person_index=k + 1, is_train=is_train,
            single_person=n == 1,
            activity={"category": "synthetic", "name": p["activity"],
                      "id": ACTIVITIES.index(p["activity"])},
            image_size=size,
            flags={"n_others": n - 1, "occluded": np.flatnonzero(p["occluded"]).tolist(),
                   "truncated": np.flatnonzero(missing).tolist(), "occluders": occluders},
        ))
    return records


def _generate_one(args):
    seed, split, index, input_size, folder, size = args
    rng = np.random.default_rng([seed, SPLITS[split], index])
    img, people, occluders = render_image(rng, input_size, size)
    name = f"{split}/{index:06d}.jpg"
    img.save(Path(folder) / name, quality=JPEG_QUALITY)
    return _make_records(people, name, index + 1, split == "train", img.size, occluders)


class SyntheticSet(NamedTuple):
    """A generated dataset: ``train, val`` people and the ``root`` folder."""

    train: list[mpii.Person]
    val: list[mpii.Person]
    root: Path

    @property
    def image_dir(self) -> Path:
        return self.root / "images"


def generate(root, n_train: int, n_val: int, input_size: int, seed: int = 0,
             progress: bool = False, size=None) -> SyntheticSet:
    """Render ``n_train + n_val`` images into ``root`` (images/, train.json, val.json,
    meta.json).

    Everything is rendered into a staging folder inside ``root`` and swapped in only
    when complete (``meta.json`` last), so an interrupted run leaves the previous set
    as it was.  ``size`` (width, height) overrides the image size (default:
    :func:`image_size`).
    """
    root = Path(root)
    with files.locked(root):
        files.remove_leftovers(root)  # of runs that were killed
        stage = files.staging_folder(root / "staging")
        try:
            data = _render(stage, n_train, n_val, input_size, seed, progress, size)
            _commit(stage, root)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    return SyntheticSet(data.train, data.val, root)


def _render(root: Path, n_train, n_val, input_size, seed, progress, size) -> SyntheticSet:
    image_dir = root / "images"
    for split in SPLITS:
        (image_dir / split).mkdir(parents=True, exist_ok=True)
    jobs = [(seed, s, i, input_size, str(image_dir), size)
            for s, n in (("train", n_train), ("val", n_val)) for i in range(n)]
    start = time.perf_counter()
    # One process: ~5 ms per image, so the cpu-profile set takes ~20 s; worker
    # processes would save little and break in scripts without a __main__ guard.
    results = [_generate_one(j) for j in track(jobs, "rendering", unit="img", mode=progress)]
    seconds = time.perf_counter() - start
    train = [p for r in results[:n_train] for p in r]
    val = [p for r in results[n_train:] for p in r]
    meta = {"generator_version": GENERATOR_VERSION, "seed": seed, "n_train": n_train,
            "n_val": n_val, "input_size": input_size, "seconds": round(seconds, 2)}
    mpii.write_json(train, root / "train.json", **meta)
    mpii.write_json(val, root / "val.json", **meta)
    files.atomic_write_json(root / "meta.json", meta)
    return SyntheticSet(train, val, root)


def _commit(stage: Path, root: Path) -> None:
    """Move a complete rendering from ``stage`` into ``root``: meta.json is removed
    first and put back last, so a crash in between makes the set stale (re-rendered
    next time), never a mix that looks complete."""
    (root / "meta.json").unlink(missing_ok=True)
    files.swap_folder(stage / "images", root / "images")
    for name in ("train.json", "val.json", "meta.json"):
        os.replace(stage / name, root / name)


def default_root(profile, seed: int | None = None) -> Path:
    """The cache folder of ``profile``'s set (``<data>/synthetic/<profile>-seed<seed>``)."""
    seed = profile.seed if seed is None else seed
    return data_dir() / "synthetic" / f"{profile.name}-seed{seed}"


def load_or_generate(profile, seed: int | None = None, root=None,
                     force: bool = False, progress: bool = False) -> SyntheticSet:
    """The synthetic set for ``profile`` (a :class:`cpm_nb.core.config.Profile`: its sizes and
    seed): read from the cache folder when it was made with the same settings, else
    generated there (seconds).

    Holds the folder's lock: a second process asking for the same set waits for the
    first and then reads its result."""
    seed = profile.seed if seed is None else seed
    if seed < 0:
        raise ValueError(f"the dataset seed must be >= 0, got {seed}")
    root = Path(root) if root is not None else default_root(profile, seed)
    want = {"generator_version": GENERATOR_VERSION, "seed": seed, "n_train": profile.n_train,
            "n_val": profile.n_val, "input_size": profile.input_size}
    with files.locked(root):
        if not force and _matches(root, want):
            try:
                return SyntheticSet(mpii.read_json(root / "train.json"),
                                    mpii.read_json(root / "val.json"), root)
            except (FileNotFoundError, mpii.MpiiFormatError, KeyError, TypeError, ValueError):
                pass  # a damaged cache is rendered again
        return generate(root, profile.n_train, profile.n_val, profile.input_size, seed,
                        progress=progress)


def _matches(root: Path, want: dict) -> bool:
    try:
        meta = files.read_json(root / "meta.json")
    except errors.DataError:
        return False
    return isinstance(meta, dict) and all(meta.get(k) == v for k, v in want.items())
