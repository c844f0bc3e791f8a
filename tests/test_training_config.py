"""Tests of training configurations: the optimizer and schedule each profile chooses, run keys,
configuration that flows down from a resolved profile, precision per device, the estimate."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cpm_nb.core import errors
from cpm_nb.core.config import resolve_profile
from cpm_nb.data.synthetic_set import SyntheticSpec
from cpm_nb.training import config as TC
from cpm_nb.training import loop as T

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "CPM_NB_STATIC": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}



def weights_of(model):
    return [np.asarray(w) for w in model.get_weights()]


def test_profiles_choose_documented_optimizers():
    gpu = TC.train_config(resolve_profile("gpu"), data="mpii", data_dir="x")
    assert (gpu.optimizer, gpu.learning_rate, gpu.momentum, gpu.batch_size) == ("sgd", 8e-5,
                                                                                0.9, 16)
    assert (gpu.weight_decay, gpu.schedule, gpu.lr_decay_steps, gpu.lr_decay_factor) == (
        5e-4, "step", TC.RELEASE_STEP_SIZE, 0.333)
    assert TC.RELEASE_STEP_SIZE == 136_106 and gpu.init == "imagenet"  # the release's genProto.py
    assert (gpu.input_size, gpu.stages, gpu.steps) == (368, 6, 320_000)
    # on the synthetic set the gpu profile trains a ~30-minute schedule, not 100,000 steps
    assert TC.train_config(resolve_profile("gpu")).steps == TC.SYNTHETIC_GPU_STEPS < 100_000
    cpu = TC.train_config(resolve_profile("cpu"))
    assert (cpu.optimizer, cpu.schedule, cpu.lr_decay_factor) == ("adam", "step", 0.1)
    assert cpu.lr_decay_steps == int(0.8 * cpu.steps) and cpu.warmup_steps > 0
    assert TC.train_config(resolve_profile("cpu"), steps=1000).lr_decay_steps == 800  # follows --steps
    assert cpu.model == cpu.model.replace()  # the model configuration lives in the config


def test_learning_rate_schedules(keras):
    cfg = TC.train_config(resolve_profile("cpu"), steps=1000, warmup_steps=100, learning_rate=1e-3,
                          schedule="cosine")
    lr = TC.learning_rate_schedule(cfg)
    at = [float(lr(s)) for s in (0, 50, 100, 550, 1000)]
    assert at[0] == pytest.approx(1e-5) and at[1] < at[2] == pytest.approx(1e-3)
    assert at[3] == pytest.approx(0.5e-3 * (1 + 0.01), rel=0.02) and at[4] == pytest.approx(1e-5)
    step = TC.learning_rate_schedule(TC.train_config(resolve_profile("gpu"), data="mpii", data_dir="x"))
    assert float(step(136_105)) == pytest.approx(8e-5) and float(step(136_106)) == pytest.approx(
        8e-5 * 0.333)


def test_config_key_tracks_what_changes_the_weights():
    base = TC.train_config(resolve_profile("fast"))
    assert base.key() == TC.train_config(resolve_profile("fast")).key()
    assert base.key() != TC.train_config(resolve_profile("fast"), stages=3).key()
    assert base.key() != base.replace(seed=1).key()
    assert base.key() == base.replace(eval_every=10, eval_examples=7).key()
    assert base.run_name.startswith("fast-2st-synthetic-")
    assert TC.TrainConfig.from_json(base.to_json()) == base
    with pytest.raises(TypeError, match="unknown training settings: bogus"):
        TC.train_config(resolve_profile("fast"), bogus=1)
    with pytest.raises(ValueError, match="optimizer"):
        TC.train_config(resolve_profile("fast"), optimizer="rmsprop")
    with pytest.raises(ValueError, match="multiple of checkpoint_every"):
        TC.train_config(resolve_profile("fast"), checkpoint_every=10, eval_every=15)


def test_configuration_flows_down_from_a_resolved_profile():
    """Library functions take resolved profiles; an unknown name is an error, never cpu; the
    synthetic set rides in the configuration (the profile's seed whatever the training seed)."""
    from cpm_nb.core import config

    with pytest.raises(errors.ConfigError, match="resolved run profile"):
        TC.train_config("fast")
    with pytest.raises(config.ProfileError, match="unknown profile 'fastest'"):
        resolve_profile("fastest")
    with pytest.raises(errors.ConfigError, match="no training settings for the profile 'mine'"):
        TC.train_config(resolve_profile("cpu").replace(name="mine"))
    fast = resolve_profile("fast")
    cfg = TC.train_config(fast, seed=3, input_size=128, n_val=10)
    assert cfg.synthetic == SyntheticSpec("fast", 128, fast.n_train, 10, seed=fast.seed)
    assert TC.train_config(fast, data_seed=2).synthetic.seed == 2
    assert TC.train_config(fast, data_seed=2).key() != TC.train_config(fast).key()
    with pytest.raises(errors.ConfigError, match="must be the model's input"):
        cfg.replace(synthetic=cfg.synthetic.replace(input_size=64))


def test_keys_of_runs_trained_by_the_previous_layout_still_match(repo):
    """A configuration written before the synthetic set was a field of its own reads back
    with the same key, and today's configuration of that run has it too (the run cache of
    earlier versions stays valid)."""
    from cpm_nb.model import architecture

    legacy = repo / "tests" / "fixtures" / "legacy" / "fast-run" / "train_config.json"
    saved = json.loads(legacy.read_text())
    assert "synthetic" not in saved and saved["n_train"] == 64
    cfg = TC.TrainConfig.from_json(saved)
    assert cfg.key() == saved["key"] and cfg.synthetic.name == "fast"
    fast = resolve_profile("fast")
    today = TC.train_config(fast, model=architecture.from_profile(fast, width=0.03125,
                                                                  trunk=(1, 1, 2, 2)))
    assert today == cfg and today.run_name == f"fast-2st-synthetic-{saved['key']}"


def test_precision_follows_the_device(keras):
    dev = TC.devices_for(TC.train_config(resolve_profile("fast")))
    if dev.gpus:
        pytest.skip("a GPU is visible")
    from cpm_nb.core import runtime

    automatic = ("mixed_bfloat16" if runtime.cpu_has_bf16()
                 and runtime.keras_backend() == "tensorflow" else "float32")
    assert dev == TC.Devices(0, automatic, False, False)
    forced = TC.devices_for(TC.train_config(resolve_profile("fast"), precision="mixed_float16", xla=True))
    assert forced.precision == "mixed_float16" and forced.xla
    t4, h100 = TC.Accelerator("Tesla T4", (7, 5)), TC.Accelerator("NVIDIA H100", (9, 0))
    assert TC.auto_precision([t4]) == "mixed_float16"  # no fast bf16 before Ampere
    assert TC.auto_precision([h100]) == "mixed_bfloat16"
    assert TC.auto_precision([]) == automatic


def test_what_notebook_05_says_before_training_on_a_gpu(monkeypatch, tmp_path):
    """With a GPU visible the default profile is gpu: notebook 05 announces the 6,000-step
    synthetic schedule and its wall time before training (nothing starts unannounced)."""
    from cpm_nb.core import config, runtime
    from cpm_nb.training import config as TC

    monkeypatch.delenv(config.PROFILE_ENV, raising=False)
    monkeypatch.setattr(runtime, "gpu_available", lambda: True)
    monkeypatch.setattr(TC, "accelerators", lambda: [TC.Accelerator("Tesla T4", (7, 5))])
    assert config.default_profile_name() == "gpu"
    cfg = TC.train_config(config.resolve_profile(config.default_profile_name()))
    line = T.training_plan(cfg, cache_dir=tmp_path)
    assert cfg.steps == TC.SYNTHETIC_GPU_STEPS == 6000 and cfg.stages == 6
    assert "6,000 steps of 16 images" in line and "Colab T4" in line and " min " in line, line

