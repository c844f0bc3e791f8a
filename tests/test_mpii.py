"""The MPII reader: the real validation slice, every quirk of the official layout, bad files."""

from collections import Counter

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from cpm_nb.core import errors, skeleton
from cpm_nb.data import mpii

# Missing-joint counts of the 2,958 Tompson validation people (from detections.mat).
REAL_MISSING = {
    "r_ankle": 843, "r_knee": 473, "r_hip": 69, "l_hip": 70, "l_knee": 480, "l_ankle": 839,
    "pelvis": 80, "thorax": 26, "upper_neck": 26, "head_top": 26, "r_wrist": 30,
    "r_elbow": 23, "r_shoulder": 14, "l_shoulder": 14, "l_elbow": 26, "l_wrist": 49,
}


def test_reads_all_real_validation_people(mpii_reference):
    skipped = Counter()
    people = mpii.read_annotations(mpii_reference / "detections.mat", skipped)
    assert len(people) == mpii.NUM_VALIDATION_PEOPLE == 2958
    assert not skipped
    assert mpii.missing_counts(people) == REAL_MISSING
    # agrees with the evaluators' layout of the same people
    ref = loadmat(mpii_reference / "detections_our_format.mat")
    missing = np.stack([p.missing for p in people], -1)
    assert np.array_equal(missing, ref["jnt_missing"].astype(bool))
    joints = np.stack([p.joints for p in people], -1)
    pos = ref["pos_gt_src"]
    agree = np.isclose(joints, pos, atol=1e-3) | missing[:, None] | (pos == 0)
    assert agree.all()  # the only differences: that file's zeroed coordinates (README)
    boxes = np.stack([p.head_box.reshape(2, 2) for p in people], -1)
    assert np.allclose(boxes, ref["headboxes_src"], atol=1e-3)
    diag = np.array([np.hypot(*(p.head_box[2:] - p.head_box[:2])) for p in people])
    assert np.allclose(200 * np.array([p.scale for p in people]) / diag, 4.8)
    # is_visible is empty for upper neck and head top: read as visible, never occluded
    vis = np.stack([p.visibility for p in people])
    head = [skeleton.JOINT["upper_neck"], skeleton.JOINT["head_top"]]
    assert not np.any(vis[:, head] == 1) and np.any(vis == 1)
    assert all(p.image is None for p in people)
    assert people[0].key == (7, 1)


def test_real_split_puts_exactly_those_people_in_validation(mpii_reference):
    people = mpii.read_annotations(mpii_reference / "detections.mat")
    validation = mpii.read_split(mpii_reference / "detections.mat")
    assert len(validation) == 2958
    train, val = mpii.split_train_val(people, validation)
    assert len(val) == 2958 and not train


def _release_images():
    u16, u8 = np.uint16, np.uint8
    full = [(j, u16(100 + 5 * j), u16(50 + 10 * j), u8(1)) for j in range(16)]
    full[8] = (8, 170.25, 75.5, None)  # float coordinates and empty is_visible (head points)
    full[9] = (9, 171.75, 40.5, None)
    full[3] = (3, u16(120), u16(60), "0")  # string is_visible
    full[4] = (4, u16(121), u16(61), "1")
    partial = [(0, 300.0, 200.0, u8(0)), (12, 310.0, 150.0, u8(1))]  # absent points
    return [
        {"name": "a.jpg", "train": True, "single": [1],
         "activity": ("sports", "running", 7),
         "people": [
             {"head_box": (u16(150), u8(30), u16(190), u8(80)), "scale": 2.5,
              "objpos": (u16(160), u16(200)), "points": full},
             {"head_box": (290, 100, 330, 140), "scale": 1.5, "objpos": (305, 180),
              "points": partial},
             {"head_box": (10, 10, 20, 20), "scale": 0.5, "objpos": (15, 40)},  # no annopoints
             {"scale": 1.0},  # no objpos: not a usable person
         ]},
        {"name": "test.jpg", "train": False, "people": [{"scale": 3.0, "objpos": (50, 60)}]},
        {"name": "empty.jpg", "train": True, "people": []},
    ]


def test_reads_official_release_layout_with_its_quirks(tmp_path):
    path = mpii.write_release_mat(tmp_path / "release.mat", _release_images())
    skipped = Counter()
    people = mpii.read_annotations(path, skipped)
    assert skipped == {"rectangle without objpos or scale": 1}
    assert [p.key for p in people] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    a, b, c, t = people
    assert a.image == "a.jpg" and a.is_train and a.single_person and not b.single_person
    assert a.activity == {"category": "sports", "name": "running", "id": 7}
    assert not a.missing.any() and a.joints[0].tolist() == [100.0, 50.0]
    assert a.joints[8].tolist() == [170.25, 75.5]
    assert a.visible[8] and a.visible[9]  # empty is_visible
    assert not a.visible[3] and a.visible[4]  # '0' / '1'
    assert a.visibility[3] == 1 and a.visibility[4] == 2
    assert a.head_box.tolist() == [150, 30, 190, 80] and a.scale == 2.5
    assert a.objpos.tolist() == [160, 200]
    assert b.num_annotated == 2 and b.visibility[0] == 1 and b.visibility[12] == 2
    assert b.visibility[5] == 0 and b.joints[5].tolist() == [0, 0]
    assert c.num_annotated == 0 and c.head_box is not None  # person without annopoints
    assert t.is_train is False and t.num_annotated == 0 and t.head_box is None  # test image


def test_json_round_trip(tmp_path):
    people = mpii.read_annotations(mpii.write_release_mat(tmp_path / "r.mat", _release_images()))
    people[0].flags = {"n_others": 2, "occluded": [3]}
    path = mpii.write_json(people, tmp_path / "people.json", source="test")
    back = mpii.read_annotations(path)
    assert len(back) == len(people)
    for p, q in zip(people, back):
        assert p.to_dict() == q.to_dict()
    assert mpii.read_json_meta(path) == {"source": "test"}


def test_bare_annolist_without_release_indices(tmp_path):
    rect = {"x1": 1.0, "y1": 2.0, "x2": 11.0, "y2": 12.0, "scale": 1.0,
            "objpos": {"x": 5.0, "y": 6.0},
            "annopoints": {"point": mpii._struct_array([{"x": 3.0, "y": 4.0, "id": 6.0,
                                                         "is_visible": 1.0}])}}
    annolist = mpii._struct_array([{"annorect": mpii._struct_array([rect])}] * 2)
    savemat(tmp_path / "bare.mat", {"annolist": annolist})
    people = mpii.read_annotations(tmp_path / "bare.mat")
    assert [p.key for p in people] == [(1, 1), (2, 1)]
    assert people[0].joints[6].tolist() == [3.0, 4.0] and people[0].num_annotated == 1


def test_split_keeps_test_people_out(tmp_path):
    people = mpii.read_annotations(mpii.write_release_mat(tmp_path / "r.mat", _release_images()))
    train, val = mpii.split_train_val(people, {(1, 2)})
    assert [p.key for p in val] == [(1, 2)]
    assert [p.key for p in train] == [(1, 1), (1, 3)]


# --- bad input ----------------------------------------------------------------------


def test_missing_mat_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="MPII annotation file not found"):
        mpii.read_annotations(tmp_path / "nope.mat")


def test_corrupt_mat_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "corrupt.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + bytes(range(256)) * 4)
    with pytest.raises(mpii.MpiiFormatError, match="not a readable MATLAB") as caught:
        mpii.read_annotations(bad)
    assert isinstance(caught.value, errors.DataError)  # one line from the command line


def test_truncated_mat_file_is_a_clear_error(tmp_path):
    good = mpii.write_release_mat(tmp_path / "r.mat", _release_images())
    cut = tmp_path / "cut.mat"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(mpii.MpiiFormatError, match="download complete"):
        mpii.read_annotations(cut)


def test_foreign_mat_file_is_a_clear_error(tmp_path):
    savemat(tmp_path / "other.mat", {"weights": np.ones(3)})
    with pytest.raises(mpii.MpiiFormatError, match="no RELEASE or annolist.*weights"):
        mpii.read_annotations(tmp_path / "other.mat")
    with pytest.raises(mpii.MpiiFormatError, match="RELEASE_img_index"):
        mpii.read_split(tmp_path / "other.mat")


def test_foreign_json_is_a_clear_error(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(mpii.MpiiFormatError, match="not a cpm-nb-annotations"):
        mpii.read_annotations(tmp_path / "x.json")
    (tmp_path / "y.json").write_text("{not json")
    with pytest.raises(mpii.MpiiFormatError, match="y.json is unreadable or corrupt"):
        mpii.read_annotations(tmp_path / "y.json")
