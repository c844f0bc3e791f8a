"""Shared fixtures for the unit tests."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MPII_REFERENCE = REPO.parent / "shared" / "mpii_reference"


@pytest.fixture
def mpii_reference() -> Path:
    """``../shared/mpii_reference`` (real MPII annotation files); skips when absent."""
    if not (MPII_REFERENCE / "detections.mat").is_file():
        pytest.skip(f"real MPII reference files not found at {MPII_REFERENCE}")
    return MPII_REFERENCE


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="module")
def synthetic_master(tmp_path_factory):
    """The fast profile's synthetic set with its TFRecords, prepared once per test module."""
    from cpm_nb.cli import app as cli

    root = tmp_path_factory.mktemp("syn")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CPM_NB_DATA", str(root))
        assert cli.main(["prepare", "synthetic", "--quiet"]) == 0
    return root


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The wheel of this checkout, built once per session from a copy of its package files
    (so no stale ``build/`` folder can leak into it): offline (no build isolation, no index)
    when this environment's setuptools can build it, else in pip's isolated build
    environment (needs an index; skipped where none answers)."""
    import shutil
    import subprocess
    import sys
    from importlib import metadata

    src = tmp_path_factory.mktemp("wheel_src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "cpm_nb", src / "cpm_nb",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    offline = int(metadata.version("setuptools").split(".")[0]) >= 77  # pyproject's requires
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(src), "-w", str(out)]
    done = subprocess.run(cmd + (["--no-build-isolation", "--no-index"] if offline else []),
                          capture_output=True, text=True, timeout=600)
    if done.returncode and not offline:
        pytest.skip("cannot build the wheel: this environment's setuptools is older than 77 "
                    f"and pip's isolated build failed ({done.stderr.strip()[-300:]})")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (wheel,) = out.glob("cpm_nb-*.whl")
    return wheel


@pytest.fixture(scope="session")
def keras():
    from cpm_nb.core.runtime import import_keras

    return import_keras()


@pytest.fixture(scope="session")
def fast_run(tmp_path_factory, keras):
    """One uninterrupted fast-profile run (20 steps), shared by several test modules."""
    from cpm_nb.core.config import resolve_profile
    from cpm_nb.training import config as TC
    from cpm_nb.training import loop as T

    out = tmp_path_factory.mktemp("fast_run")
    cfg = TC.train_config(resolve_profile("fast"), checkpoint_every=5)
    result = T.train(cfg, out, progress=False, verbose=False)
    return cfg, out, result
