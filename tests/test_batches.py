"""Batches without TensorFlow (cpm_nb.data.batches): the NumPy/PIL input path over the
pure-Python record reader -- decoding by the record schema, batches as pure functions of
their index, the ordered prefetching iterator, the evaluation pass, and its errors."""

import numpy as np
import pytest

from cpm_nb.core import errors
from cpm_nb.core.skeleton import NUM_JOINTS
from cpm_nb.data import batches, schema, shards, synthetic

SIZE = 32


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("batches")
    data = synthetic.generate(root / "syn", 12, 5, SIZE, seed=3)
    out = root / "tfr"
    for split, people in (("train", data.train), ("val", data.val)):
        shards.write_tfrecords(people, data.image_dir, out, split, SIZE)
    return out


def test_every_record_is_decoded_by_the_schema(folder):
    examples = batches.load_split(folder, "val")
    assert len(examples) == shards.count_examples(folder, "val")
    for ex in examples:
        for field in schema.FIELDS:
            if field.kind != "bytes":
                assert ex[field.name].shape == field.shape, field.name
    assert batches.load_split(folder, "val") is examples  # cached while meta.json is unchanged


def test_training_batches_are_pure_functions_of_their_index(folder):
    make = lambda start: batches.NumpyBatches(folder, "train", 4, seed=5,  # noqa: E731
                                              start_step=start, steps=3)
    a, b = make(0), make(2)
    images, joints, vis = a.batch(2)
    assert images.shape == (4, SIZE, SIZE, 3) and images.dtype == np.uint8
    assert joints.shape == (4, NUM_JOINTS, 2) and vis.shape == (4, NUM_JOINTS)
    again = b.batch(0)  # the same step, asked from a run resumed at step 2
    for x, y in zip((images, joints, vis), again):
        np.testing.assert_array_equal(x, y)
    iterated = list(a.iterate(workers=2, prefetch=1))
    assert len(iterated) == len(a) == 3
    for i, got in enumerate(iterated):
        for x, y in zip(got, a.batch(i)):
            np.testing.assert_array_equal(x, y)
    with pytest.raises(IndexError):
        a.batch(3)
    with pytest.raises(ValueError, match="needs steps"):
        batches.NumpyBatches(folder, "train", 4)


def test_fit_form_packs_the_targets_once_per_stage(folder):
    fit = batches.NumpyBatches(folder, "train", 2, steps=1, outputs=3)
    images, targets = fit.batch(0)
    plain = batches.NumpyBatches(folder, "train", 2, steps=1).batch(0)
    assert len(targets) == 3 and targets[0].shape == (2, 3 * NUM_JOINTS)
    np.testing.assert_array_equal(images, plain[0])
    np.testing.assert_array_equal(targets[0][:, :2 * NUM_JOINTS], plain[1].reshape(2, -1))
    np.testing.assert_array_equal(targets[2][:, 2 * NUM_JOINTS:], plain[2])


def test_fit_form_adds_the_centre_map_a_model_takes(folder):
    """A model with a centre-map input (the release's, or ablation d) gets [images, maps]."""
    from cpm_nb.model.architecture import CPMConfig
    from cpm_nb.model.inputs import center_map

    cfg = CPMConfig(input_size=SIZE, stages=2, center_map=True, center_sigma=3.0)
    (images, maps), targets = batches.NumpyBatches(folder, "train", 2, steps=1, outputs=2,
                                                   model=cfg).batch(0)
    plain = batches.NumpyBatches(folder, "train", 2, steps=1, outputs=2).batch(0)
    np.testing.assert_array_equal(images, plain[0].astype(np.float32))
    assert maps.shape == (2, SIZE, SIZE, 1) and len(targets) == 2
    np.testing.assert_array_equal(maps[1, :, :, 0], center_map(SIZE, 3.0))
    unchanged = batches.NumpyBatches(folder, "train", 2, steps=1, outputs=2,
                                     model=CPMConfig(input_size=SIZE, stages=2)).batch(0)
    assert unchanged[0].dtype == plain[0].dtype  # without a centre map: the batch as it was
    np.testing.assert_array_equal(unchanged[0], plain[0])


def test_the_evaluation_pass_is_ordered_complete_and_unaugmented(folder):
    n = shards.count_examples(folder, "val")
    passes = list(batches.evaluation_batches(folder, "val", batch_size=2, input_path="numpy"))
    assert [len(b[0]) for b in passes] == [2] * (n // 2) + ([n % 2] if n % 2 else [])
    meta = passes[0][3]
    assert not meta["flipped"].any() and meta["crop_matrix"].shape == (2, 3, 3)
    examples = batches.load_split(folder, "val")
    np.testing.assert_array_equal(meta["center"][0], examples[0]["center"])
    # the crop matrix maps the original joints to the crop joints
    orig = examples[0]["orig_joints"]
    seen = examples[0]["visibility"] > 0
    ones = np.concatenate([orig, np.ones((NUM_JOINTS, 1))], axis=1)
    mapped = (ones @ meta["crop_matrix"][0].T)[:, :2]
    np.testing.assert_allclose(mapped[seen], passes[0][1][0][seen], atol=1e-3)


def test_input_paths_and_errors(folder, tmp_path, monkeypatch):
    assert batches.resolve_input_path("numpy") == "numpy"
    monkeypatch.setattr(batches, "tensorflow_available", lambda: False)
    assert batches.resolve_input_path("auto") == "numpy"
    with pytest.raises(ValueError, match="input path must be one of"):
        batches.resolve_input_path("torch")
    with pytest.raises(errors.DataError, match="no meta.json"):
        batches.data_meta(tmp_path)
    with pytest.raises(errors.DataError, match="no train-\\*.tfrecord shards"):
        batches.shard_files(tmp_path, "train")


def test_a_damaged_shard_is_one_data_error_naming_it(folder, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    shard = next(copy.glob("val-*.tfrecord"))
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(errors.DataError, match=rf"{shard.name}.*truncated record.*prepare"):
        batches.load_split(copy, "val")
