"""Scoring a model on the validation people, and looking inside the score.

:func:`collect` is the one evaluation pass: it runs the model on every unaugmented
crop of a split, decodes the belief maps of every stage
(:func:`cpm_nb.model.heatmaps.decode`), maps the joints back to original-image pixels
with each crop's matrix (:func:`cpm_nb.model.heatmaps.to_original`) and keeps them with
the ground truth, visibility, head boxes and the number of other people in the
image (and, for notebook 06, the crops and the last stage's maps).
:func:`evaluate` turns that into the numbers training, ``cpm-nb evaluate`` and the
notebooks report (:func:`summarize`: the ``evaluate-mpii`` keys, the article's
25-px metric, PCKh@0.5 per stage and on hard subsets); the other functions break
a score down by metric, joint, stage, threshold, occlusion and distractors.

All scores are computed in *original-image* pixels (1-based, as MPII), like
``cpm-nb evaluate-mpii``.  The pictures of a validation pass are
:mod:`cpm_nb.course.overlays`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cpm_nb.core import errors, skeleton
from cpm_nb.core.progress import Progress
from cpm_nb.data import preprocess
from cpm_nb.evaluation import metrics

# In a 368-px CPM crop a person (200*scale px) is 1.171*200 = 234 px tall and the MPII head
# size (0.6 x head-box diagonal, 200*scale = 4.8 diagonals) is 0.6 * 234 / 4.8 = 29 px.
ARTICLE_PERSON_PX = preprocess.CPM_TARGET_DIST * 200.0
ARTICLE_HEAD_SIZE_PX = metrics.SC_BIAS * ARTICLE_PERSON_PX / 4.8


@dataclass
class ValidationPredictions:
    """Predictions of every stage for every person of a split, with the ground truth."""

    images: np.ndarray  # uint8 [N, S, S, 3] unaugmented crops
    pred: list  # per stage: [N, 16, 2] original px (1-based)
    pred_crop: np.ndarray  # last stage, [N, 16, 2] crop px (0-based)
    confidence: np.ndarray  # last stage, [N, 16]
    maps: np.ndarray = field(repr=False)  # last stage, float16 [N, M, M, maps]
    gt: np.ndarray = field(repr=False, default=None)  # [N, 16, 2] original px
    gt_crop: np.ndarray = field(repr=False, default=None)  # [N, 16, 2] crop px
    visibility: np.ndarray = field(repr=False, default=None)  # [N, 16] 0/1/2
    headboxes: np.ndarray = field(repr=False, default=None)  # [N, 2, 2]
    n_others: np.ndarray = field(repr=False, default=None)  # [N]
    scale: np.ndarray = field(repr=False, default=None)  # [N] MPII person scale
    # The other people of the same image whose annotated joints fall inside this
    # person's crop (distractors): their joints, original px, NaN = none / not annotated,
    # [N, K, 16, 2].  None when the split's annotations are not found next to the records.
    others: np.ndarray = field(repr=False, default=None)
    crop_matrix: np.ndarray = field(repr=False, default=None)  # [N, 3, 3] original -> crop px

    @property
    def n(self) -> int:
        return len(self.gt)

    @property
    def valid(self) -> np.ndarray:
        return self.visibility > 0

    @property
    def stages(self) -> int:
        return len(self.pred)

    @property
    def final(self) -> np.ndarray:
        return self.pred[-1]

    @property
    def distracted(self) -> np.ndarray:
        """[N] True when another person has a joint inside this person's crop (falls back
        to "another person in the image" when the annotations were not found)."""
        if self.others is None:
            return self.n_others > 0
        return np.isfinite(self.others).all(-1).any((1, 2))


def _people(folder, split: str, max_examples: int | None):
    """People in ``split`` of a prepared folder (None when its meta.json does not say)."""
    from cpm_nb.core import files
    from cpm_nb.data.shards import META_FILE

    try:
        people = int(files.read_json(Path(folder) / META_FILE)["splits"][split]["kept"])
    except (errors.CpmError, KeyError, TypeError, ValueError):
        return None
    return min(people, max_examples) if max_examples else people


def collect(model, folder, split: str = "val", batch_size: int = 32,
            max_examples: int | None = None, keep_images: bool = True,
            input_path: str = "auto", progress: bool | str = False) -> ValidationPredictions:
    """Run ``model`` (a :class:`~cpm_nb.model.network.CPM`) on the unaugmented ``split`` of a
    prepared folder and keep everything (see the module docstring); ``keep_images=False``
    drops the crops and maps (what :func:`evaluate` needs is the joints only)."""
    from cpm_nb.data import batches as data
    from cpm_nb.model import heatmaps
    from cpm_nb.model.network import ensure_cpm

    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be >= 1, got {max_examples}")
    cfg = ensure_cpm(model).cpm_config
    data.check_data(folder, cfg)
    predict = model.belief_maps
    keep: dict[str, list] = {k: [] for k in ("images", "pred_crop", "conf", "maps", "gt",
                                             "gt_crop", "vis", "boxes", "others", "scale",
                                             "name", "person", "matrix")}
    stage_preds: list[list] = [[] for _ in range(cfg.stages)]
    seen = 0
    batches = data.evaluation_batches(folder, split, batch_size, input_path)
    # MPII's 2,958 validation people take minutes on a CPU: say how far it got
    bar = Progress(_people(folder, split, max_examples), f"evaluating {split}",
                   unit="person", mode=progress or False)
    for images, joints, vis, meta in batches:
        if max_examples:
            k = min(len(images), max_examples - seen)
            images, joints, vis = images[:k], joints[:k], vis[:k]
            meta = {key: v[:k] for key, v in meta.items()}
        outs = predict(images)
        for s, maps in enumerate(outs):
            j, c = heatmaps.decode(maps[..., : cfg.num_joints])
            stage_preds[s].append(heatmaps.to_original(j, meta["crop_matrix"]))
        keep["pred_crop"].append(j)
        keep["conf"].append(c)
        if keep_images:
            keep["maps"].append(outs[-1].astype(np.float16))
            keep["images"].append(images)
        keep["gt"].append(meta["orig_joints"].astype(np.float64))
        keep["gt_crop"].append(joints)
        keep["vis"].append(vis)
        keep["boxes"].append(np.asarray(meta["head_box"]).reshape(-1, 2, 2).astype(np.float64))
        keep["others"].append(meta["n_others"])
        keep["scale"].append(meta["scale"])
        keep["name"].append(np.asarray(meta["image_name"]))
        keep["person"].append(np.asarray(meta["person_index"]))
        keep["matrix"].append(np.asarray(meta["crop_matrix"]))
        seen += len(images)
        bar.update(len(images))
        if max_examples and seen >= max_examples:
            break
    bar.close()
    cat = {k: np.concatenate(v) if v else None for k, v in keep.items()}
    return ValidationPredictions(
        images=cat["images"], pred=[np.concatenate(p) for p in stage_preds],
        pred_crop=cat["pred_crop"], confidence=cat["conf"], maps=cat["maps"], gt=cat["gt"],
        gt_crop=cat["gt_crop"], visibility=cat["vis"], headboxes=cat["boxes"],
        n_others=cat["others"], scale=cat["scale"], crop_matrix=cat["matrix"],
        others=crop_distractors(folder, split, cat["name"], cat["person"], cat["matrix"],
                                cfg.input_size))


def crop_distractors(folder, split, names, person_index, matrices, input_size: int):
    """The joints (original px) of the other people of each crop's image that have at
    least one annotated joint inside that crop, ``[N, K, 16, 2]`` (NaN padded), from the
    annotations ``{split}.json`` next to the records folder; None when there is none."""
    from pathlib import Path

    from cpm_nb.data import mpii, pose_stats

    path = Path(folder).parent / f"{split}.json"
    if names is None or not path.is_file():
        return None
    by_image: dict = {}
    for p in mpii.read_json(path):
        by_image.setdefault(str(p.image), []).append(p)
    found = []
    for name, index, m in zip(names, person_index, matrices):
        name = name.decode() if isinstance(name, bytes) else str(name)
        mine = []
        for other in by_image.get(name, []):
            if other.person_index == int(index):
                continue
            if pose_stats.joints_in_crop(m, other.joints, other.missing, input_size).any():
                ok = ~np.asarray(other.missing, bool)
                mine.append(np.where(ok[:, None], other.joints, np.nan))
        found.append(mine)
    k = max([len(f) for f in found] + [1])
    out = np.full((len(found), k, 16, 2), np.nan)
    for i, mine in enumerate(found):
        if mine:
            out[i, :len(mine)] = mine
    return out


def on_other_person(vp: ValidationPredictions, stage: int = -1,
                    threshold: float = 0.5) -> np.ndarray:
    """[N, 16] True where the prediction is wrong for the person but within ``threshold``
    head sizes of the same joint of a distractor in the crop (it followed the other one)."""
    pred = vp.pred[stage]
    d_own = metrics.pckh_distances(pred, vp.gt, vp.headboxes, vp.valid)
    hit = np.zeros(vp.valid.shape, bool)
    if vp.others is None:
        return hit
    head = metrics.head_sizes(vp.headboxes)[:, None]
    for k in range(vp.others.shape[1]):
        d = np.linalg.norm(pred - vp.others[:, k], axis=-1) / head
        with np.errstate(invalid="ignore"):
            hit |= d <= threshold
    with np.errstate(invalid="ignore"):
        wrong = ~(d_own <= threshold)
    return hit & wrong & vp.valid


def left_right_swaps(vp: ValidationPredictions, stage: int = -1,
                     threshold: float = 0.5) -> np.ndarray:
    """[N, 16] True where a left or right joint is wrong but within ``threshold`` head
    sizes of the person's *other* side's joint (left and right confused)."""
    pred = vp.pred[stage]
    flip = np.asarray(skeleton.flip_permutation())
    mirrored_gt = vp.gt[:, flip]
    ok_mirror = vp.valid & vp.valid[:, flip] & (flip != np.arange(16))[None]
    d_own = metrics.pckh_distances(pred, vp.gt, vp.headboxes, vp.valid)
    d_other = metrics.pckh_distances(pred, mirrored_gt, vp.headboxes, ok_mirror)
    with np.errstate(invalid="ignore"):
        return ok_mirror & ~(d_own <= threshold) & (d_other <= threshold)


def _share(mask: np.ndarray, of: np.ndarray) -> float | None:
    return None if not of.any() else float(100.0 * mask[of].mean())


def _num(v):
    return None if v is None or not math.isfinite(v) else float(v)


def _pckh_mean(pred, gt, headboxes, valid) -> float | None:
    if not valid.any():
        return None
    return _num(metrics.pckh(pred, gt, headboxes, valid).mean)


def summarize(vp: ValidationPredictions, split: str = "val") -> dict:
    """The numbers of a validation pass: the ``evaluate-mpii`` keys of the last stage
    (``pckh`` table, ``mean``, ``mean_at_0.1``, ``per_joint``), the article's 25-px metric
    (``article_25px``), ``per_stage`` PCKh@0.5, ``hard``: PCKh@0.5 on the subsets of
    :func:`hard_subsets` (with ``hard_counts`` and ``hard_per_stage``), and
    ``errors_per_stage``: the share of joints that landed on a distractor in the crop
    and of left/right joints swapped, in percent."""
    gt, boxes, valid = vp.gt, vp.headboxes, vp.valid
    out = metrics.pckh(vp.final, gt, boxes, valid).as_json()
    out.pop("curve", None)
    out["article_25px"] = _num(metrics.fixed_radius(vp.final, gt, valid,
                                                    metrics.ARTICLE_RADIUS).total)
    out["per_stage"] = [_pckh_mean(p, gt, boxes, valid) for p in vp.pred]
    subsets = hard_subsets(vp)
    out["hard"] = {k: _pckh_mean(vp.final, gt, boxes, m) for k, m in subsets.items()}
    out["hard_counts"] = {k: int(m.sum()) for k, m in subsets.items()}
    out["hard_per_stage"] = {k: [_pckh_mean(p, gt, boxes, subsets[k]) for p in vp.pred]
                             for k in ("occluded_joints", "with_distractors", "limbs_crossed")}
    distracted = valid & vp.distracted[:, None]
    lr = valid & (skeleton_side() != 0)[None]
    out["errors_per_stage"] = {
        "on_other_person": [_share(on_other_person(vp, s), distracted)
                            for s in range(vp.stages)],
        "left_right_swapped": [_share(left_right_swaps(vp, s), lr) for s in range(vp.stages)]}
    out["sampling_error"] = sampling_error(vp, out["mean"])
    out["distractor_definition"] = ("another person with a joint inside the crop"
                                    if vp.others is not None else "another person in the image")
    out["n_examples"] = int(vp.n)
    out["split"] = split
    return out


def sampling_error(vp: ValidationPredictions, mean: float | None, stage: int = -1) -> dict:
    """The validation set's own sampling error of the PCKh@0.5 mean (the joints it pools,
    the binomial and the people-bootstrap standard errors, percentage points:
    :func:`cpm_nb.evaluation.statistics.sampling_error`)."""
    from cpm_nb.evaluation import statistics

    d = metrics.pckh_distances(vp.pred[stage], vp.gt, vp.headboxes, vp.valid)
    counted = vp.valid.copy()
    counted[:, list(metrics.PCKH_EXCLUDED)] = False
    with np.errstate(invalid="ignore"):
        correct = (d <= metrics.PCKH_THRESHOLD) & counted
    return statistics.sampling_error(mean, correct.sum(1), counted.sum(1))


def skeleton_side() -> np.ndarray:
    """[16] -1 for right joints, +1 for left joints, 0 for the middle ones."""
    return np.array([-1 if n.startswith("r_") else 1 if n.startswith("l_") else 0
                     for n in skeleton.JOINT_NAMES])


def limbs_crossed(gt: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[N] True when a person's left and right wrists, elbows, knees or ankles are on the
    'wrong' side of each other in the image (x order opposite to the shoulders' or
    hips'): limbs crossing in front of the body, where left and right are ambiguous."""
    J = skeleton.JOINT
    crossed = np.zeros(len(gt), bool)
    for root, tips in (("shoulder", ("elbow", "wrist")), ("hip", ("knee", "ankle"))):
        r, l_ = J[f"r_{root}"], J[f"l_{root}"]
        ok_root = valid[:, r] & valid[:, l_]
        side = np.sign(gt[:, l_, 0] - gt[:, r, 0])
        for tip in tips:
            a, b = J[f"r_{tip}"], J[f"l_{tip}"]
            ok = ok_root & valid[:, a] & valid[:, b]
            crossed |= ok & (np.sign(gt[:, b, 0] - gt[:, a, 0]) == -side) & (side != 0)
    return crossed


def hard_subsets(vp: ValidationPredictions) -> dict[str, np.ndarray]:
    """[N, 16] joint masks of the cases where context decides: occluded joints (and
    visible ones), people with a distractor in the crop (and without), people whose
    limbs cross (left/right ambiguous)."""
    valid, vis = vp.valid, vp.visibility
    distract = vp.distracted[:, None]
    crossed = limbs_crossed(vp.gt, valid)[:, None]
    return {"occluded_joints": valid & (vis == 1), "visible_joints": valid & (vis == 2),
            "with_distractors": valid & distract, "alone": valid & ~distract,
            "limbs_crossed": valid & crossed}


def evaluate(model, folder, split: str = "val", batch_size: int = 32,
             max_examples: int | None = None, input_path: str = "auto",
             progress: bool | str = False) -> dict:
    """:func:`summarize` of :func:`collect` (without keeping the crops); ``progress``: a
    bar or lines (:mod:`cpm_nb.core.progress`) while the people are predicted."""
    vp = collect(model, folder, split, batch_size, max_examples, keep_images=False,
                 input_path=input_path, progress=progress)
    return summarize(vp, split)


# --- metrics side by side ------------------------------------------------------------------


def head_size(vp: ValidationPredictions) -> np.ndarray:
    return metrics.head_sizes(vp.headboxes)


def metric_summary(vp: ValidationPredictions, radius: float = metrics.ARTICLE_RADIUS) -> dict:
    """The source article's fixed radius, PCKh@0.5 (and @0.1) and strict PCP of the last
    stage, in percent, plus what the fixed radius means here in head sizes."""
    pck = metrics.pckh(vp.final, vp.gt, vp.headboxes, vp.valid)
    fixed = metrics.fixed_radius(vp.final, vp.gt, vp.valid, radius)
    pcp = metrics.pcp(vp.final, vp.gt, vp.valid)
    hs = head_size(vp)
    # the same radius relative to the person, as in the article's 368-px crops
    height_fraction = radius / ARTICLE_PERSON_PX
    rescaled = metrics.pck(vp.final, vp.gt, 200 * vp.scale, height_fraction, vp.valid)
    return {"article_radius": fixed.total, "pckh@0.5": pck.mean, "pckh@0.1": pck.mean_at_0_1,
            "strict_pcp": pcp.total, "radius_px": radius,
            "article_radius_rescaled": rescaled.total,
            "rescaled_radius_px": float(height_fraction * np.median(200 * vp.scale)),
            "article_radius_in_head_sizes_at_368": float(radius / ARTICLE_HEAD_SIZE_PX),
            "median_head_size_px": float(np.median(hs)),
            "radius_in_head_sizes": float(radius / np.median(hs)),
            "median_person_height_px": float(np.median(200 * vp.scale)),
            "pckh": pck, "pcp": pcp}


def per_joint_rows(vp: ValidationPredictions, radius: float = metrics.ARTICLE_RADIUS):
    """One row per joint: name, PCKh@0.5, PCKh@0.1, fixed-radius %, annotated count."""
    p5 = metrics.pckh(vp.final, vp.gt, vp.headboxes, vp.valid)
    p1 = metrics.pckh(vp.final, vp.gt, vp.headboxes, vp.valid, threshold=0.1)
    fixed = metrics.fixed_radius(vp.final, vp.gt, vp.valid, radius)
    return [(name, p5.per_joint[j], p1.per_joint[j], fixed.per_joint[j], int(p5.counts[j]))
            for j, name in enumerate(skeleton.JOINT_NAMES)]


def format_per_joint(rows, radius: float = metrics.ARTICLE_RADIUS) -> str:
    head = f"{'joint':<11} {'PCKh@0.5':>9} {'PCKh@0.1':>9} {f'{radius:g} px':>7} {'n':>5}"
    lines = [head]
    for name, a, b, c, n in rows:
        note = "  (not in the PCKh mean)" if skeleton.JOINT[name] in metrics.PCKH_EXCLUDED \
            else ""
        lines.append(f"{name:<11} {a:>9.1f} {b:>9.1f} {c:>7.1f} {n:>5}{note}")
    return "\n".join(lines)


def pckh_of(vp: ValidationPredictions, mask: np.ndarray, stage: int = -1) -> float:
    """PCKh@0.5 (official pooling) of the joints selected by ``mask`` [N, 16]."""
    mask = mask & vp.valid
    if not mask.any():
        return float("nan")
    return metrics.pckh(vp.pred[stage], vp.gt, vp.headboxes, mask).mean


def per_stage(vp: ValidationPredictions) -> dict:
    """PCKh@0.5 after each stage: all joints, occluded joints, people with a distractor
    in the crop, people with crossed limbs."""
    hard = hard_subsets(vp)
    subsets = {"all joints": vp.valid, "occluded joints": hard["occluded_joints"],
               "distractor in crop": hard["with_distractors"],
               "limbs crossed": hard["limbs_crossed"]}
    return {name: [pckh_of(vp, mask, s) for s in range(vp.stages)]
            for name, mask in subsets.items()}


def by_occlusion(vp: ValidationPredictions) -> dict:
    """PCKh@0.5 of visible versus occluded joints, and per person by how many of its
    joints are occluded (0, 1-2, 3+); values with their joint counts."""
    out = {}
    for name, mask in (("visible joints", vp.visibility == 2),
                       ("occluded joints", vp.visibility == 1)):
        out[name] = (pckh_of(vp, mask), int(mask.sum()))
    n_occ = (vp.visibility == 1).sum(1)
    for name, sel in (("people, 0 occluded", n_occ == 0), ("people, 1-2 occluded",
                                                           (n_occ >= 1) & (n_occ <= 2)),
                      ("people, 3+ occluded", n_occ >= 3)):
        mask = sel[:, None] & vp.valid
        out[name] = (pckh_of(vp, mask), int(sel.sum()))
    return out


def by_distractors(vp: ValidationPredictions) -> dict:
    """PCKh@0.5 of people alone in their crop, with another person's joints in the
    crop, and with other people only elsewhere in the image; with people counts, and the
    share of predicted joints that landed on the other person."""
    inside = vp.distracted
    out = {}
    for name, sel in (("alone in the crop", ~inside & (vp.n_others == 0)),
                      ("others in the image, not in the crop", ~inside & (vp.n_others > 0)),
                      ("another person in the crop", inside)):
        out[name] = (pckh_of(vp, sel[:, None] & vp.valid), int(sel.sum()))
    mask = inside[:, None] & vp.valid
    out["joints on the other person (%)"] = (_share(on_other_person(vp), mask) or 0.0,
                                             int(mask.sum()))
    return out


def person_scores(vp: ValidationPredictions, threshold: float = 0.5) -> np.ndarray:
    """Per person: % of its annotated joints within ``threshold`` head sizes, [N]."""
    d = metrics.pckh_distances(vp.final, vp.gt, vp.headboxes, vp.valid)
    with np.errstate(invalid="ignore"):
        ok = d <= threshold
    return 100.0 * (ok & vp.valid).sum(1) / np.maximum(vp.valid.sum(1), 1)


def best_and_worst(vp: ValidationPredictions, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the ``k`` best and ``k`` worst people (ties: by mean normalised error)."""
    score = person_scores(vp)
    d = metrics.pckh_distances(vp.final, vp.gt, vp.headboxes, vp.valid)
    err = np.nanmean(np.where(np.isfinite(d), d, np.nan), axis=1)
    order = np.lexsort((err, -score))  # best first
    return order[:k], order[::-1][:k]


def write_mpii_files(vp: ValidationPredictions, folder) -> tuple:
    """Write the ground truth in the ``gt_valid.mat`` layout (``pos_gt_src`` 16x2xN,
    ``jnt_missing`` 16xN, ``headboxes_src`` 2x2xN, ``dataset_joints``) and the last stage's
    predictions as ``preds`` Nx16x2 (1-based original px): the two files
    ``cpm-nb evaluate-mpii`` scores.  Returns their paths."""
    from pathlib import Path

    import scipy.io

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gt = np.where(vp.valid[..., None], vp.gt, 0.0)
    gt_path, pred_path = folder / "gt_valid.mat", folder / "pred.mat"
    names = np.array(skeleton.SHORT_NAMES, dtype=object)[None]
    scipy.io.savemat(gt_path, {"pos_gt_src": gt.transpose(1, 2, 0),
                               "jnt_missing": (~vp.valid).T.astype(np.uint8),
                               "headboxes_src": vp.headboxes.transpose(1, 2, 0),
                               "dataset_joints": names})
    scipy.io.savemat(pred_path, {"preds": vp.final})
    return gt_path, pred_path


def validation_examples(folder, n: int = 4, input_path: str = "auto") -> tuple:
    """The first ``n`` unaugmented validation crops: (images, joints, visibility)."""
    from cpm_nb.data import batches as data

    images, joints, vis, _ = next(iter(data.evaluation_batches(folder, "val", n, input_path)))
    return images[:n], joints[:n], vis[:n]


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def format_scores(scores: dict, title: str) -> str:
    rows = [*scores["pckh"].items(), ("Mean", scores["mean"]),
            ("Mean@0.1", scores["mean_at_0.1"])]
    return "\n".join([
        title,
        f"{'':<10}" + "".join(f"{k:>10}" for k, _ in rows),
        f"{'PCKh@0.5':<10}" + "".join(f"{_fmt(v):>10}" for _, v in rows),
        f"article 25-px metric: {_fmt(scores['article_25px'])} %   per stage PCKh@0.5: "
        + ", ".join(_fmt(v) for v in scores["per_stage"]),
        "hard subsets PCKh@0.5: " + ", ".join(
            f"{k} {_fmt(v)} ({scores['hard_counts'][k]} joints)"
            for k, v in scores["hard"].items()),
    ])
