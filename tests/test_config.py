"""Profiles: names, sizes, selection by environment variable."""

import pytest

from cpm_nb.core import config


def test_three_profiles_with_consistent_sizes():
    assert config.profile_names() == ["fast", "cpu", "gpu"]
    for profile in config.PROFILES.values():
        assert profile.input_size % config.OUTPUT_STRIDE == 0
        assert profile.map_size == profile.input_size // 8
        assert profile.stages >= 2 and 0 < profile.width <= 1
    gpu = config.PROFILES["gpu"]
    assert (gpu.input_size, gpu.map_size, gpu.stages, gpu.width) == (368, 46, 6, 1.0)


def test_profiles_grow_from_fast_to_gpu():
    fast, cpu, gpu = (config.PROFILES[n] for n in ("fast", "cpu", "gpu"))
    for field in ("input_size", "stages", "n_train", "train_steps"):
        assert getattr(fast, field) <= getattr(cpu, field) <= getattr(gpu, field), field


def test_unknown_profile_names_the_valid_ones():
    with pytest.raises(config.ProfileError, match="valid profiles: fast, cpu, gpu"):
        config.resolve_profile("nonsense")


def test_environment_variable_selects_profile(monkeypatch):
    monkeypatch.setenv(config.PROFILE_ENV, "gpu")
    assert config.default_profile_name() == "gpu"
    monkeypatch.setenv(config.PROFILE_ENV, "")
    assert config.default_profile_name() == "cpu"  # no GPU on the test machines


def test_set_profile_and_replace(monkeypatch):
    monkeypatch.setattr(config, "_active", None)
    assert config.set_profile("cpu").name == "cpu"
    assert config.get_profile().name == "cpu"
    smaller = config.get_profile().replace(stages=4)
    assert smaller.stages == 4 and config.get_profile().stages == 2


def test_runtime_reads_no_profile():
    """config imports runtime (to look for a GPU); runtime never imports config: no cycle,
    and the profile reaches session.describe/setup as an argument."""
    import subprocess
    import sys

    code = "import sys, cpm_nb.core.runtime; print('cpm_nb.core.config' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
