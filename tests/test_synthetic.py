"""The synthetic people: deterministic, in the MPII record format, with MPII's conventions."""

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from cpm_nb.core import config
from cpm_nb.data import mpii, poses, preprocess, synthetic


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("syn"), 40, 10, 64, seed=3)


def test_same_seed_same_data_other_seed_other_data(small, tmp_path):
    again = synthetic.generate(tmp_path / "again", 40, 10, 64, seed=3)
    assert [p.to_dict() for p in again.train] == [p.to_dict() for p in small.train]
    name = small.train[0].image
    assert (again.image_dir / name).read_bytes() == (small.image_dir / name).read_bytes()
    other = synthetic.generate(tmp_path / "other", 40, 10, 64, seed=4)
    assert [p.to_dict() for p in other.train] != [p.to_dict() for p in small.train]


def test_records_follow_the_mpii_format(small):
    width, height = synthetic.image_size(64)
    assert {p.image.split("/")[0] for p in small.train} == {"train"}
    assert {p.image.split("/")[0] for p in small.val} == {"val"}
    assert len({p.image for p in small.train}) == 40
    for p in small.train + small.val:
        assert p.joints.shape == (16, 2) and p.image_size == (width, height)
        ok = ~p.missing
        assert ok.sum() >= 4
        # annotated joints lie in the image (1-based)
        assert np.all((p.joints[ok] >= 0.5) & (p.joints[ok] <= [width + 0.5, height + 0.5]))
        assert np.all(p.joints[p.missing] == 0) and not np.any(p.visible & p.missing)
        diag = np.hypot(*(p.head_box[2:] - p.head_box[:2]))
        assert 200 * p.scale == pytest.approx(4.8 * diag)  # MPII's convention
        assert 0 < p.objpos[0] < width + 1 and 0 < p.objpos[1] < height + 1
        assert p.activity["name"] in poses.ACTIVITIES
        f = p.flags
        assert set(f) >= {"n_others", "occluded", "truncated", "occluders"}
        assert all(p.visibility[j] == 1 for j in f["occluded"])
        assert all(p.visibility[j] == 0 for j in f["truncated"])


def test_multi_person_images_and_flags(small):
    per_image = Counter(p.image for p in small.train)
    for p in small.train:
        assert p.flags["n_others"] == per_image[p.image] - 1
        assert p.single_person == (per_image[p.image] == 1)
    assert {1, 2} <= set(per_image.values()) <= {1, 2, 3}
    assert mpii.people_per_image(small.train) == Counter(Counter(per_image.values()))
    assert sum(len(p.flags["occluded"]) for p in small.train) > 0  # some joints are hidden


def test_person_fills_the_crop_like_cpm(small):
    """Crops from objpos/scale show the figure centred at about 0.64 of the side."""
    heights = []
    for p in small.train:
        m = preprocess.crop_matrix(p.objpos, p.scale, 64)
        j = preprocess.apply_matrix(m, p.joints[~p.missing])
        assert np.all(np.abs(j - 31.5) < 64)  # near the crop
        if p.activity["name"] == "standing" and not p.missing.any():
            heights.append(j[:, 1].max() - j[:, 1].min())
    assert 0.5 * 64 < np.median(heights) < 0.85 * 64


def test_images_are_jpeg_rgb(small):
    with Image.open(small.image_dir / small.val[0].image) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        assert im.size == synthetic.image_size(64)


def test_load_or_generate_caches_and_follows_settings(tmp_path, monkeypatch):
    monkeypatch.setenv(synthetic.DATA_ENV, str(tmp_path))
    profile = config.PROFILES["fast"].replace(n_train=12, n_val=4)
    data = synthetic.load_or_generate(profile)
    assert data.root == tmp_path / "synthetic" / "fast-seed0"
    stamp = (data.root / "train.json").stat().st_mtime_ns
    again = synthetic.load_or_generate(profile)
    assert (data.root / "train.json").stat().st_mtime_ns == stamp  # read from the cache
    assert [p.to_dict() for p in again.val] == [p.to_dict() for p in data.val]
    bigger = synthetic.load_or_generate(profile.replace(n_train=14))
    assert len({p.image for p in bigger.train}) == 14  # settings changed: regenerated
    other = synthetic.load_or_generate(profile, seed=5, root=tmp_path / "elsewhere")
    assert other.root == tmp_path / "elsewhere" and len({p.image for p in other.val}) == 4
