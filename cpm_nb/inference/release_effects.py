"""What each step of the release's test procedure changes in a converted model's prediction.

cpm-nb ran the released models its own way before they declared the release's procedure
(:mod:`cpm_nb.inference.release_demo`); the two differ in three steps.  :func:`procedure_effects`
predicts one person with the release's procedure, then with each step put back to
cpm-nb's way (one at a time), and with all three -- cpm-nb's path as it was -- and says how
far each of the 16 joints moves; :func:`effects_table` prints it (notebook 07).
"""

from __future__ import annotations

import numpy as np

from cpm_nb.core import skeleton
from cpm_nb.inference import decoding, release_demo

VARIANTS = {  # name -> what differs from the release's procedure
    "release": "the release's procedure (whole-image bicubic, its box scales, arg-max on "
               "the image)",
    "cpm-nb scales": "scales 0.7-1.3 around a person 234 px tall (box: its longer side), "
                     "not the release's 4 box scales",
    "bilinear warp": "each box cut with a bilinear warp, no antialiasing, not imresize",
    "crop arg-max": "maps averaged onto the box nearest scale 1, arg-max there, padding "
                    "included",
    "cpm-nb before": "all three: cpm-nb's path for converted models before this change",
}


def _joints(predictor, prepared, argmax: str = "image") -> tuple[np.ndarray, np.ndarray]:
    """The 16 MPII joints (original 1-based px) of one prepared person."""
    last = predictor.forward(prepared.crops)[-1][..., : predictor.num_joints]
    boxes = list(prepared.boxes)
    if argmax == "image":
        joints, conf = release_demo.demo_joints(last, boxes, prepared.image_size)
    else:  # cpm-nb's domain: the box nearest scale 1 first
        first = int(np.argmin(np.abs(np.log(prepared.scales))))
        order = [first] + [k for k in range(len(boxes)) if k != first]
        joints, conf = release_demo.crop_argmax(last[order], [boxes[k] for k in order])
    if predictor.to_mpii:
        joints, conf = decoding.to_mpii(joints, conf, predictor.to_mpii)
    return joints, conf


def procedure_effects(predictor, source, center=None, scale=None, box=None) -> list[dict]:
    """One row per :data:`VARIANTS` entry for the person in ``source`` (given as for
    :class:`~cpm_nb.inference.predict.Predictor`): ``joints`` ``[16, 2]`` (1-based px),
    and their distance to the release's joints (``shift_px`` per joint, its mean and
    maximum, and ``moved``: how many joints moved by more than half a pixel).
    ``predictor`` must be a converted model that declares the release's procedure."""
    from cpm_nb.inference.predict import Predictor, place_person, prepare_release

    settings = predictor.release
    if settings is None:
        raise ValueError(f"{predictor.source} does not declare the release's procedure "
                         "('procedure': 'release' in its preprocessing)")
    size = predictor.input_size
    person = dict(center=center, scale=scale, box=box)
    rows = {"release": _joints(predictor, prepare_release(source, size, settings, **person))}
    if box is not None:  # cpm-nb's reading of a box: centre, longer side, 0.7 ... 1.3
        image = prepare_release(source, size, settings, **person).image_size
        placed = place_person(*image, box=box)
        rows["cpm-nb scales"] = _joints(predictor, prepare_release(
            source, size, settings, center=placed.center, scale=placed.scale))
    else:
        rows["cpm-nb scales"] = rows["release"]
    rows["bilinear warp"] = _joints(predictor, prepare_release(source, size, settings,
                                                               resample="warp", **person))
    rows["crop arg-max"] = _joints(predictor, prepare_release(source, size, settings, **person),
                                   argmax="crop")
    meta = dict(predictor.meta)
    meta["preprocessing"] = {k: v for k, v in predictor.preprocessing.items()
                             if k != "procedure"}
    before = Predictor(predictor.model, meta, source=predictor.source, refine=predictor.refine)
    old = before(source, keep_image=False, **person)
    rows["cpm-nb before"] = (old.joints, old.confidence)
    ref = rows["release"][0]
    out = []
    for name, (joints, conf) in rows.items():
        shift = np.linalg.norm(joints - ref, axis=-1)
        out.append({"variant": name, "what": VARIANTS[name], "joints": joints,
                    "confidence": conf, "shift_px": shift,
                    "shift_mean_px": float(shift.mean()), "shift_max_px": float(shift.max()),
                    "moved": int((shift > 0.5).sum())})
    return out


def effects_table(rows: list[dict], joints: bool = False) -> str:
    """The rows of :func:`procedure_effects` as text: per variant, how far the joints lie
    from the release's (mean, max, how many moved); ``joints``: also each joint's shift."""
    lines = [f"{'variant':<15} {'mean px':>8} {'max px':>8} {'moved':>6}  what differs"]
    for r in rows:
        lines.append(f"{r['variant']:<15} {r['shift_mean_px']:8.1f} {r['shift_max_px']:8.1f} "
                     f"{r['moved']:>3}/16  {r['what'] if r['variant'] != 'release' else ''}")
    if joints:
        names = [f"{n:>6}" for n in skeleton.SHORT_NAMES]
        lines.append("")
        lines.append(f"{'shift px':<15} " + " ".join(names))
        for r in rows[1:]:
            lines.append(f"{r['variant']:<15} " + " ".join(f"{v:6.1f}" for v in r["shift_px"]))
    return "\n".join(lines)
