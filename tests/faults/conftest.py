"""Fixtures of the fault suite (tests/faults/), shared by its files; the bad inputs and
checks are in tests/fault_kit.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: fault_kit

from fault_kit import good_images, make_mpii, make_run_folder, run  # noqa: E402


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return make_run_folder(tmp_path_factory.mktemp("run"))


@pytest.fixture
def synthetic_copy(synthetic_master, tmp_path, monkeypatch):
    """A private copy of the prepared synthetic set: (data root, set folder, tfrecords)."""
    from cpm_nb.core.config import get_profile
    from cpm_nb.data.synthetic_set import SyntheticSpec

    root = tmp_path / "data"
    shutil.copytree(synthetic_master, root)
    monkeypatch.setenv("CPM_NB_DATA", str(root))
    spec = SyntheticSpec.from_profile(get_profile())
    return root, spec.root, spec.tfrecord_dir


@pytest.fixture
def prepared_mpii(tmp_path, capsys):
    """A good `prepare mpii` output: (argv, its tfrecords folder)."""
    argv = make_mpii(tmp_path, good_images())
    code, _, err = run(argv, capsys)
    assert code == 0, err
    return argv, tmp_path / "root" / "tfrecords-32"
