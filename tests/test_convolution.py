"""The NumPy convolution and pooling references equal TensorFlow/Keras."""

import numpy as np
import pytest

from cpm_nb.core.runtime import import_keras
from cpm_nb.course import convolution as C

keras = tf = None  # imported by the fixture below, not at collection


@pytest.fixture(autouse=True, scope="module")
def _backends():
    """TensorFlow is imported when these tests run, not when pytest collects them (a
    collection-time import binds TensorFlow's log handlers to pytest's capture streams)."""
    global keras, tf
    keras = import_keras()
    tf = pytest.importorskip("tensorflow")


@pytest.mark.parametrize("stride,padding", [(1, "valid"), (2, "valid"), (1, "same"), (2, "same"),
                                            (3, "same")])
def test_conv2d_matches_tensorflow(stride, padding):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(11, 13, 3)).astype("float32")
    k = rng.normal(size=(3, 3, 3, 5)).astype("float32")
    ours = C.conv2d(x, k, stride, padding)
    ref = tf.nn.conv2d(x[None], k, stride, padding.upper())[0].numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize("n,k,s", [(7, 3, 1), (8, 3, 2), (368, 9, 8), (10, 4, 3)])
def test_output_size_formula(n, k, s):
    valid = tf.nn.conv2d(tf.zeros((1, n, n, 1)), tf.zeros((k, k, 1, 1)), s, "VALID").shape[1]
    assert C.output_size(n, k, s) == valid
    same = tf.nn.conv2d(tf.zeros((1, n, n, 1)), tf.zeros((k, k, 1, 1)), s, "SAME").shape[1]
    assert C.output_size(n + sum(C.same_padding(n, k, s)), k, s) == same


def test_max_pool_matches_keras():
    x = np.random.default_rng(2).normal(size=(9, 10, 4)).astype("float32")
    ref = keras.layers.MaxPooling2D(2)(x[None])[0].numpy()
    np.testing.assert_array_equal(C.max_pool(x, 2), ref)


def test_sample_photo_ships_with_matplotlib():
    photo = C.sample_photo(64)
    assert photo.shape == (64, 64) and photo.dtype == np.float32
    assert 0 <= photo.min() < photo.max() <= 1


def test_learned_kernel_converges_to_sobel():
    learned, losses = C.learn_kernel(C.sample_photo(64), C.SOBEL_X, steps=1000, epochs=10)
    assert np.abs(learned - C.SOBEL_X).max() < 1e-2
    assert losses[-1] < losses[0] / 100


def test_pooling_makes_maps_more_shift_tolerant():
    edges = np.abs(C.conv2d(C.sample_photo(96)[:, :, None], C.SOBEL_X[:, :, None, None]))[:, :, 0]
    shifts = [0, 1, 2, 3]
    raw = C.shift_similarity(edges, 1, shifts)
    pooled = C.shift_similarity(edges, 4, shifts)
    assert raw[0] == pytest.approx(1) and pooled[0] == pytest.approx(1)
    assert np.all(pooled[1:] > raw[1:])
