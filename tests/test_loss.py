"""Tests of the CPM loss: equal to its NumPy reference, and a model compiled with it saves and
reloads with plain Keras."""

import os
from pathlib import Path

import numpy as np

from cpm_nb.core.config import resolve_profile
from cpm_nb.model.targets import pack_targets_numpy
from cpm_nb.training import config as TC
from cpm_nb.training import loop as T

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CPM_NB_STATIC": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}



def weights_of(model):
    return [np.asarray(w) for w in model.get_weights()]


def test_cpm_loss_equals_its_numpy_reference(keras):
    """CPMLoss on packed joints == half the summed squared error against NumPy-rendered maps,
    batch mean, for every stage (the one definition of the loss, tested against its twin)."""
    from cpm_nb.model import cpm as M
    from cpm_nb.model.targets import pack_targets_numpy
    from cpm_nb.training import loss as L

    cfg = TC.train_config(resolve_profile("fast"))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 64, 64, 3)).astype(np.float32)
    outputs = [np.asarray(o) for o in M.build_cpm(cfg.model, seed=0)(images)]
    joints = rng.uniform(0, 63, (4, 16, 2)).astype(np.float32)
    vis = rng.integers(0, 3, (4, 16))
    cpm_loss = L.CPMLoss(cfg.input_size, cfg.sigma)
    packed = pack_targets_numpy(joints, vis)
    ours = [float(cpm_loss(packed, o)) for o in outputs]
    reference = L.stage_losses_numpy(outputs, joints, vis, cfg.input_size, cfg.sigma)
    np.testing.assert_allclose(ours, reference, rtol=1e-5)


def test_a_compiled_model_saves_and_reloads_with_plain_keras(tmp_path, keras):
    """Compiled with CPMLoss and the cpu profile's warm-up schedule, a model reloads with
    keras.saving.load_model (registered classes, safe mode) and goes on training."""
    from cpm_nb.model import network
    from cpm_nb.training import loss as L

    cfg = TC.train_config(resolve_profile("cpu"), stages=2, width=0.0625, steps=100,
                          warmup_steps=10, checkpoint_every=10)
    model = T.compile_model(cfg)
    model.save(tmp_path / "compiled.keras")
    loaded = keras.saving.load_model(tmp_path / "compiled.keras", safe_mode=True)
    assert isinstance(loaded, network.CPM) and loaded.cpm_config == cfg.model
    assert isinstance(loaded.loss, L.CPMLoss) and loaded.loss.get_config() == model.loss.get_config()
    schedule = loaded.optimizer.get_config()["learning_rate"]
    assert schedule == model.optimizer.get_config()["learning_rate"]
    assert schedule["registered_name"] == "cpm_nb>WarmUp"
    again, lr = keras.saving.deserialize_keras_object(schedule), TC.learning_rate_schedule(cfg)
    assert [float(again(s)) for s in (0, 5, 50, 90)] == [float(lr(s)) for s in (0, 5, 50, 90)]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 128, 128, 3)).astype(np.float32)
    packed = pack_targets_numpy(rng.uniform(0, 127, (2, 16, 2)), np.full((2, 16), 2))
    np.testing.assert_allclose(loaded.evaluate(images, [packed] * 2, verbose=0),
                               model.evaluate(images, [packed] * 2, verbose=0), rtol=1e-5)
    loaded.fit(images, [packed] * 2, epochs=1, verbose=0)

