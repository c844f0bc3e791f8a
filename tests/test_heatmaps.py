"""Gaussian confidence maps: grid convention, numpy vs keras.ops, decoding, inverse crop."""

import os
import subprocess
import sys

import numpy as np
import pytest

from cpm_nb.core.config import OUTPUT_STRIDE
from cpm_nb.model import heatmaps


def _random_batch(seed=0, batch=4, joints=16, input_size=64):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(-10, input_size + 10, (batch, joints, 2)).astype(np.float32)
    vis = rng.integers(0, 3, (batch, joints)).astype(np.int32)
    xy[vis == 0] = np.nan  # missing joints may carry garbage coordinates
    return xy, vis


def test_output_grid_convention_cell_centre_is_c_times_8_plus_3_5():
    np.testing.assert_array_equal(heatmaps.cell_centres(4), [3.5, 11.5, 19.5, 27.5])
    assert OUTPUT_STRIDE == 8


@pytest.mark.parametrize("render", ["numpy", "keras"])
def test_joint_on_a_cell_centre_peaks_there_with_symmetric_neighbours(render):
    sigma, size = 7.0, 368
    r, c = 20, 13
    joints = np.array([[[c * 8 + 3.5, r * 8 + 3.5]]], np.float32)
    vis = np.array([[2]], np.int32)
    if render == "numpy":
        maps = heatmaps.render_numpy(joints, vis, size, sigma)
    else:
        maps = np.asarray(heatmaps.render(joints, vis, size, sigma))
    m = maps[0, :, :, 0]
    assert m.shape == (46, 46)
    assert np.unravel_index(np.argmax(m), m.shape) == (r, c)
    assert m[r, c] == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_allclose(m[r, c - 1], m[r, c + 1], atol=1e-7)
    np.testing.assert_allclose(m[r - 1, c], m[r + 1, c], atol=1e-7)
    np.testing.assert_allclose(m[r, c - 1], m[r - 1, c], atol=1e-7)
    np.testing.assert_allclose(m[r, c + 1], np.exp(-64 / (2 * sigma**2)), rtol=1e-6)
    np.testing.assert_allclose(m[r + 1, c + 1], np.exp(-128 / (2 * sigma**2)), rtol=1e-6)


def test_shape_dtype_missing_and_background():
    xy, vis = _random_batch()
    maps = heatmaps.render_numpy(xy, vis, 64, 3.0, background=True)
    assert maps.shape == (4, 8, 8, 17) and maps.dtype == np.float32
    assert np.all(np.isfinite(maps))
    joint_maps = maps[..., :16]
    per_joint = joint_maps.transpose(0, 3, 1, 2)  # [B, J, M, M]
    assert np.all(per_joint[vis == 0] == 0)  # missing -> all-zero map
    assert np.all(per_joint[vis > 0].max(axis=(1, 2)) > 0)
    np.testing.assert_allclose(maps[..., 16], 1 - joint_maps.max(axis=-1), atol=1e-7)
    assert maps.min() >= 0 and maps.max() <= 1
    no_bg = heatmaps.render_numpy(xy, vis, 64, 3.0)
    np.testing.assert_array_equal(no_bg, joint_maps)


def test_map_is_the_gaussian_formula_at_cell_centres():
    x, y, sigma = 17.3, 40.9, 5.0
    maps = heatmaps.render_numpy([[x, y]], [1], 64, sigma)  # unbatched
    assert maps.shape == (8, 8, 1)
    cx = heatmaps.cell_centres(8)
    expect = np.exp(-((cx[None, :] - x) ** 2 + (cx[:, None] - y) ** 2) / (2 * sigma**2))
    np.testing.assert_allclose(maps[..., 0], expect, rtol=1e-6)


def test_sigma_is_always_given_never_read_from_the_active_profile():
    for render in (heatmaps.render_numpy, heatmaps.render_numpy_loop, heatmaps.render):
        with pytest.raises(TypeError, match="sigma"):
            render([[10.0, 20.0]], [2], 64)
    with pytest.raises(TypeError, match="sigma"):
        heatmaps.compiled_render(64)


@pytest.mark.parametrize("background", [False, True])
@pytest.mark.parametrize("size,sigma", [(64, 3.0), (368, 7.0)])
def test_keras_ops_equals_numpy_reference(background, size, sigma):
    xy, vis = _random_batch(seed=size, input_size=size)
    ref = heatmaps.render_numpy(xy, vis, size, sigma, background=background)
    got = np.asarray(heatmaps.render(xy, vis, size, sigma, background=background))
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_compiled_and_unbatched_keras_versions_agree():
    xy, vis = _random_batch(seed=3, batch=2)
    fn = heatmaps.compiled_render(64, 3.0, background=True)
    ref = heatmaps.render_numpy(xy, vis, 64, 3.0, background=True)
    np.testing.assert_allclose(np.asarray(fn(xy, vis)), ref, atol=1e-5)
    single = np.asarray(heatmaps.render(xy[1], vis[1], 64, 3.0, background=True))
    np.testing.assert_allclose(single, ref[1], atol=1e-5)


def test_keras_version_runs_inside_tf_data():
    import tensorflow as tf

    xy, vis = _random_batch(seed=5, batch=6)
    ds = tf.data.Dataset.from_tensor_slices((xy, vis)).batch(3).map(
        lambda j, v: heatmaps.render(j, v, 64, 3.0))
    got = np.concatenate([m.numpy() for m in ds])
    np.testing.assert_allclose(got, heatmaps.render_numpy(xy, vis, 64, 3.0), atol=1e-5)


def test_keras_version_is_backend_agnostic_under_jax():
    pytest.importorskip("jax")
    code = (
        "import numpy as np, keras; from cpm_nb.model import heatmaps\n"
        "assert keras.config.backend() == 'jax'\n"
        "rng = np.random.default_rng(1); xy = rng.uniform(0, 63, (3, 16, 2)).astype('float32')\n"
        "vis = rng.integers(0, 3, (3, 16)).astype('int32')\n"
        "ref = heatmaps.render_numpy(xy, vis, 64, 3.0, background=True)\n"
        "got = np.asarray(heatmaps.compiled_render(64, 3.0, background=True)(xy, vis))\n"
        "assert np.abs(got - ref).max() < 1e-5, np.abs(got - ref).max()\n"
        "print('ok')\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_no_tf_calls_in_the_in_graph_function():
    import inspect

    source = inspect.getsource(heatmaps.render).replace(heatmaps.render.__doc__, "")
    assert "tf." not in source and "tensorflow" not in source


def test_import_does_not_load_tensorflow():
    code = "import sys, cpm_nb.model.heatmaps; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_loop_baseline_equals_reference():
    xy, vis = _random_batch(seed=7)
    np.testing.assert_allclose(heatmaps.render_numpy_loop(xy, vis, 64, 3.0),
                               heatmaps.render_numpy(xy, vis, 64, 3.0), atol=1e-6)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="multiple of the stride"):
        heatmaps.render_numpy(np.zeros((1, 16, 2)), np.ones((1, 16)), 60, 3.0)
    with pytest.raises(ValueError, match="visibility shape"):
        heatmaps.render_numpy(np.zeros((1, 16, 2)), np.ones((1, 15)), 64, 3.0)
    with pytest.raises(ValueError, match="refine"):
        heatmaps.decode(np.zeros((8, 8, 1)), refine="cubic")


# --------------------------------------------------------------------------- decoding


def test_decode_cell_centres_exactly_and_reports_confidence():
    rng = np.random.default_rng(0)
    cells = rng.integers(0, 46, (5, 16, 2))
    joints = cells * 8 + 3.5
    maps = heatmaps.render_numpy(joints, np.full((5, 16), 2), 368, 7.0)
    maps[:, :, :, 3] *= 0.5  # a less confident joint
    for refine in heatmaps.REFINE_METHODS:
        got, conf = heatmaps.decode(maps, refine=refine)
        np.testing.assert_allclose(got, joints, atol=1e-3)
        np.testing.assert_allclose(conf[:, 3], 0.5, atol=1e-6)
        np.testing.assert_allclose(np.delete(conf, 3, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("sigma", [3.0, 7.0])
def test_round_trip_error_is_well_below_one_cell(sigma):
    """Random joints -> maps -> decode: error in input px (stride 8 = one cell)."""
    errs = {m: heatmaps.round_trip_errors(4000, 368, sigma, refine=m, seed=1)
            for m in heatmaps.REFINE_METHODS}
    interior = {m: heatmaps.round_trip_errors(4000, 368, sigma, refine=m, seed=1, margin=8)
                for m in heatmaps.REFINE_METHODS}
    # argmax alone: at most half a cell diagonal, about 0.38 cell on average
    assert errs["none"].max() <= 4 * np.sqrt(2) + 1e-6
    assert 2.7 < errs["none"].mean() < 3.4
    # every refinement beats argmax on average; a Gaussian fit is exact away from the border
    for m in ("quarter", "quadratic", "gaussian"):
        assert errs[m].mean() < 0.7 * errs["none"].mean()
        assert interior[m].max() < 3.0
    assert interior["gaussian"].max() < 0.01
    assert errs["gaussian"].mean() < 0.3
    # on the border cells there is no neighbour on one side: argmax error there
    assert errs["gaussian"].max() <= 4 * np.sqrt(2) + 1e-6


def test_decode_unbatched_and_two_peaks_picks_the_stronger():
    maps = heatmaps.render_numpy([[10.0, 10.0], [50.0, 40.0]], [2, 2], 64, 3.0)
    both = np.maximum(maps[..., :1], 0.6 * maps[..., 1:])
    got, conf = heatmaps.decode(both)
    assert got.shape == (1, 2) and conf.shape == (1,)
    np.testing.assert_allclose(got[0], [10.0, 10.0], atol=0.05)


# --------------------------------------------------------------------------- inverse crop


def _crop_matrix(scale, angle_deg, centre, size):
    """Original 1-based -> crop 0-based: shift by -1, rotate+scale about ``centre``."""
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    to_zero = np.array([[1, 0, -1.0], [0, 1, -1.0], [0, 0, 1]])
    to_centre = np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1]])
    sc = np.diag([scale, scale, 1.0])
    to_crop = np.array([[1, 0, (size - 1) / 2], [0, 1, (size - 1) / 2], [0, 0, 1]])
    return to_crop @ sc @ rot @ to_centre @ to_zero


def test_to_original_inverts_the_crop_matrix():
    rng = np.random.default_rng(0)
    original = rng.uniform(1, 800, (16, 2))  # 1-based original pixels
    M = _crop_matrix(0.4, 20.0, (400.0, 300.0), 368)
    crop = (np.c_[original, np.ones(16)] @ M.T)[:, :2]
    np.testing.assert_allclose(heatmaps.to_original(crop, M), original, atol=1e-9)
    # batched, one matrix per example
    Ms = np.stack([M, _crop_matrix(1.3, -10.0, (100.0, 90.0), 64)])
    crops = np.stack([crop, (np.c_[original, np.ones(16)] @ Ms[1].T)[:, :2]])
    np.testing.assert_allclose(heatmaps.to_original(crops, Ms), np.stack([original] * 2),
                               atol=1e-9)


def test_to_original_pure_shift_gives_one_based_pixels():
    M = np.array([[1, 0, -1.0], [0, 1, -1.0], [0, 0, 1]])  # identity crop, 1-based -> 0-based
    np.testing.assert_allclose(heatmaps.to_original([[0.0, 0.0]], M), [[1.0, 1.0]])


def test_encode_decode_to_original_end_to_end():
    original = np.array([[[420.0, 250.0], [380.5, 330.25]]])
    M = _crop_matrix(368 / 500, 0.0, (400.0, 300.0), 368)
    crop = (np.c_[original[0], np.ones(2)] @ M.T)[None, :, :2]
    maps = heatmaps.render_numpy(crop, np.full((1, 2), 2), 368, 7.0)
    decoded, _ = heatmaps.decode(maps)
    np.testing.assert_allclose(heatmaps.to_original(decoded, M), original, atol=0.02)


def test_rectangular_inputs_give_rectangular_maps():
    xy, vis = _random_batch(seed=11, batch=2)
    ref = heatmaps.render_numpy(xy, vis, (48, 80), 3.0, background=True)
    assert ref.shape == (2, 6, 10, 17)
    got = np.asarray(heatmaps.render(xy, vis, (48, 80), 3.0, background=True))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_allclose(heatmaps.render_numpy_loop(xy, vis, (48, 80), 3.0),
                               ref[..., :16], atol=1e-6)
    # the decoded peak of an isolated joint comes back on the right axis
    one = heatmaps.render_numpy([[70.0, 20.0]], [2], (48, 80), 4.0)
    np.testing.assert_allclose(heatmaps.decode(one)[0], [[70.0, 20.0]], atol=0.01)


def test_round_trip_through_the_data_pipeline_crop_matrix():
    from cpm_nb.data import preprocess

    rng = np.random.default_rng(4)
    centre, scale = (612.0, 340.0), 2.1  # 1-based objpos, MPII scale
    original = np.array([centre]) + rng.uniform(-150, 150, (16, 2))
    for rotation, flip in [(0.0, False), (25.0, False), (-10.0, True)]:
        M = preprocess.crop_matrix(centre, scale, 368, rotation=rotation, flip=flip)
        crop = preprocess.apply_matrix(M, original)
        maps = heatmaps.render_numpy(crop[None], np.full((1, 16), 2), 368, 7.0)
        decoded, _ = heatmaps.decode(maps)
        np.testing.assert_allclose(heatmaps.to_original(decoded, M)[0], original, atol=0.05)


def test_benchmark_smoke_run(capsys):
    import argparse

    from cpm_nb.bench.heatmaps import bench_heatmaps

    result = bench_heatmaps(argparse.Namespace(quick=True))
    out = capsys.readouterr().out
    assert "ratio in-graph / loop" in out and "per-joint NumPy loop" in out
    assert result["max_abs_diff"] < 1e-5
    assert result["in_graph_maps_per_s"] > 0 and result["numpy_loop_maps_per_s"] > 0
    assert result["ratio_in_graph_vs_loop"] == pytest.approx(
        result["in_graph_maps_per_s"] / result["numpy_loop_maps_per_s"])


# --- resampling ---------------------------------------------------------------------------


def test_upsample_matches_the_decoder_convention():
    S, M = 64, 8
    m = np.zeros((M, M))
    m[3, 5] = 1.0
    up = heatmaps.upsample(m, S)
    assert up.shape == (S, S)
    # the peak sits on the cell centre c * 8 + 3.5: pixels 43 and 44 (x), 27 and 28 (y)
    # (half a pixel from the centre on each axis: (1 - 0.5 / 8) ** 2 of the peak)
    assert up[27:29, 43:45] == pytest.approx(np.full((2, 2), (7.5 / 8) ** 2))
    assert up.max() == pytest.approx((7.5 / 8) ** 2) and up[0, 0] == 0
    assert up[27, 36] == pytest.approx(0.5 / 8 * 7.5 / 8)  # 7.5 px left of the centre
    ones = heatmaps.upsample(np.ones((M, M)), S)
    assert np.allclose(ones, 1)


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
@pytest.mark.parametrize("shape", [(8, 8), (6, 6, 3)])
def test_upsample_equals_its_reference_and_pil(method, shape):
    """The matrix form equals the per-pixel reference, and PIL's resize of a float image (an
    independent implementation of the same convention) to float32 precision."""
    from PIL import Image

    maps = np.random.default_rng(0).random(shape).astype(np.float32)
    fast = heatmaps.upsample(maps, method=method)
    np.testing.assert_allclose(fast, heatmaps.upsample_numpy(maps, method=method), atol=1e-12)
    size = shape[0] * 8
    channels = maps if maps.ndim == 3 else maps[..., None]
    resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
    pil = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(channels[..., c]), mode="F")
                               .resize((size, size), resample[method]))
                    for c in range(channels.shape[-1])], axis=-1)
    np.testing.assert_allclose(fast, pil.reshape(fast.shape), atol=1e-6)
    with pytest.raises(ValueError, match="method"):
        heatmaps.upsample(maps, method="nearest")

