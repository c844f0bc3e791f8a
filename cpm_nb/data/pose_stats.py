"""How people look inside the network's crop: statistics to compare synthetic and real MPII.

The network never sees whole images, only the crop around each person (see
:func:`cpm_nb.data.preprocess.crop_matrix`), so these statistics are taken in crop units:

* **extent**: height and width of the box of annotated joints, as a fraction of the
  crop side;
* **limb lengths** (upper arm, forearm, thigh, shin, torso, shoulder and hip width)
  as a fraction of the person size ``200 * scale``;
* **limb directions**: the angle of each limb from straight down, in degrees, whose
  spread (circular standard deviation) measures pose variety; and the bend at the
  elbows and knees;
* **truncation**: the share of annotated joints outside the crop, and of joints not
  annotated at all (MPII leaves out joints it cannot see or that leave the image);
* **others in the crop**: the share of people whose crop holds at least one joint
  of another person of the same image;
* **occlusion**: the share of annotated joints flagged not visible, over every joint and
  without the head top and upper neck (:data:`HEAD_AND_NECK`);
* **centre offset**: the distance from the person's centre ``objpos`` to the midpoint of
  pelvis and thorax, over ``200 * scale`` (how precisely the crop is centred on the body).

:func:`pose_statistics` computes them for a list of :class:`cpm_nb.data.mpii.Person`;
:func:`compare` puts two sets side by side; :func:`plot_comparison` draws them.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from cpm_nb.core import paths, skeleton
from cpm_nb.data import preprocess

J = skeleton.JOINT
LIMBS = {  # name: (from joint, to joint), both sides pooled
    "upper arm": ("shoulder", "elbow"), "forearm": ("elbow", "wrist"),
    "thigh": ("hip", "knee"), "shin": ("knee", "ankle"),
}
HEAD_AND_NECK = ("upper_neck", "head_top")
BENDS = {"elbow": ("shoulder", "elbow", "wrist"), "knee": ("hip", "knee", "ankle")}


def _crop_joints(person, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Annotated joints in crop pixels (0-based) and the annotated mask."""
    m = preprocess.crop_matrix(person.objpos, person.scale, input_size)
    xy = np.c_[person.joints, np.ones(16)] @ m.T
    return xy[:, :2], ~np.asarray(person.missing, bool)


def _angle_down(v: np.ndarray) -> float:
    """Direction of vector v (image axes) in degrees from straight down, in (-180, 180]."""
    return float(np.degrees(np.arctan2(v[0], v[1])))


def _bend(a, b, c) -> float:
    """How far the chain a-b-c bends at b: 0 = straight, 180 = folded back, degrees."""
    u, v = b - a, c - b
    cos = np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-9)
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))))


def joints_in_crop(matrix, joints, missing, input_size: int) -> np.ndarray:
    """[16] annotated joints (original 1-based px) that fall inside the crop of the 3x3
    ``matrix`` (:func:`cpm_nb.data.preprocess.crop_matrix`)."""
    xy = np.c_[joints, np.ones(len(joints))] @ np.asarray(matrix, float).T
    inside = ((xy[:, :2] >= 0) & (xy[:, :2] <= input_size - 1)).all(1)
    return inside & ~np.asarray(missing, bool)


def person_measures(person, input_size: int = 368) -> dict:
    """The measures of one person (a value is absent when its joints are not annotated)."""
    xy, ok = _crop_joints(person, input_size)
    size = 200.0 * person.scale
    pts = np.asarray(person.joints, float)
    out: dict = {}
    if ok.sum() >= 2:
        span = (xy[ok].max(0) - xy[ok].min(0)) / input_size
        out["extent_height"], out["extent_width"] = float(span[1]), float(span[0])
    if ok.any():
        out["outside_crop"] = float(((xy[ok] < 0) | (xy[ok] > input_size - 1)).any(1).mean())
    out["not_annotated"] = float((~ok).mean())
    annotated = ~np.asarray(person.missing, bool)
    occluded = annotated & ~np.asarray(person.visible, bool)
    body = np.ones(len(annotated), bool)
    body[[J[n] for n in HEAD_AND_NECK]] = False
    out["occluded"] = [float(v) for v in occluded[annotated]]  # one value a joint: pooled
    out["occluded_body"] = [float(v) for v in occluded[annotated & body]]

    def has(*names):
        return all(ok[J[n]] for n in names)

    for side in ("r", "l"):
        for limb, (a, b) in LIMBS.items():
            if has(f"{side}_{a}", f"{side}_{b}"):
                v = pts[J[f"{side}_{b}"]] - pts[J[f"{side}_{a}"]]
                out.setdefault(f"{limb} length", []).append(float(np.hypot(*v) / size))
                sign = 1.0 if side == "l" else -1.0  # mirror the right side: outward > 0
                out.setdefault(f"{limb} angle", []).append(_angle_down(v * [sign, 1.0]))
        for joint, (a, b, c) in BENDS.items():
            if has(f"{side}_{a}", f"{side}_{b}", f"{side}_{c}"):
                out.setdefault(f"{joint} bend", []).append(
                    _bend(*(pts[J[f"{side}_{n}"]] for n in (a, b, c))))
    if has("pelvis", "thorax"):
        v = pts[J["thorax"]] - pts[J["pelvis"]]
        out["torso length"] = [float(np.hypot(*v) / size)]
        out["torso angle"] = [_angle_down(-v)]
        centre = np.asarray(person.objpos, float)
        if np.isfinite(centre).all() and np.isfinite(size) and size > 0:
            mid = (pts[J["thorax"]] + pts[J["pelvis"]]) / 2
            out["centre offset"] = [float(np.hypot(*(centre - mid)) / size)]
    for name, (a, b) in {"shoulder width": ("r_shoulder", "l_shoulder"),
                         "hip width": ("r_hip", "l_hip")}.items():
        if has(a, b):
            out[name] = [float(np.hypot(*(pts[J[b]] - pts[J[a]])) / size)]
    return out


def others_in_crop(people, input_size: int = 368) -> np.ndarray:
    """For each person, whether another person of the same image has an annotated joint
    inside this person's crop (people are grouped by ``img_index``)."""
    by_image = defaultdict(list)
    for i, p in enumerate(people):
        by_image[(p.image, p.img_index)].append(i)
    flags = np.zeros(len(people), bool)
    for group in by_image.values():
        for i in group:
            m = preprocess.crop_matrix(people[i].objpos, people[i].scale, input_size)
            flags[i] = any(joints_in_crop(m, people[k].joints, people[k].missing,
                                          input_size).any() for k in group if k != i)
    return flags


def _circular_std(degrees: np.ndarray) -> float:
    r = np.abs(np.mean(np.exp(1j * np.radians(degrees))))
    return float(np.degrees(np.sqrt(-2 * np.log(max(r, 1e-12)))))


def pose_statistics(people, input_size: int = 368) -> dict:
    """Summary statistics of a set of people: medians and spreads (see the module)."""
    values = defaultdict(list)
    for p in people:
        for k, v in person_measures(p, input_size).items():
            values[k].extend(v if isinstance(v, list) else [v])
    stats = {"people": len(people)}
    for k, v in sorted(values.items()):
        v = np.asarray(v, float)
        if k.endswith("angle"):
            stats[k] = {"circular_std": _circular_std(v), "median": float(np.median(v))}
        elif k in ("outside_crop", "not_annotated", "occluded", "occluded_body"):
            stats[k] = {"mean": float(v.mean()), "any": float((v > 0).mean())}
        else:
            q1, med, q3 = np.percentile(v, [25, 50, 75])
            stats[k] = {"median": float(med), "iqr": float(q3 - q1)}
    stats["others_in_crop"] = float(others_in_crop(people, input_size).mean())
    stats["_values"] = {k: np.asarray(v, float) for k, v in values.items()}
    return stats


def headline(stats: dict) -> dict[str, float]:
    """The numbers that summarise one set, one float each (for tables and JSON)."""
    row = {"people": stats["people"]}
    for k, v in stats.items():
        if k.startswith("_") or k == "people":
            continue
        if isinstance(v, float):
            row[k] = v
        elif "circular_std" in v:
            row[f"{k} spread (deg)"] = v["circular_std"]
        elif "any" in v:
            row[f"{k} (share of joints)"] = v["mean"]
        else:
            row[f"{k} median"] = v["median"]
            row[f"{k} IQR"] = v["iqr"]
    return row


def compare(a: dict, b: dict, names=("MPII", "synthetic")) -> str:
    """Two :func:`pose_statistics` results as an aligned text table."""
    ha, hb = headline(a), headline(b)
    keys = [k for k in ha if k in hb]
    width = max(map(len, keys))
    lines = [f"{'statistic':<{width}}  {names[0]:>10}  {names[1]:>10}"]
    for k in keys:
        lines.append(f"{k:<{width}}  {ha[k]:>10.3f}  {hb[k]:>10.3f}" if k != "people" else
                     f"{k:<{width}}  {ha[k]:>10d}  {hb[k]:>10d}")
    return "\n".join(lines)


def plot_comparison(a: dict, b: dict, names=("MPII", "synthetic"),
                    keys=("extent_height", "upper arm angle", "thigh angle", "elbow bend",
                          "knee bend", "forearm length")):
    """Histograms of a few measures for two sets (densities, so sizes may differ)."""
    import matplotlib.pyplot as plt

    units = {"extent_height": ("height of the joints / crop side", "How tall people are in the crop")}
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), constrained_layout=True)
    for ax, key in zip(axes.flat, keys):
        va, vb = a["_values"][key], b["_values"][key]
        lo, hi = np.percentile(np.r_[va, vb], [0.5, 99.5])
        bins = np.linspace(lo, hi, 40)
        ax.hist(va, bins, density=True, alpha=0.55, label=names[0], color="tab:blue")
        ax.hist(vb, bins, density=True, alpha=0.55, label=names[1], color="tab:orange")
        label = units.get(key, (None,))[0] or (
            f"{key} (degrees)" if "angle" in key or "bend" in key else f"{key} / (200 x scale)")
        ax.set(title=units.get(key, (None, None))[1] or key, xlabel=label, ylabel="density")
        ax.legend(fontsize=8)
    fig.suptitle("People in their crops: real MPII validation people vs synthetic people")
    return fig


def measure(mpii_file, people_by_name: dict, input_size: int = 368) -> dict:
    """Headline statistics of the real people in ``mpii_file`` and of each named list of
    people, for a JSON summary (see :func:`load_measured`)."""
    from cpm_nb.data import mpii

    sets = {"MPII validation": mpii.read_annotations(mpii_file), **people_by_name}
    return {name: headline(pose_statistics(people, input_size)) for name, people in sets.items()}


def load_measured() -> dict:
    """The stored measurement of real MPII against synthetic v1 and v2 people
    (``cpm_nb/results/synthetic_vs_mpii.json``, made with :func:`measure`)."""
    from cpm_nb.core import files

    return files.read_json(paths.results_path("synthetic_vs_mpii"), "committed result")
