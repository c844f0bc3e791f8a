"""The cpm-nb entry point: info, help, and one-line errors."""

import json
import os
import subprocess
import sys


def run_cli(*args, env=None):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cpm_nb", *args], capture_output=True,
                          text=True, env=full_env, timeout=120)


def test_info_prints_versions_backend_devices_profile():
    result = run_cli("info", env={"CPM_NB_PROFILE": "fast"})
    assert result.returncode == 0, result.stderr
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")  # the tests also run under jax
    for fact in ("cpm_nb 0.1.0", "tensorflow", "keras", f"Keras backend: {backend}", "CPU:0",
                 "profile: fast"):
        assert fact in result.stdout
    assert result.stderr == ""  # TensorFlow's native start-up chatter is kept out


def test_info_json():
    result = run_cli("--profile", "cpu", "info", "--json")
    info = json.loads(result.stdout)
    assert info["profile"] == "cpu" and info["profile_sizes"]["input_size"] == 128
    assert info["keras_backend"] == os.environ.get("KERAS_BACKEND", "tensorflow")


def test_unknown_subcommand_is_one_line_with_choices():
    result = run_cli("frobnicate")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "invalid choice: 'frobnicate'" in lines[0] and "'info'" in lines[0]


def test_bad_profile_is_one_line_with_choices():
    result = run_cli("info", env={"CPM_NB_PROFILE": "nonsense"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown profile 'nonsense'" in lines[0]
    assert "fast, cpu, gpu" in lines[0]


def test_help_lists_subcommands():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "info" in result.stdout and "notebooks" in result.stdout and "profiles" in result.stdout
