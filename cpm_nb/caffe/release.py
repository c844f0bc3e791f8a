"""The released CPM models' conventions: their joint orders and the test-time procedure.

The release's map orders (its test configuration files), the box and centre-map sizes it
was trained and tested at, and the ``preprocessing`` block a converted run records
(:func:`release_preprocessing`): what the release does to an image before and after the
network, in the terms :mod:`cpm_nb.inference` reads -- the joint order of the maps
(``joints_to_mpii``; the 14-joint models lack pelvis and thorax, derived as
:data:`cpm_nb.inference.decoding.DERIVED_JOINTS`), the scales of its multi-scale search
(``scales`` for an MPII centre and scale, ``box_scales`` for a box), its decoding
(:data:`cpm_nb.inference.decoding.RELEASE`) and ``"procedure": "release"``: the release's
test code step by step (:mod:`cpm_nb.inference.release_demo`: the whole image resized
with MATLAB's antialiased bicubic ``imresize``, a box around the rounded centre, the maps
taken back to the image and read at their maximum there).  Runs converted before the
``procedure`` key existed lack it and keep cpm-nb's crops (a bilinear warp per scale, the
arg-max on the scale-1 crop).
"""

from __future__ import annotations

from cpm_nb.caffe.proto import CaffeError
from cpm_nb.inference import decoding, release_demo

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


def joint_names(joints, maps: int, where: str) -> tuple:
    """The names of a model's ``maps`` belief maps: given, or the release's order for that
    count; a count that does not match is a :class:`CaffeError`."""
    if joints is None:
        joints = RELEASE_JOINTS.get(maps, tuple(f"map{i}" for i in range(maps)))
    joints = tuple(joints)
    empty = [k + 1 for k, name in enumerate(joints) if not str(name).strip()]
    if empty:
        raise CaffeError(f"joint name {empty[0]} of {len(joints)} is empty; give {maps} "
                         "names separated by commas")
    twice = sorted({name for name in joints if joints.count(name) > 1})
    if twice:
        raise CaffeError(f"joint name {twice[0]!r} is given twice; each map needs its own name")
    if len(joints) != maps:
        raise CaffeError(f"{where} has {maps} maps but {len(joints)} joint names were given")
    return joints


def release_preprocessing(joints, config, image_convs=("conv1_1",),
                          center_pooling: str = "pool_center_lower: average 9x9 stride 8, "
                                                "padding not counted") -> dict:
    """The ``preprocessing`` block of a converted run's ``cpm_config.json``: what the
    release does to an image before and after the network, as
    :class:`cpm_nb.inference.predict.Predictor` applies it."""
    joints = list(joints)
    named = [j for j in joints if j != "background"]
    to_mpii = decoding.mpii_ids(named)
    return {
        "from": "the CPM release's deploy network and test code",
        "caffe_input": "blob 'data' [1, 4, S, S]: B, G, R as x / 256 - 0.5, then the centre "
                       "map; a Slice layer splits it at channel 3",
        "channel_order": f"RGB: the input channels of {' and '.join(image_convs)} were "
                         "reversed at conversion (the Caffe model takes BGR)",
        "value_scaling": "x / 256 - 0.5, inside the Keras model (layer 'normalize')",
        "pad_value": 128,
        "procedure": release_demo.PROCEDURE,
        "resampling": "the release's: the whole image resized per scale with MATLAB's imresize "
                      "(bicubic, Keys a = -0.5, antialiased when shrinking, mirrored borders), "
                      "then the box cut around the rounded centre "
                      "(cpm_nb.inference.release_demo)",
        "box_size": RELEASE_BOX,
        "input_size": config.input_size,
        "stride": 8,
        "center_map": {"sigma": RELEASE_SIGMA * config.input_size / RELEASE_BOX, "peak": 1.0,
                       "at": "the box's centre pixel S/2 - 1 (0-based; 183 of the 368 box, "
                             "1-based 184, as the release's MATLAB test code), where the "
                             "rounded person centre lies",
                       "pooling": center_pooling},
        "person_height_px": round(200 * RELEASE_TARGET_DIST, 3),
        "target_dist": RELEASE_TARGET_DIST,
        "scales": list(RELEASE_SCALES),
        "box_scales": {"octave": release_demo.BOX_OCTAVE,
                       "range": list(release_demo.BOX_RANGE),
                       "margin": release_demo.BOX_MARGIN,
                       "note": "for a box: the box height at S / (margin * range) px, "
                               "octave scales per octave (368 px: 256, 287, 322, 361)"},
        "decoding": decoding.RELEASE,
        "decoding_note": "each scale's last-stage maps upsampled 8x (imresize, bicubic), put "
                         "back where the box lies in the resized image (zero elsewhere), "
                         "resized to the original image, averaged over the scales; a joint "
                         "is the pixel of its map's maximum on the image (1-based)",
        "joints": joints,
        "joints_to_mpii": to_mpii if None not in to_mpii else None,
        "derived_joints": {k: list(v) for k, v in decoding.DERIVED_JOINTS.items()},
    }
