"""The MPII evaluation ``.mat`` files: ground truth in the ``gt_valid.mat`` layout and
predictions (``preds`` or ``pos_pred_src``), read and checked, and their official PCKh
(:func:`evaluate_mpii`).

Every problem is a :class:`cpm_nb.core.errors.DataError` naming the file, the variable and
how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpm_nb.core import skeleton
from cpm_nb.core.errors import DataError
from cpm_nb.evaluation import metrics


@dataclass
class MpiiGroundTruth:
    """The ``gt_valid.mat`` layout, converted to [N, 16, 2] / [N, 16] / [N, 2, 2]."""

    joints: np.ndarray
    missing: np.ndarray
    headboxes: np.ndarray

    @property
    def n(self) -> int:
        return self.joints.shape[0]


MAX_MAT_BYTES = 1 << 30  # the official annotations are 12 MB


def _loadmat(path, what):
    import io

    import scipy.io

    from cpm_nb.core import files

    # a FIFO or /dev/zero is refused or read with a cap, never hung on
    data = files.read_input(path, f"{what} file", MAX_MAT_BYTES)
    try:
        return scipy.io.loadmat(io.BytesIO(data))
    except NotImplementedError:
        raise DataError(f"{what} file {path} is a MATLAB v7.3 (HDF5) file; save it in the "
                        f"v7 format (MATLAB: save(..., '-v7'); Python: scipy.io.savemat)") from None
    except Exception as err:  # noqa: BLE001 - scipy raises many types for a bad file
        raise DataError(f"cannot read {what} file {path} as a MATLAB .mat file ({err}); "
                        "give a MATLAB v7 .mat file") from None


def _var(mat, name, path):
    if name not in mat:
        have = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise DataError(f"{path}: variable '{name}' is missing (variables found: {have}); "
                        f"store it under the name '{name}'")
    return np.asarray(mat[name])


def load_mpii_ground_truth(path) -> MpiiGroundTruth:
    """Read a ``gt_valid.mat``-style file: ``pos_gt_src`` 16x2xN, ``jnt_missing`` 16xN,
    ``headboxes_src`` 2x2xN and (optional) ``dataset_joints`` 1x16 names, which must
    follow the MPII joint order."""
    mat = _loadmat(path, "annotation")
    pos = _var(mat, "pos_gt_src", path)
    missing = _var(mat, "jnt_missing", path)
    boxes = _var(mat, "headboxes_src", path)
    if pos.ndim != 3 or pos.shape[:2] != (16, 2):
        raise DataError(f"{path}: pos_gt_src must be 16x2xN (16 MPII joints, x and y, "
                        f"N people), got {'x'.join(map(str, pos.shape))}")
    n = pos.shape[2]
    if missing.shape != (16, n):
        raise DataError(f"{path}: jnt_missing must be 16x{n} to match pos_gt_src, got "
                        f"{'x'.join(map(str, missing.shape))}")
    if boxes.shape != (2, 2, n):
        raise DataError(f"{path}: headboxes_src must be 2x2x{n} to match pos_gt_src, got "
                        f"{'x'.join(map(str, boxes.shape))}")
    if "dataset_joints" in mat:
        names = [str(np.asarray(v).ravel()[0]) for v in np.asarray(mat["dataset_joints"]).ravel()]
        if names != list(skeleton.SHORT_NAMES):
            raise DataError(f"{path}: dataset_joints {names} is not the MPII order "
                            f"{list(skeleton.SHORT_NAMES)}; reorder the joints")
    try:
        joints = np.transpose(pos, (2, 0, 1)).astype(np.float64)
        boxes = np.transpose(boxes, (2, 0, 1)).astype(np.float64)
        missing = missing.T.astype(bool)
    except (TypeError, ValueError):
        raise DataError(f"{path}: pos_gt_src, jnt_missing and headboxes_src must be "
                        "numeric arrays") from None
    gt = MpiiGroundTruth(joints=joints, missing=missing, headboxes=boxes)
    check_ground_truth(gt, path)
    return gt


def check_ground_truth(gt: MpiiGroundTruth, path="the annotations") -> None:
    """Refuse ground truth for which PCKh is undefined, naming the people (1-based, in
    file order): a head box that is not finite or has zero size, or a non-finite
    annotated joint, for a person with at least one annotated joint (people without
    one count for nothing and are let through), and a file with no annotated joint.

    The official MATLAB toolkit divides by the head size regardless, so such a person's
    joints silently count as wrong (or give NaN); here it is an error to fix in the
    file instead."""
    counted = ~gt.missing
    people = counted.any(axis=1)
    if not people.any():
        raise DataError(f"{path}: no annotated joint (jnt_missing is 1 everywhere); "
                        "nothing to score")
    sizes = metrics.head_sizes(gt.headboxes)
    bad_box = people & ~(np.isfinite(sizes) & (sizes > 0))
    if bad_box.any():
        raise DataError(f"{path}: {_people(bad_box)} a zero-size or non-finite head box "
                        "(headboxes_src), so PCKh is undefined for them; fix or remove them")
    bad_joint = (counted & ~np.isfinite(gt.joints).all(axis=-1)).any(axis=1)
    if bad_joint.any():
        raise DataError(f"{path}: {_people(bad_joint)} NaN or infinite annotated joints "
                        "(pos_gt_src); mark them missing in jnt_missing or fix them")


def _people(mask: np.ndarray, limit: int = 10) -> str:
    """'3 people (1-based: 2, 5, 9) have' for a boolean mask over the people."""
    idx = (np.flatnonzero(mask) + 1).tolist()
    shown = ", ".join(map(str, idx[:limit])) + (", ..." if len(idx) > limit else "")
    return (f"{len(idx)} {'person' if len(idx) == 1 else 'people'} (1-based: {shown}) "
            f"{'has' if len(idx) == 1 else 'have'}")


def load_mpii_predictions(path, n: int | None = None) -> tuple[np.ndarray, str]:
    """Read predictions: ``preds`` Nx16x2 (or 16x2xN); if there is no ``preds``, a
    ``pos_pred_src`` 16x2xN (the layout of ``detections_our_format.mat``).

    Returns ([N, 16, 2] float64, the variable name used).  Checks the shape,
    ``n`` (the number of people in the annotations) and that every value is finite.
    """
    mat = _loadmat(path, "predictions")
    if "preds" in mat:
        name = "preds"
    elif "pos_pred_src" in mat:
        name = "pos_pred_src"
    else:
        _var(mat, "preds", path)  # raises, listing what is there
    arr = np.asarray(mat[name])
    shape = "x".join(map(str, arr.shape))
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: {name} must be a numeric array, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[1:] == (16, 2) and name == "preds":
        preds = arr
    elif arr.ndim == 3 and arr.shape[:2] == (16, 2):
        preds = np.transpose(arr, (2, 0, 1))
    else:
        want = "Nx16x2 or 16x2xN" if name == "preds" else "16x2xN"
        raise DataError(f"{path}: {name} must be {want} (16 MPII joints, x and y), got {shape}")
    preds = preds.astype(np.float64)
    if n is not None and preds.shape[0] != n:
        raise DataError(f"{path}: {name} holds {preds.shape[0]} people but the annotations "
                        f"hold {n}; predictions must follow the annotation order one to one")
    bad = ~np.isfinite(preds)
    if bad.any():
        person, joint = np.argwhere(bad.any(axis=-1))[0]
        raise DataError(f"{path}: {name} contains {int(bad.any(axis=-1).sum())} NaN or infinite "
                        f"joint predictions (first: person {person}, joint {joint} "
                        f"{skeleton.SHORT_NAMES[joint]}); predict every joint")
    return preds, name


def evaluate_mpii(annotations, predictions, threshold: float = metrics.PCKH_THRESHOLD):
    """Official PCKh of a predictions file against a ``gt_valid.mat``-style file.

    Returns (:class:`PCKhResult`, the predictions' variable name).  Raises
    :class:`cpm_nb.core.errors.DataError` naming the file and what is wrong with it."""
    gt = load_mpii_ground_truth(annotations)
    preds, name = load_mpii_predictions(predictions, gt.n)
    return metrics.pckh(preds, gt.joints, gt.headboxes, ~gt.missing, threshold), name
