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
