"""From the belief maps of one person's crops to 16 MPII joints: scales, decodings, joint orders.

A :class:`~cpm_nb.inference.predict.Predictor` may crop a person at several scale factors
(same centre; factor 1 first).  :func:`merge_scales` averages such maps on the grid of
the scale-1 crop -- the one multi-scale merge, at any resolution: belief maps (stride 8)
or maps upsampled to pixels (stride 1).  Then one of two decodings:

* :data:`PEAK` (the default): the merged maps' peak, refined to a fraction of a cell
  (:func:`cpm_nb.model.heatmaps.decode`);
* :data:`RELEASE`: the test procedure of the released CPM code -- each scale's maps
  upsampled 8x (bicubic, :func:`cpm_nb.model.heatmaps.upsample`), moved onto the scale-1
  crop, averaged over the scales, and a joint is the pixel of its map's maximum
  (:func:`upsampled_argmax`).

A model whose maps are in another joint order (the released models: 14 joints) has a
*joint order*: for each of its maps the MPII joint id.  :func:`to_mpii` puts its joints in
MPII order and derives the two it lacks (:data:`DERIVED_JOINTS`); :func:`to_mpii_maps` does
the same for the maps.  A converted model's run folder records both the decoding and its
joint order (``preprocessing`` in ``cpm_config.json``, written by :mod:`cpm_nb.caffe`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cpm_nb.core import skeleton
from cpm_nb.core.config import OUTPUT_STRIDE
from cpm_nb.model import heatmaps

PEAK = "peak"
RELEASE = "release"
DECODINGS = (PEAK, RELEASE)
# MPII joints a 14-joint model does not predict: the midpoint of two it does.
DERIVED_JOINTS = {"pelvis": ("r_hip", "l_hip"), "thorax": ("r_shoulder", "l_shoulder")}


# --- scales ------------------------------------------------------------------------------------


def _scale_taps(n: int, factor: float, stride: int):
    """The two cells (index, weight) of the scale-``factor`` map that each of the ``n``
    cells of the scale-1 map reads, bilinearly, and whether each lies inside the map.
    Crops share the centre, so a point ``p`` of the scale-1 crop is the point
    ``half + factor * (p - half)`` of the other one."""
    centre = (stride - 1) / 2.0
    half = (n * stride - 1) / 2.0
    p = np.arange(n) * stride + centre
    u = (half + factor * (p - half) - centre) / stride  # cell coordinate in the other map
    lo = np.floor(u).astype(int)
    frac = u - lo
    return [(k, w * ((k >= 0) & (k < n))) for k, w in ((lo, 1.0 - frac), (lo + 1, frac))]


def _resample(maps: np.ndarray, taps, axis: int) -> np.ndarray:
    n = maps.shape[axis]
    out = 0.0
    for k, w in taps:
        shape = [1] * maps.ndim
        shape[axis] = n
        out = out + np.take(maps, np.clip(k, 0, n - 1), axis=axis) * w.reshape(shape)
    return out


def merge_scales(maps: np.ndarray, factors: Sequence[float], stride: int = OUTPUT_STRIDE,
                 mean: str = "covered") -> np.ndarray:
    """Average maps ``[n_scales, M, M, C]`` of crops at ``factors`` (``factors[0] = 1``; a
    map's cell ``c`` centred on pixel ``c * stride + (stride - 1) / 2`` of its crop) on the
    grid of the scale-1 crop, each resampled bilinearly (zero where its crop does not
    reach).  ``mean="covered"``: each cell divided by the weight of the scales that cover
    it; ``"all"``: by the number of scales (the released code's average).

    Belief maps are resampled on their own coarse grid: peaks narrower than a cell are
    blurred by that (on ideal maps the merged peak moves by up to ~1.5 crop px, mean ~0.5
    px, against < 0.1 px at one scale).  What the average buys is robustness: a joint the
    network misses at one scale is found at another.
    """
    maps = np.asarray(maps)
    if len(factors) == 1:
        return maps[0]
    if mean not in ("covered", "all"):
        raise ValueError(f"mean must be 'covered' or 'all', got {mean!r}")
    m = maps.shape[1]
    total = np.zeros(maps.shape[1:])
    cover = np.zeros((m, m, 1))
    for f, one in zip(factors, maps):
        taps = _scale_taps(m, float(f), stride)
        total += _resample(_resample(one, taps, 0), taps, 1)
        reach = sum(w for _, w in taps)
        cover += np.outer(reach, reach)[..., None]
    if mean == "all":
        return total / len(factors)
    return total / np.maximum(cover, 1e-6)


# --- the release's decoding ------------------------------------------------------------------


def argmax_joints(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) pixel ``[C, 2]`` of each channel's maximum of ``[H, W, C]`` maps, and the
    maximum ``[C]``."""
    flat = maps.reshape(-1, maps.shape[-1])
    idx = flat.argmax(0)
    y, x = np.unravel_index(idx, maps.shape[:2])
    return np.stack([x, y], -1).astype(np.float64), flat[idx, np.arange(flat.shape[1])]


def upsampled_argmax(maps: np.ndarray, factors: Sequence[float],
                     stride: int = OUTPUT_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """:data:`RELEASE`: joints (0-based px of the scale-1 crop) and confidences from one
    person's per-scale maps ``[n_scales, M, M, C]``: each upsampled ``stride`` times
    (bicubic), merged over the scales (``mean="all"``, at full resolution), argmax."""
    up = np.stack([heatmaps.upsample(one, stride=stride, method="bicubic") for one in maps])
    return argmax_joints(merge_scales(up, factors, stride=1, mean="all"))


def check_decoding(name: str | None) -> str:
    """The decoding ``name`` (``None``: :data:`PEAK`); an unknown one is a ``ValueError``."""
    name = name or PEAK
    if name not in DECODINGS:
        raise ValueError(f"unknown decoding {name!r} (known: {', '.join(DECODINGS)})")
    return name


# --- joint orders ----------------------------------------------------------------------------


def mpii_ids(joints: Sequence[str]) -> list[int | None]:
    """For each map name, its MPII joint id (``None``: background, or not an MPII joint)."""
    return [skeleton.JOINT.get(j) for j in joints]


def to_mpii(joints: np.ndarray, conf: np.ndarray, to_ids) -> tuple[np.ndarray, np.ndarray]:
    """Joints of a model's maps ``[..., J, 2]`` (confidences ``[..., J]``) in MPII order
    ``[..., 16, 2]``; the MPII joints the model lacks (:data:`DERIVED_JOINTS`) are the
    midpoint of two it has, with the lower of their confidences."""
    shape = joints.shape[:-2]
    out = np.zeros((*shape, skeleton.NUM_JOINTS, 2))
    c = np.zeros((*shape, skeleton.NUM_JOINTS))
    for k, j in enumerate(to_ids):
        out[..., j, :], c[..., j] = joints[..., k, :], conf[..., k]
    for name, (a, b) in DERIVED_JOINTS.items():
        j, a, b = skeleton.JOINT[name], skeleton.JOINT[a], skeleton.JOINT[b]
        if j not in to_ids:
            out[..., j, :] = (out[..., a, :] + out[..., b, :]) / 2
            c[..., j] = np.minimum(c[..., a], c[..., b])
    return out, c


def to_mpii_maps(maps: np.ndarray, to_ids) -> np.ndarray:
    """Maps ``[..., C]`` in MPII order ``[..., 16 (+1)]``: zeros for the joints the model
    does not predict, its background map (if any) last."""
    out = np.zeros((*maps.shape[:-1], skeleton.NUM_JOINTS + (maps.shape[-1] > len(to_ids))),
                   maps.dtype)
    for k, j in enumerate(to_ids):
        out[..., j] = maps[..., k]
    if maps.shape[-1] > len(to_ids):
        out[..., -1] = maps[..., len(to_ids)]
    return out
