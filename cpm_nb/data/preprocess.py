"""Person-centric crops and the CPM augmentation, in NumPy (reference) and TensorFlow.

Coordinates
-----------
Annotation records keep the MPII file's convention: **1-based** pixel
coordinates (MATLAB; the centre of the top-left pixel is (1, 1)).  Crop
("input") coordinates are **0-based pixel centres**: pixel (row i, col j) of a
crop has its centre at (x=j, y=i).  Every transform here is a 3x3 float64
affine matrix ``M`` mapping original 1-based ``(x, y, 1)`` to crop 0-based
``(x, y, 1)`` -- the ``-1`` shift is inside ``M`` -- and ``inv(M)`` maps a
prediction in the crop back to the original image.

The crop scale convention
-------------------------
MPII gives each person a rough centre ``objpos`` and a ``scale`` such that
``200 * scale`` pixels is about the person's height (for the validation people,
exactly 4.8 head-box diagonals).  CPM's released training code
(``cpm_data_transformer``, ``target_dist = 1.171`` at ``crop_size = 368``)
resizes each image so that ``200 * scale`` original pixels become
``1.171 * 200 = 234`` crop pixels, i.e. the person spans about 0.64 of the crop
side.  We keep that *fraction* at every input size::

    pixels per original pixel   s = input_size * PERSON_FRACTION * scale_factor / (200 * scale)
    PERSON_FRACTION             = 1.171 * 200 / 368  (= 0.636)

so a 128-px crop shows the person about 81 px tall, a 368-px crop 234 px.  The
crop is centred on ``objpos``: its centre ``((S-1)/2, (S-1)/2)`` is ``objpos``.

Augmentation (the CPM paper, Sec. 4 / the released data layer)
--------------------------------------------------------------
* ``scale_factor`` uniform in [0.7, 1.3] (multiplies ``s``: > 1 zooms in);
* ``rotation`` uniform in [-40, 40] degrees, positive = counter-clockwise on
  screen (the image content turns left);
* a horizontal ``flip`` with probability 0.5, which also swaps the left and right
  joints (:func:`cpm_nb.core.skeleton.flip_permutation`) so that a joint keeps the
  person's own side.
Pixels falling outside the source image are filled with grey (128), as in CPM.

Context crops (what the TFRecords store)
----------------------------------------
Decoding a full 1280x720 MPII photo per example is what makes naive loaders
slow.  ``cpm-nb prepare`` therefore stores, per person, an unaugmented *context
crop*: the same pixel density as the final crop, centred on ``objpos``, but
``CONTEXT = 2`` times wider.  That covers every augmentation exactly (zooming
out to 0.7 and rotating by 40 degrees needs 1/0.7 * (cos 40 + sin 40) = 2.01
crop widths; only far corners can differ).  The tf.data pipeline then applies
the augmentation as one warp from the context crop: ``A = crop_matrix(...aug)
@ inv(context_matrix(...))``, which does not depend on the person
(:func:`augment_matrix`).

``import cpm_nb.data.preprocess`` does not import TensorFlow; the ``tf_*`` functions
import it on first use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cpm_nb.core import skeleton
from cpm_nb.core.runtime import import_tensorflow

# CPM: 200*scale original pixels -> target_dist * 200 crop pixels at crop size 368.
CPM_TARGET_DIST = 1.171
CPM_CROP_SIZE = 368
PERSON_FRACTION = CPM_TARGET_DIST * 200.0 / CPM_CROP_SIZE

# The paper's augmentation ranges.
SCALE_RANGE = (0.7, 1.3)
MAX_ROTATION = 40.0
FLIP_PROB = 0.5

# Stored context crop side = CONTEXT * input_size (covers every augmentation).
CONTEXT = 2.0
FILL_VALUE = 128

FLIP_PERM = np.array(skeleton.flip_permutation())


@dataclass(frozen=True)
class Augmentation:
    """One draw of the CPM augmentation (the identity by default)."""

    rotation: float = 0.0  # degrees, counter-clockwise on screen
    scale_factor: float = 1.0  # > 1 zooms in
    flip: bool = False


def sample_augmentation(rng: np.random.Generator, scale_range=SCALE_RANGE,
                        max_rotation: float = MAX_ROTATION,
                        flip_prob: float = FLIP_PROB) -> Augmentation:
    """Draw scale, rotation and flip as in CPM (uniform, uniform, Bernoulli)."""
    return Augmentation(
        rotation=float(rng.uniform(-max_rotation, max_rotation)),
        scale_factor=float(rng.uniform(*scale_range)),
        flip=bool(rng.random() < flip_prob),
    )


def pixel_scale(scale: float, input_size: int, scale_factor: float = 1.0) -> float:
    """Crop pixels per original pixel for a person of MPII ``scale`` (see module doc)."""
    return input_size * PERSON_FRACTION * scale_factor / (200.0 * scale)


def crop_matrix(center, scale: float, input_size: int, rotation: float = 0.0,
                scale_factor: float = 1.0, flip: bool = False) -> np.ndarray:
    """The 3x3 affine matrix from original 1-based pixels to a 0-based ``input_size`` crop.

    ``center`` is ``objpos`` (1-based, x then y), ``scale`` the MPII person scale
    (``200*scale`` px ~ person height).  The person is centred, ``200*scale``
    original pixels span ``PERSON_FRACTION * scale_factor`` of the crop side, the
    content is turned ``rotation`` degrees counter-clockwise and mirrored when
    ``flip``.  Map crop points back with ``np.linalg.inv(M)``.
    """
    scale = float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"person scale must be a positive number, got {scale}")
    cx, cy = (float(v) - 1.0 for v in center)  # 1-based -> 0-based
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise ValueError(f"person centre must be finite, got {tuple(center)}")
    s = pixel_scale(scale, input_size, scale_factor)
    t = math.radians(rotation)
    c, si = math.cos(t), math.sin(t)
    half = (input_size - 1) / 2.0
    to_origin = np.array([[1, 0, -1 - cx], [0, 1, -1 - cy], [0, 0, 1]], dtype=np.float64)
    # y points down, so this turns the content counter-clockwise on screen.
    rotate = np.array([[s * c, s * si, 0], [-s * si, s * c, 0], [0, 0, 1]], dtype=np.float64)
    mirror = np.diag([-1.0 if flip else 1.0, 1.0, 1.0])
    to_crop = np.array([[1, 0, half], [0, 1, half], [0, 0, 1]], dtype=np.float64)
    return to_crop @ mirror @ rotate @ to_origin


def context_size(input_size: int, context: float = CONTEXT) -> int:
    """Side of the stored context crop for an ``input_size`` crop."""
    return int(round(context * input_size))


def context_matrix(center, scale: float, input_size: int,
                   context: float = CONTEXT) -> np.ndarray:
    """Original 1-based -> context-crop 0-based: same density as the crop, ``context``x wider."""
    size = context_size(input_size, context)
    return crop_matrix(center, scale, size, scale_factor=input_size / size)


def augment_matrix(input_size: int, aug: Augmentation = Augmentation(),
                   context: float = CONTEXT) -> np.ndarray:
    """Context-crop 0-based -> augmented crop 0-based (the same for every person).

    Equals ``crop_matrix(c, s, S, aug...) @ inv(context_matrix(c, s, S))`` for any
    centre ``c`` and scale ``s``.
    """
    size = context_size(input_size, context)
    t = math.radians(aug.rotation)
    f = aug.scale_factor
    c, si = math.cos(t), math.sin(t)
    h_in, h_out = (size - 1) / 2.0, (input_size - 1) / 2.0
    a = np.array([[f * c, f * si, 0], [-f * si, f * c, 0], [0, 0, 1]], dtype=np.float64)
    if aug.flip:
        a = np.diag([-1.0, 1.0, 1.0]) @ a
    return (np.array([[1, 0, h_out], [0, 1, h_out], [0, 0, 1.0]]) @ a
            @ np.array([[1, 0, -h_in], [0, 1, -h_in], [0, 0, 1.0]]))


def apply_matrix(matrix: np.ndarray, points) -> np.ndarray:
    """Apply a 3x3 affine matrix to (..., 2) points (x, y)."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def transform_joints(joints, visibility, matrix: np.ndarray, flip: bool = False):
    """Joints (16, 2) and visibility through ``matrix``; a flip also swaps left/right.

    Missing joints (visibility 0) stay at (0, 0) so that nothing downstream can
    mistake them for a location.
    """
    visibility = np.asarray(visibility)
    out = apply_matrix(matrix, joints)
    if flip:
        out, visibility = out[FLIP_PERM], visibility[FLIP_PERM]
    out = np.where(visibility[:, None] > 0, out, 0.0)
    return out.astype(np.float32), visibility.astype(np.int32)


# --- NumPy / SciPy reference ------------------------------------------------------


def warp_numpy(image: np.ndarray, matrix: np.ndarray, size: int, fill: int = FILL_VALUE,
               source_one_based: bool = True, order: int = 1) -> np.ndarray:
    """Resample ``image`` (H, W, C uint8) into a ``size`` x ``size`` crop with ``matrix``.

    The reference implementation (``scipy.ndimage.affine_transform``, bilinear):
    every output pixel centre is mapped back with ``inv(matrix)``.  ``matrix``
    maps source coordinates -- 1-based for an original image, 0-based for a
    context crop (``source_one_based=False``) -- to 0-based crop coordinates.
    """
    from scipy import ndimage

    inv = np.linalg.inv(matrix)
    if source_one_based:
        inv = np.array([[1, 0, -1], [0, 1, -1], [0, 0, 1.0]]) @ inv  # -> 0-based source
    # (row, col) = (y, x): swap the axes of the 2x2 part and of the offset.
    rc = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
    offset = np.array([inv[1, 2], inv[0, 2]])
    channels = [
        ndimage.affine_transform(image[..., k].astype(np.float32), rc, offset=offset,
                                 output_shape=(size, size), order=order, mode="constant",
                                 cval=float(fill))
        for k in range(image.shape[-1])
    ]
    return np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


def crop_person_numpy(image: np.ndarray, joints, visibility, center, scale: float,
                      input_size: int, aug: Augmentation = Augmentation()):
    """Reference person crop + augmentation straight from the original image.

    Returns ``(crop uint8 [S,S,3], joints float32 [16,2] 0-based crop px,
    visibility int32 [16], M)`` where ``M`` is the crop matrix.
    """
    m = crop_matrix(center, scale, input_size, aug.rotation, aug.scale_factor, aug.flip)
    crop = warp_numpy(image, m, input_size)
    j, v = transform_joints(joints, visibility, m, aug.flip)
    return crop, j, v, m


# --- PIL (fast, used by `cpm-nb prepare` for the context crops) --------------------


def warp_pil(image, matrix: np.ndarray, size: int, fill: int = FILL_VALUE,
             source_one_based: bool = True):
    """Like :func:`warp_numpy` with PIL's C resampler (bilinear); returns a PIL image.

    PIL puts pixel centres at +0.5, so the inverse map is shifted on both sides.
    """
    from PIL import Image

    inv = np.linalg.inv(matrix)
    if source_one_based:
        inv = np.array([[1, 0, -1], [0, 1, -1], [0, 0, 1.0]]) @ inv
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    pil = shift @ inv @ unshift
    data = tuple(pil[:2].ravel())
    return image.transform((size, size), Image.Transform.AFFINE, data,
                           resample=Image.Resampling.BILINEAR,
                           fillcolor=(fill,) * len(image.getbands()))


# --- TensorFlow (the tf.data pipeline) ---------------------------------------------


def tf_augment_matrices(rotation, scale_factor, flip, input_size: int,
                        context: float = CONTEXT):
    """Batched :func:`augment_matrix` in TF: ``[B]`` params -> ``[B, 3, 3]`` float32.

    Also returns the inverse (crop -> context), which is what the warp samples with.
    """
    tf = import_tensorflow()

    size = context_size(input_size, context)
    t = tf.cast(rotation, tf.float32) * (math.pi / 180.0)
    f = tf.cast(scale_factor, tf.float32)
    c, s = tf.cos(t), tf.sin(t)
    m = tf.where(tf.cast(flip, tf.bool), -1.0, 1.0)
    h_in, h_out = (size - 1) / 2.0, (input_size - 1) / 2.0
    zero, one = tf.zeros_like(f), tf.ones_like(f)
    # forward: x' = m*f*(c*dx + s*dy) + h_out, y' = f*(-s*dx + c*dy) + h_out, d = p - h_in
    a00, a01, a10, a11 = m * f * c, m * f * s, -f * s, f * c
    fwd = tf.stack([
        tf.stack([a00, a01, h_out - (a00 + a01) * h_in], -1),
        tf.stack([a10, a11, h_out - (a10 + a11) * h_in], -1),
        tf.stack([zero, zero, one], -1),
    ], -2)
    # inverse: p = h_in + (1/f) R(-t) diag(m, 1) (q - h_out)
    b00, b01, b10, b11 = m * c / f, -s / f, m * s / f, c / f
    inv = tf.stack([
        tf.stack([b00, b01, h_in - (b00 + b01) * h_out], -1),
        tf.stack([b10, b11, h_in - (b10 + b11) * h_out], -1),
        tf.stack([zero, zero, one], -1),
    ], -2)
    return fwd, inv


def tf_warp(images, inverse, size: int, fill: int = FILL_VALUE):
    """Warp ``[B,H,W,3]`` images with ``[B,3,3]`` inverse (output -> input) matrices.

    TF's projective transform samples output pixel (x, y) at ``inverse @ (x, y, 1)``
    with pixel centres at integers: the same convention as ours.  Bilinear, grey fill,
    computed on uint8 directly (no float copy of the source).  Returns uint8
    ``[B, size, size, 3]``.
    """
    tf = import_tensorflow()

    flat = tf.reshape(inverse, [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.uint8), transforms=tf.cast(flat, tf.float32),
        output_shape=tf.constant([size, size], tf.int32),
        fill_value=tf.constant(float(fill), tf.float32),
        interpolation="BILINEAR", fill_mode="CONSTANT")


def tf_source_window(inverse, size: int, source_size: int, margin: int = 2):
    """The part of a ``source_size`` square source that a ``size`` crop samples.

    ``inverse`` [3,3] maps crop -> source.  Returns ``(y0, x0, h, w)`` int32 (the
    bounding box of the crop's corners plus ``margin`` px for bilinear neighbours,
    clipped to the source), so that only that window needs decoding.
    """
    tf = import_tensorflow()

    c = float(size - 1)
    corners = tf.constant([[0.0, 0.0, 1.0], [c, 0.0, 1.0], [0.0, c, 1.0], [c, c, 1.0]])
    pts = tf.linalg.matmul(corners, tf.cast(inverse, tf.float32), transpose_b=True)[:, :2]
    lo = tf.cast(tf.floor(tf.reduce_min(pts, 0)), tf.int32) - margin
    hi = tf.cast(tf.math.ceil(tf.reduce_max(pts, 0)), tf.int32) + margin
    lo = tf.clip_by_value(lo, 0, source_size - 1)
    hi = tf.clip_by_value(hi, 0, source_size - 1)
    hi = tf.maximum(hi, lo)
    return lo[1], lo[0], hi[1] - lo[1] + 1, hi[0] - lo[0] + 1


def tf_transform_joints(joints, visibility, forward, flip):
    """Batched :func:`transform_joints`: ``[B,16,2]``, ``[B,16]``, ``[B,3,3]``, ``[B]``."""
    tf = import_tensorflow()

    joints = tf.cast(joints, tf.float32)
    out = tf.einsum("bij,bkj->bki", forward[:, :2, :2], joints) + forward[:, None, :2, 2]
    perm = tf.constant(FLIP_PERM, tf.int32)
    flip = tf.cast(flip, tf.bool)
    out = tf.where(flip[:, None, None], tf.gather(out, perm, axis=1), out)
    visibility = tf.cast(visibility, tf.int32)
    visibility = tf.where(flip[:, None], tf.gather(visibility, perm, axis=1), visibility)
    out = tf.where(visibility[..., None] > 0, out, 0.0)
    return out, visibility


def tf_sample_augmentation(seed, batch: int, scale_range=SCALE_RANGE,
                           max_rotation: float = MAX_ROTATION, flip_prob: float = FLIP_PROB):
    """Stateless draws of ``batch`` augmentations from a ``[2]`` int seed tensor."""
    tf = import_tensorflow()

    u = tf.random.stateless_uniform([3, batch], seed=seed, dtype=tf.float32)
    rotation = (2.0 * u[0] - 1.0) * max_rotation
    scale_factor = scale_range[0] + u[1] * (scale_range[1] - scale_range[0])
    flip = u[2] < flip_prob
    return rotation, scale_factor, flip
