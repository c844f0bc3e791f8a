"""The released CPM models' conventions: their joint orders and the test-time procedure.

The release's map orders (its test configuration files), the box and centre-map sizes it
was trained and tested at, the ``preprocessing`` block a converted run records
(:func:`release_preprocessing`, read by :mod:`cpm_nb.inference.predict`), and the release's decoding:
belief maps upsampled to the box, merged over the scales of the multi-scale search and
read at their maximum (:func:`release_decode`); 14-joint results mapped onto the 16 MPII
joints (:func:`to_mpii`).
"""

from __future__ import annotations

import numpy as np

from cpm_nb.caffe.proto import CaffeError

# The release's map orders (its test configuration files), in cpm-nb joint names.
RELEASE_JOINTS = {
    15: ("head_top", "upper_neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
         "l_wrist", "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "background"),
    10: ("l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist", "l_hip", "r_hip",
         "head", "background"),  # FLIC (upper body)
}  # fmt: skip
RELEASE_BOX = 368  # boxsize: the input side the release was trained and tested at
RELEASE_SIGMA = 21.0  # centre-map sigma at that size
RELEASE_TARGET_DIST = 41 / 35  # an MPII person (200*scale px) is 200*41/35 px tall in the box
RELEASE_SCALES = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)  # the release's MPII test search
# MPII joints a 14-joint model does not predict: the midpoint of two it does.
DERIVED_JOINTS = {"pelvis": ("r_hip", "l_hip"), "thorax": ("r_shoulder", "l_shoulder")}


def joint_names(joints, maps: int, where: str) -> tuple:
    """The names of a model's ``maps`` belief maps: given, or the release's order for that
    count; a count that does not match is a :class:`CaffeError`."""
    if joints is None:
        joints = RELEASE_JOINTS.get(maps, tuple(f"map{i}" for i in range(maps)))
    joints = tuple(joints)
    if len(joints) != maps:
        raise CaffeError(f"{where} has {maps} maps but {len(joints)} joint names were given")
    return joints


def mpii_map(joints) -> list[int | None]:
    """For each map name, its MPII joint id (None: background or not an MPII joint)."""
    from cpm_nb.core import skeleton

    return [skeleton.JOINT.get(j) for j in joints]


def release_preprocessing(joints, config, image_convs=("conv1_1",),
                          center_pooling: str = "pool_center_lower: average 9x9 stride 8, "
                                                "padding not counted") -> dict:
    """The ``preprocessing`` block of a converted run's ``cpm_config.json``: what the
    release does to an image before and after the network, as :mod:`cpm_nb.inference.predict`
    applies it."""
    joints = list(joints)
    named = [j for j in joints if j != "background"]
    to_mpii = mpii_map(named)
    return {
        "from": "the CPM release's deploy network and test code",
        "caffe_input": "blob 'data' [1, 4, S, S]: B, G, R as x / 256 - 0.5, then the centre "
                       "map; a Slice layer splits it at channel 3",
        "channel_order": f"RGB: the input channels of {' and '.join(image_convs)} were "
                         "reversed at conversion (the Caffe model takes BGR)",
        "value_scaling": "x / 256 - 0.5, inside the Keras model (layer 'normalize')",
        "pad_value": 128,
        "resampling": "cpm-nb's crop: one bilinear affine warp per scale (the release: "
                      "MATLAB imresize, bicubic, then a crop)",
        "box_size": RELEASE_BOX,
        "input_size": config.input_size,
        "stride": 8,
        "center_map": {"sigma": RELEASE_SIGMA * config.input_size / RELEASE_BOX, "peak": 1.0,
                       "at": "the person centre: pixel 184 (0-based) of the 368 box in the "
                             "release's Python demo; cpm-nb crops with the person centre at "
                             "(S - 1) / 2 and puts the peak there",
                       "pooling": center_pooling},
        "person_height_px": round(200 * RELEASE_TARGET_DIST, 3),
        "target_dist": RELEASE_TARGET_DIST,
        "scales": list(RELEASE_SCALES),
        "decoding": "release",
        "decoding_note": "each scale's last-stage maps upsampled 8x (bicubic), resampled onto "
                         "the scale-1 crop, averaged; a joint is the argmax of its map",
        "joints": joints,
        "joints_to_mpii": to_mpii if None not in to_mpii else None,
        "derived_joints": {k: list(v) for k, v in DERIVED_JOINTS.items()},
    }


def upsample(maps: np.ndarray, factor: int = 8) -> np.ndarray:
    """``[M, M, C]`` maps resized ``factor`` times (bicubic, pixel centres aligned as in
    MATLAB's ``imresize`` and OpenCV's ``resize``)."""
    from PIL import Image

    m = maps.shape[0]
    size = (m * factor, m * factor)
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(maps[..., c],
                                                                    dtype=np.float32), mode="F")
                                .resize(size, Image.Resampling.BICUBIC))
                     for c in range(maps.shape[-1])], axis=-1)


def _resample_axis(a: np.ndarray, factor: float, axis: int) -> np.ndarray:
    """Sample ``a`` along ``axis`` at ``half + factor * (i - half)`` (bilinear, 0 outside)."""
    n = a.shape[axis]
    half = (n - 1) / 2.0
    u = half + factor * (np.arange(n) - half)
    lo = np.floor(u).astype(int)
    frac = (u - lo).astype(np.float32)
    out = 0
    for k, w in ((lo, 1 - frac), (lo + 1, frac)):
        ok = (k >= 0) & (k < n)
        taken = np.take(a, np.clip(k, 0, n - 1), axis=axis)
        shape = [1] * a.ndim
        shape[axis] = n
        out = out + taken * (w * ok).reshape(shape)
    return out


def release_merge(maps: np.ndarray, factors) -> np.ndarray:
    """The release's multi-scale average, on the scale-1 crop at full resolution.

    ``maps[k]`` (``[M, M, C]``) come from the crop at scale ``factors[k]`` (same centre;
    ``factors[0] = 1``): each is upsampled 8x (bicubic), resampled onto the scale-1 crop
    (zero where that scale's crop does not reach) and the results are averaged -- the
    release sums the upsampled maps of all scales in the original image and divides by
    their number."""
    total = 0
    for f, one in zip(factors, maps):
        up = upsample(one, 8)
        total = total + _resample_axis(_resample_axis(up, f, 0), f, 1)
    return total / len(factors)


def argmax_joints(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) 0-based pixel of each channel's maximum ``[C, 2]`` and its value ``[C]``."""
    flat = maps.reshape(-1, maps.shape[-1])
    idx = flat.argmax(0)
    y, x = np.unravel_index(idx, maps.shape[:2])
    return np.stack([x, y], -1).astype(np.float64), flat[idx, np.arange(flat.shape[1])]


def release_decode(maps: np.ndarray, factors) -> tuple[np.ndarray, np.ndarray]:
    """Joints (0-based px of the scale-1 crop) and confidences from per-scale maps
    ``[n_scales, M, M, C]``: :func:`release_merge`, then :func:`argmax_joints`."""
    return argmax_joints(release_merge(maps, factors))


def to_mpii(joints: np.ndarray, conf: np.ndarray, to_ids) -> tuple[np.ndarray, np.ndarray]:
    """Joints of a model's maps ``[..., J, 2]`` in MPII order ``[..., 16, 2]``; the MPII
    joints the model lacks (:data:`DERIVED_JOINTS`) are the midpoint of two it has, with
    the lower of their confidences."""
    from cpm_nb.core import skeleton

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
    from cpm_nb.core import skeleton

    out = np.zeros((*maps.shape[:-1], skeleton.NUM_JOINTS + (maps.shape[-1] > len(to_ids))),
                   maps.dtype)
    for k, j in enumerate(to_ids):
        out[..., j] = maps[..., k]
    if maps.shape[-1] > len(to_ids):
        out[..., -1] = maps[..., len(to_ids)]
    return out
