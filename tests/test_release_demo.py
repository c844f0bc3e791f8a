"""cpm_nb.inference.release_demo: the release's test procedure step by step, each step against
an independent reference -- MATLAB's imresize against Pillow's antialiased bicubic and, with
OpenCV's parameters, against cv2.resize; the box scales against the release's formula; the
crop around the rounded centre against a padded slice; the arg-max domain on constructed maps.
(The whole procedure against OpenCV's Caffe importer is in tests/test_caffe.py.)"""

import math

import numpy as np
import pytest
from PIL import Image

from cpm_nb.inference import release_demo as R


def _cv2():
    return pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless<5, the dev extra)")


# --- resizing --------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [0.23, 0.5, 0.61, 0.8, 1.0, 1.3, 2.0, 8.0])
def test_imresize_equals_its_pixel_by_pixel_reference(scale):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (23, 31, 3), np.uint8)
    out = R.imresize(image, scale)
    assert out.dtype == np.uint8
    assert out.shape[:2] == (math.ceil(23 * scale - 1e-9), math.ceil(31 * scale - 1e-9))
    np.testing.assert_array_equal(out, R.imresize_numpy(image, scale))
    maps = rng.normal(size=(9, 7, 2))
    np.testing.assert_allclose(R.imresize(maps, size=(17, 40)),
                               R.imresize_numpy(maps, size=(17, 40)), atol=1e-12)


@pytest.mark.parametrize("size", [(60, 50), (96, 80), (36, 30), (150, 125), (240, 200)])
def test_imresize_is_pillows_antialiased_bicubic_inside_the_image(size):
    """Pillow's BICUBIC is Keys a = -0.5 with the kernel stretched when shrinking, like
    MATLAB; it renormalises at the borders instead of mirroring, and rounds to 8 bits
    between its two passes (so: values that bicubic overshoot does not clip, and +-1)."""
    rng = np.random.default_rng(2)
    image = rng.integers(60, 196, (120, 100), np.uint8)
    ours = R.imresize(image, size=size).astype(int)
    pil = np.asarray(Image.fromarray(image).resize(size[::-1], Image.Resampling.BICUBIC))
    m = int(3 * 120 / size[0]) + 2  # the kernel's reach, in output pixels
    assert np.abs(ours - pil)[m:-m, m:-m].max() <= 1


@pytest.mark.parametrize("size", [(60, 50), (96, 80), (150, 125), (240, 200), (960, 800)])
def test_with_opencvs_parameters_imresize_is_cv2_inter_cubic(size):
    """cv2.resize(INTER_CUBIC) is the same resampler with a = -0.75 and no antialiasing,
    also when it shrinks (borders aside: OpenCV replicates the edge pixel)."""
    cv2 = _cv2()
    image = np.random.default_rng(3).normal(size=(120, 100)).astype(np.float32)
    ref = cv2.resize(image, size[::-1], interpolation=cv2.INTER_CUBIC)
    ours = R.imresize(image, size=size, antialias=False, a=-0.75)
    m = int(3 * size[0] / 120) + 3
    np.testing.assert_allclose(ours[m:-m, m:-m], ref[m:-m, m:-m], atol=1e-5)


def test_opencv_does_not_antialias_when_shrinking():
    """A 1-px stripe pattern shrunk to half: MATLAB's (and Pillow's) antialiased bicubic
    averages it to grey, OpenCV's INTER_CUBIC keeps full-contrast aliasing; INTER_AREA
    averages."""
    cv2 = _cv2()
    stripes = np.tile(np.array([[0], [255]], np.uint8), (40, 40))  # rows alternate
    shrink = (27, 27)  # 80 -> 27 rows: 0.34x
    ours = R.imresize(stripes, size=shrink).astype(float)
    pil = np.asarray(Image.fromarray(stripes).resize(shrink, Image.Resampling.BICUBIC), float)
    cubic = cv2.resize(stripes, shrink, interpolation=cv2.INTER_CUBIC).astype(float)
    area = cv2.resize(stripes, shrink, interpolation=cv2.INTER_AREA).astype(float)
    inner = (slice(3, -3), slice(3, -3))
    assert ours[inner].std() < 3 and pil[inner].std() < 3 and area[inner].std() < 25
    assert cubic[inner].std() > 60


# --- the box scales --------------------------------------------------------------------------


@pytest.mark.parametrize("box_height,image_height", [(100, 480), (250, 400), (377.5, 600),
                                                     (1000, 1200), (64, 64)])
def test_box_scales_are_the_releases_four(box_height, image_height):
    """The release's formula (applyModel.m with config.m: octave 6, 0.8 ... 1.2), written
    with its ranges relative to the image height."""
    middle = box_height / image_height * 1.2
    start = 368 / (image_height * middle * 1.2)
    end = 368 / (image_height * middle * 0.8)
    ref = 2.0 ** np.arange(math.log2(start), math.log2(end) + 1e-12, 1 / 6)
    scales = R.box_scales(box_height)
    np.testing.assert_allclose(scales, ref, rtol=1e-12)
    assert len(scales) == 4
    np.testing.assert_allclose(scales * box_height, [255.56, 286.85, 321.98, 361.41], atol=0.01)


def test_scales_for_a_box_and_for_a_centre():
    settings = R.DemoSettings()
    centre, scales, factors = R.demo_scales(settings, 368, (500, 400), box=(-20, 50, 120, 450))
    assert centre == (60.5, 225.0)  # the box clipped to the image: x 1 .. 120, y 50 .. 400
    np.testing.assert_allclose(np.multiply(scales, 350), [255.56, 286.85, 321.98, 361.41],
                               atol=0.01)
    np.testing.assert_allclose(factors, 2 ** (np.arange(4) / 6) / 1.2)
    centre, scales, factors = R.demo_scales(settings, 64, (500, 400), center=(10, 20), scale=2)
    assert centre == (10, 20) and factors == settings.scales
    np.testing.assert_allclose(scales, np.multiply(factors, 41 / 35 / 2 * 64 / 368))


# --- the crop around the rounded centre --------------------------------------------------------


@pytest.mark.parametrize("center,scale", [((40.4, 30.6), 0.83), ((3.2, 57.5), 1.37),
                                          ((70.0, 2.0), 0.5)])
def test_the_box_is_cut_around_the_rounded_centre(center, scale):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (60, 72, 3), np.uint8)
    size = 32
    boxes, crops = R.demo_crops(image, center, [scale], size)
    box, crop = boxes[0], crops[0]
    scaled = R.imresize(image, scale)
    cx, cy = (math.floor(scale * v + 0.5) for v in center)  # MATLAB round, 1-based
    assert box.center == (cx, cy) and box.scaled == scaled.shape[:2]
    # padAround: the scaled image grey-padded, rows cy-(S/2-1) .. cy+S/2 (1-based)
    padded = np.pad(scaled, ((size, size), (size, size), (0, 0)), constant_values=128)
    ref = padded[size + cy - size // 2: size + cy + size // 2,
                 size + cx - size // 2: size + cx + size // 2]
    np.testing.assert_array_equal(crop, ref)
    # the box's matrix puts the original centre where imresize puts it
    x, y, _ = box.matrix() @ np.array([*center, 1.0])
    assert abs(x - (scale * (center[0] - 0.5) + 0.5 - 1 - (cx - size // 2))) < 1e-9
    assert abs(y - (size // 2 - 1) - (scale * (center[1] - 0.5) + 0.5 - cy)) < 1e-9


def test_centre_map_peaks_on_the_boxs_centre_pixel():
    m = R.center_map(368, 21.0)
    assert np.unravel_index(m.argmax(), m.shape) == (183, 183) and m.max() == 1.0


# --- the arg-max domain -----------------------------------------------------------------------


def _box_maps(boxes, peaks, size=32, stride=8, channels=1):
    """Belief maps ``[n, M, M, C]`` of the boxes: one peak (cell (x, y), value) per box."""
    m = size // stride
    maps = np.zeros((len(boxes), m, m, channels))
    for k, (x, y, v) in enumerate(peaks):
        maps[k, y, x] = v
    return maps


def test_the_argmax_never_lands_in_the_padding():
    """A box that hangs over the image's left edge, its map's global maximum in the part
    of the box outside the image: the release drops that part and finds the largest value
    on the image; cpm-nb's domain (the box, padding included) takes the padding."""
    image_size = (40, 48)  # width, height
    box = R.demo_box((48, 40), (6, 24), 1.0, 32)  # box x from -10 .. 21 (0-based)
    assert box.origin[0] < 0
    maps = np.zeros((1, 4, 4, 1))
    maps[0, 1, 0] = 1.0  # cell x 0: box pixels 0 .. 7, all outside the image
    maps[0, 2, 3] = 0.6  # cell x 3: inside
    joints, conf = R.demo_joints(maps, [box], image_size)
    assert 1 <= joints[0, 0] <= 40 and conf[0] > 0.3
    dense = R.demo_maps(maps, [box], image_size)
    assert np.allclose([joints[0, 0] - 1, joints[0, 1] - 1], np.unravel_index(
        dense[..., 0].T.argmax(), (40, 48)))  # column-major first maximum, 1-based
    old, _ = R.crop_argmax(maps, [box])
    assert old[0, 0] < 1  # left of the image: in the padding


def test_the_argmax_reaches_what_any_scale_covers():
    """Two scales; the larger-scale box (a zoom-out) covers image pixels outside the
    scale-1 box, and the joint's maximum lies there: the release finds it, cpm-nb's domain
    (the scale-1 box) cannot."""
    image_size = (200, 200)
    boxes = [R.demo_box((200, 200), (100, 100), 1.0, 32),   # original x 85 .. 116
             R.demo_box((200, 200), (100, 100), 0.25, 32)]  # original x ~ 37 .. 164
    maps = np.zeros((2, 4, 4, 1))
    maps[0, 1, 1] = 0.3
    maps[1, 1, 0] = 1.0  # scaled x ~ 9 .. 16 -> original ~ 38 .. 66: outside box 0
    joints, _ = R.demo_joints(maps, boxes, image_size)
    first = boxes[0].matrix()
    inside = first @ np.array([joints[0, 0], joints[0, 1], 1.0])
    assert inside[0] < 0  # left of the scale-1 box
    old, _ = R.crop_argmax(maps, boxes)
    in_box = first @ np.array([old[0, 0], old[0, 1], 1.0])
    assert 0 <= in_box[0] <= 31


def test_a_run_without_the_procedure_key_keeps_cpm_nbs_path():
    assert R.DemoSettings.from_preprocessing({"decoding": "release"}) is None
    assert R.DemoSettings.from_preprocessing(None) is None
    s = R.DemoSettings.from_preprocessing({"procedure": "release", "scales": [1.0, 0.8],
                                           "box_scales": {"octave": 4}})
    assert s.scales == (1.0, 0.8) and s.octave == 4 and s.box_range == (0.8, 1.2)


@pytest.mark.parametrize("center,scales", [((20.3, 31.0), (0.5, 0.8, 1.4)), ((2.0, 45.0), (1.0,)),
                                           ((90.0, -30.0), (0.7,))])
def test_maps_back_to_the_image_equal_the_steps_one_by_one(center, scales):
    """The composed matrices of demo_maps against imresize x 8, the box put into the
    scaled image, imresize to the image: boxes inside, over the edge, off the image."""
    rng = np.random.default_rng(5)
    boxes = [R.demo_box((48, 40), center, s, 32) for s in scales]
    maps = rng.normal(size=(len(boxes), 4, 4, 3))
    np.testing.assert_allclose(R.demo_maps(maps, boxes, (40, 48)),
                               R.demo_maps_numpy(maps, boxes, (40, 48)), atol=1e-12)
