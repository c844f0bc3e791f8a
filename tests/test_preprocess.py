"""Crop matrix, augmentation and the three warps (NumPy reference, PIL, TF) agree."""

import subprocess
import sys

import numpy as np
import pytest

from cpm_nb.core import skeleton
from cpm_nb.data import preprocess
from cpm_nb.data.preprocess import Augmentation


def test_crop_matrix_centres_person_and_follows_scale_convention():
    center, scale, size = (400.0, 300.0), 2.0, 128
    m = preprocess.crop_matrix(center, scale, size)
    half = (size - 1) / 2
    assert np.allclose(preprocess.apply_matrix(m, center), [half, half])
    # 200*scale original px (person height) span PERSON_FRACTION of the crop side
    top, bottom = (400.0, 300.0 - 100 * scale), (400.0, 300.0 + 100 * scale)
    span = np.diff(preprocess.apply_matrix(m, [top, bottom])[:, 1])[0]
    assert span == pytest.approx(preprocess.PERSON_FRACTION * size)
    assert preprocess.PERSON_FRACTION == pytest.approx(1.171 * 200 / 368)
    # the -1 shift: original 1-based pixel (1, 1) is one original pixel from (2, 2)
    a, b = preprocess.apply_matrix(m, [(1.0, 1.0), (2.0, 2.0)])
    assert np.allclose(b - a, preprocess.pixel_scale(scale, size))


def test_rotation_is_counter_clockwise_on_screen_and_flip_mirrors():
    size = 101
    half = (size - 1) / 2
    above = (50.0, 40.0)  # a point above the centre (50, 50), 1-based original
    m = preprocess.crop_matrix((50, 50), 1.0, size, rotation=90)
    x, y = preprocess.apply_matrix(m, above)
    assert x < half - 1 and y == pytest.approx(half)  # moved to the left
    mf = preprocess.crop_matrix((50, 50), 1.0, size, flip=True)
    m0 = preprocess.crop_matrix((50, 50), 1.0, size)
    right = (60.0, 50.0)
    assert preprocess.apply_matrix(mf, right)[0] == pytest.approx(
        size - 1 - preprocess.apply_matrix(m0, right)[0])


def test_inverse_maps_crop_back_to_original():
    rng = np.random.default_rng(1)
    for _ in range(10):
        aug = preprocess.sample_augmentation(rng)
        m = preprocess.crop_matrix(rng.uniform(1, 900, 2), rng.uniform(0.5, 5), 368,
                                   aug.rotation, aug.scale_factor, aug.flip)
        pts = rng.uniform(0, 1000, (16, 2))
        back = preprocess.apply_matrix(np.linalg.inv(m), preprocess.apply_matrix(m, pts))
        assert np.allclose(back, pts)


@pytest.mark.parametrize("scale", [0.0, -1.5, float("nan")])
def test_bad_scale_is_a_clear_error(scale):
    with pytest.raises(ValueError, match="scale must be a positive"):
        preprocess.crop_matrix((10, 10), scale, 64)


def test_augment_matrix_equals_composition_for_any_person():
    rng = np.random.default_rng(2)
    for size in (64, 128, 368):
        for _ in range(5):
            aug = preprocess.sample_augmentation(rng)
            c, s = rng.uniform(1, 1000, 2), rng.uniform(0.3, 6)
            want = preprocess.crop_matrix(c, s, size, aug.rotation, aug.scale_factor,
                                          aug.flip) @ np.linalg.inv(
                preprocess.context_matrix(c, s, size))
            assert np.allclose(preprocess.augment_matrix(size, aug), want, atol=1e-9)


def test_context_crop_covers_every_augmentation():
    size = 128
    ctx = preprocess.context_size(size)
    corners = np.array([[0, 0], [size - 1, 0], [0, size - 1], [size - 1, size - 1]], float)
    worst = Augmentation(rotation=40, scale_factor=0.7)
    inside = preprocess.apply_matrix(np.linalg.inv(preprocess.augment_matrix(size, worst)),
                                     corners)
    assert np.all(inside >= -0.02 * ctx) and np.all(inside <= 1.02 * ctx)


def test_flip_swaps_left_and_right_joints():
    joints = np.arange(32, dtype=float).reshape(16, 2) + 10
    vis = np.full(16, 2)
    vis[skeleton.JOINT["l_wrist"]] = 0  # missing stays missing, under its new name
    m = preprocess.crop_matrix((20, 20), 1.0, 64, flip=True)
    out, v = preprocess.transform_joints(joints, vis, m, flip=True)
    plain, _ = preprocess.transform_joints(joints, np.full(16, 2), m, flip=False)
    rw, lw = skeleton.JOINT["r_wrist"], skeleton.JOINT["l_wrist"]
    assert np.allclose(out[lw], plain[rw]) and v[lw] == 2
    assert v[rw] == 0 and np.all(out[rw] == 0)
    assert np.allclose(out[skeleton.JOINT["pelvis"]], plain[skeleton.JOINT["pelvis"]])


def _dot_image(h, w, point0):
    """An image that is black but for a bright 3x3 blob at 0-based ``point0``."""
    img = np.zeros((h, w, 3), np.uint8)
    x, y = int(round(point0[0])), int(round(point0[1]))
    img[y - 1:y + 2, x - 1:x + 2] = 255
    img[y, x] = [255, 255, 255]
    return img


@pytest.mark.parametrize("aug", [Augmentation(), Augmentation(30, 1.2, True),
                                 Augmentation(-40, 0.7, False)])
def test_joints_move_with_pixels_numpy_reference(aug):
    joint1 = np.array([130.0, 90.0])  # 1-based original
    img = _dot_image(200, 240, joint1 - 1)
    joints = np.zeros((16, 2))
    joints[skeleton.JOINT["r_wrist"]] = joint1
    vis = np.zeros(16, int)
    vis[skeleton.JOINT["r_wrist"]] = 2
    crop, j, v, _ = preprocess.crop_person_numpy(img, joints, vis, (120, 100), 0.8, 96, aug)
    k = skeleton.JOINT["l_wrist" if aug.flip else "r_wrist"]
    assert v[k] == 2
    y, x = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    assert np.hypot(x - j[k, 0], y - j[k, 1]) <= 1.0


def test_pil_warp_matches_numpy_reference():
    from PIL import Image

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(img).resize((240, 180), Image.BILINEAR))  # smooth
    m = preprocess.crop_matrix((110, 95), 0.6, 64, rotation=17, scale_factor=1.1)
    ref = preprocess.warp_numpy(img, m, 64).astype(int)
    pil = np.asarray(preprocess.warp_pil(Image.fromarray(img), m, 64)).astype(int)
    assert np.abs(ref - pil).mean() < 1.0
    assert np.percentile(np.abs(ref - pil), 99) <= 3


def test_tf_matrices_and_warp_match_numpy():
    tf = pytest.importorskip("tensorflow")
    size = 64
    augs = [Augmentation(0, 1, False), Augmentation(25, 0.8, True), Augmentation(-40, 1.3, False)]
    fwd, inv = preprocess.tf_augment_matrices([a.rotation for a in augs],
                                              [a.scale_factor for a in augs],
                                              [a.flip for a in augs], size)
    rng = np.random.default_rng(4)
    ctx = preprocess.context_size(size)
    from PIL import Image

    small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    images = np.stack([np.asarray(Image.fromarray(small).resize((ctx, ctx), Image.BILINEAR))
                       for _ in augs])
    out = preprocess.tf_warp(tf.constant(images), inv, size).numpy().astype(int)
    joints = rng.uniform(0, ctx, (len(augs), 16, 2))
    vis = np.full((len(augs), 16), 2)
    tj, tv = preprocess.tf_transform_joints(joints, vis, fwd, [a.flip for a in augs])
    for k, aug in enumerate(augs):
        a = preprocess.augment_matrix(size, aug)
        assert np.allclose(fwd[k].numpy(), a, atol=1e-4)
        assert np.allclose(inv[k].numpy(), np.linalg.inv(a), atol=1e-4)
        ref = preprocess.warp_numpy(images[k], a, size, source_one_based=False).astype(int)
        assert np.abs(ref - out[k]).max() <= 1
        rj, rv = preprocess.transform_joints(joints[k], vis[k], a, aug.flip)
        assert np.allclose(tj[k].numpy(), rj, atol=1e-3) and np.array_equal(tv[k], rv)


def test_import_does_not_load_tensorflow():
    code = "import cpm_nb.data.preprocess, cpm_nb.data.mpii, cpm_nb.data.synthetic, cpm_nb.data.pipeline, " \
           "cpm_nb.data.prepare, sys; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_tf_source_window_warp_equals_full_warp():
    pytest.importorskip("tensorflow")
    size = 48
    ctx = preprocess.context_size(size)
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (ctx, ctx, 3), dtype=np.uint8)
    for aug in (Augmentation(0, 1.3, False), Augmentation(33, 0.75, True),
                Augmentation(-40, 0.7, False)):
        inv = np.linalg.inv(preprocess.augment_matrix(size, aug)).astype(np.float32)
        y0, x0, h, w = (int(v) for v in preprocess.tf_source_window(inv, size, ctx))
        assert 0 <= y0 and 0 <= x0 and y0 + h <= ctx and x0 + w <= ctx
        shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float32)
        full = preprocess.tf_warp(image[None], inv[None], size).numpy()
        part = preprocess.tf_warp(image[None, y0:y0 + h, x0:x0 + w], (shift @ inv)[None],
                                  size).numpy()
        diff = np.abs(full.astype(int) - part.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.05  # float rounding only
        if aug.scale_factor > 1:
            assert h * w < 0.5 * ctx * ctx  # zooming in decodes much less
