"""TFRecord shards and the tf.data pipeline: the batch contract, exactness, determinism,
and bad input (a counted skip or fix, never a silent wrong sample)."""

import numpy as np
import pytest
from PIL import Image

from cpm_nb.core import errors
from cpm_nb.data import mpii, pipeline, preprocess, shards, synthetic
from cpm_nb.io.images import ImageError, load_rgb

SIZE = 64


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    data = synthetic.generate(root / "syn", 24, 8, SIZE, seed=1)
    out = root / "tfr"
    summaries = {s: shards.write_tfrecords(people, data.image_dir, out, s, SIZE)
                 for s, people in (("train", data.train), ("val", data.val))}
    return data, out, summaries


def test_batch_contract(prepared):
    _, out, _ = prepared
    images, joints, vis = next(iter(pipeline.make_dataset(out, "train", batch_size=4)))
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype.name == "uint8"
    assert joints.shape == (4, 16, 2) and joints.dtype.name == "float32"
    assert vis.shape == (4, 16) and vis.dtype.name == "int32"
    v = vis.numpy()
    assert set(np.unique(v)) <= {0, 1, 2}
    assert np.all(joints.numpy()[v == 0] == 0)


def test_validation_pass_is_exact_and_carries_meta(prepared):
    data, out, _ = prepared
    ds = pipeline.make_dataset(out, "val", batch_size=5, with_meta=True)
    seen = 0
    by_key = {p.key: p for p in data.val}
    for images, joints, vis, meta in ds:
        for k in range(images.shape[0]):
            p = by_key[(int(meta["img_index"][k]), int(meta["person_index"][k]))]
            assert meta["image_name"][k].numpy().decode() == p.image
            m = preprocess.crop_matrix(p.objpos, p.scale, SIZE)
            assert np.allclose(meta["crop_matrix"][k].numpy(), m, atol=1e-3)
            want_j, want_v = preprocess.transform_joints(p.joints, p.visibility, m)
            assert np.array_equal(vis[k].numpy(), want_v)
            assert np.allclose(joints[k].numpy(), want_j, atol=1e-3)
            assert np.allclose(meta["orig_joints"][k].numpy(), p.joints, atol=1e-3)
            assert np.allclose(meta["head_box"][k].numpy(), p.head_box, atol=1e-3)
            assert meta["scale"][k].numpy() == pytest.approx(p.scale, rel=1e-6)
            assert int(meta["n_others"][k]) == p.flags["n_others"]
            # mapping back with inv(M) recovers the original joints
            back = preprocess.apply_matrix(np.linalg.inv(meta["crop_matrix"][k].numpy()),
                                           joints[k].numpy())
            ok = want_v > 0
            assert np.allclose(back[ok], p.joints[ok], atol=0.05)
            # pixels: close to the reference crop straight from the original image
            img = np.asarray(Image.open(data.image_dir / p.image).convert("RGB"))
            ref = preprocess.warp_numpy(img, m, SIZE).astype(int)
            assert np.abs(ref - images[k].numpy().astype(int)).mean() < 6
            seen += 1
    assert seen == len(data.val)  # one ordered pass, nothing dropped


def test_augmented_joints_follow_the_pixels(prepared):
    _, out, _ = prepared
    ds = pipeline.make_dataset(out, "train", batch_size=8, with_meta=True, seed=7)
    images, joints, vis, meta = next(iter(ds))
    flips = meta["flipped"].numpy()
    for k in range(8):
        # the augmented crop matrix maps the original joints onto the batch joints
        m = meta["crop_matrix"][k].numpy().astype(np.float64)
        orig = meta["orig_joints"][k].numpy()
        j = preprocess.apply_matrix(m, orig)
        if flips[k]:
            j = j[preprocess.FLIP_PERM]
        ok = vis[k].numpy() > 0
        assert np.allclose(j[ok], joints[k].numpy()[ok], atol=1e-2)


def test_deterministic_option_and_seeds(prepared):
    _, out, _ = prepared

    def first(seed, deterministic=True):
        ds = pipeline.make_dataset(out, "train", batch_size=4, seed=seed,
                                   deterministic=deterministic)
        return [t.numpy() for t in next(iter(ds))]

    a, b, c = first(0), first(0), first(1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[1], c[1])


def test_missing_shards_are_a_clear_error(tmp_path):
    with pytest.raises(errors.DataError, match="cpm-nb prepare"):
        pipeline.make_dataset(tmp_path, "train", batch_size=4)


# --- bad input -----------------------------------------------------------------------


def _person(image, **kw):
    joints = np.tile([[40.0, 30.0]], (16, 1)) + np.arange(16)[:, None]
    d = dict(image=image, joints=joints, missing=np.zeros(16, bool), visible=np.ones(16, bool),
             objpos=np.array([40.0, 35.0]), scale=0.3)
    d.update(kw)
    return mpii.Person(**d)


@pytest.fixture
def bad_input(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / "rgb.jpg")
    Image.fromarray(rgb[..., 0]).save(images / "gray.jpg")  # grayscale JPEG
    Image.fromarray(rgb).convert("CMYK").save(images / "cmyk.jpg")  # CMYK JPEG
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    outside = np.tile([[40.0, 30.0]], (16, 1))
    outside[0] = (500.0, 30.0)  # far right of the 80x60 image
    outside[1] = (0.0, 0.0)  # the 'zero' coordinates some files have
    people = [
        _person("rgb.jpg"),
        _person("gray.jpg"),
        _person("cmyk.jpg"),
        _person("missing.jpg"),
        _person("corrupt.jpg"),
        _person("rgb.jpg", missing=np.ones(16, bool), joints=np.zeros((16, 2))),  # no joints
        _person("rgb.jpg", scale=0.0),
        _person("rgb.jpg", scale=-1.0),
        _person("rgb.jpg", objpos=np.array([np.nan, np.nan])),
        _person("rgb.jpg", joints=outside),
        _person("rgb.jpg", joints=np.full((16, 2), 900.0)),  # every joint outside
        _person(None),
    ]
    return people, images, tmp_path / "tfr"


def test_bad_input_is_skipped_or_fixed_and_counted(bad_input):
    people, images, out = bad_input
    summary = shards.write_tfrecords(people, images, out, "train", 32)
    assert summary["kept"] == 4  # rgb, gray, cmyk, and the one with two joints outside
    assert summary["skipped"] == {
        shards.SKIP_MISSING_IMAGE: 1,
        shards.SKIP_UNREADABLE_IMAGE: 1,
        shards.SKIP_NO_JOINTS: 1,
        shards.SKIP_BAD_SCALE: 2,
        shards.SKIP_NO_CENTER: 1,
        shards.SKIP_NO_JOINTS_INSIDE: 1,
        shards.SKIP_NO_IMAGE_NAME: 1,
    }
    assert summary["fixed"] == {shards.FIX_GRAYSCALE: 1, shards.FIX_CMYK: 1,
                                shards.FIX_OUTSIDE: 18}
    ds = pipeline.make_dataset(out, "train", batch_size=8, with_meta=True, augment=False,
                               shuffle=False, repeat=False)
    images_b, joints, vis, meta = next(iter(ds))
    assert images_b.shape == (4, 32, 32, 3)
    names = [n.decode() for n in meta["image_name"].numpy()]
    assert sorted(names) == ["cmyk.jpg", "gray.jpg", "rgb.jpg", "rgb.jpg"]
    gray = images_b[names.index("gray.jpg")].numpy().astype(int)
    inner = gray[8:24, 8:24]  # away from the grey fill
    assert np.abs(inner[..., 0] - inner[..., 1]).max() <= 3  # converted to 3 equal channels
    cmyk = images_b[names.index("cmyk.jpg")].numpy().astype(int)
    rgb_first = images_b[names.index("rgb.jpg")].numpy().astype(int)
    assert np.abs(cmyk - rgb_first).mean() < 12  # CMYK came back as the same colours
    # the person with joints outside the image lost exactly those two joints
    v = vis.numpy()
    assert sorted((v == 0).sum(1).tolist()) == [0, 0, 0, 2]


def test_load_image_errors_name_the_file(bad_input):
    _, folder, _ = bad_input
    with pytest.raises(ImageError, match="missing.jpg") as err:
        load_rgb(folder / "missing.jpg")
    assert err.value.reason == shards.SKIP_MISSING_IMAGE
    with pytest.raises(ImageError, match="unreadable image file .*corrupt.jpg") as err:
        load_rgb(folder / "corrupt.jpg")
    assert err.value.reason == shards.SKIP_UNREADABLE_IMAGE


def test_pil_and_tf_warps_agree(prepared):
    _, out, _ = prepared
    batches = [next(iter(pipeline.make_dataset(out, "train", batch_size=8, seed=3, warp=w,
                                               deterministic=True)))
               for w in ("pil", "tf")]
    (a, ja, va), (b, jb, vb) = batches
    assert np.array_equal(ja.numpy(), jb.numpy()) and np.array_equal(va.numpy(), vb.numpy())
    diff = np.abs(a.numpy().astype(int) - b.numpy().astype(int))
    assert diff.mean() < 0.5 and np.percentile(diff, 99.9) <= 3
    with pytest.raises(ValueError, match="warp must be"):
        pipeline.make_dataset(out, "train", batch_size=4, warp="cv2")
