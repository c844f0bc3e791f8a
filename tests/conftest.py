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
