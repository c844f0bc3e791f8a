"""The fault suite, the file layer: atomic writes, unreadable data files, where files go,
output checks and locks.

Shared fixtures: tests/faults/conftest.py; bad inputs: tests/fault_kit.py."""

from __future__ import annotations

import errno

import pytest
from fault_kit import (
    leftovers,
    snapshot,
)

from cpm_nb.core import errors, files, paths
from cpm_nb.data import mpii, synthetic


def test_atomic_write_that_fails_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "meta.json"
    files.atomic_write_json(target, {"good": True})
    before = snapshot(target)

    def no_rename(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(files.os, "replace", no_rename)
    with pytest.raises(OSError):
        files.atomic_write_json(target, {"good": False})
    assert snapshot(target) == before and not leftovers(tmp_path)


def test_atomic_output_removes_its_temp_file_when_the_block_fails(tmp_path):
    target = tmp_path / "overlay.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), files.atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("the writer crashed")
    assert target.read_bytes() == b"old" and not leftovers(tmp_path)




def test_unreadable_data_files_raise_data_errors(tmp_path):
    bad = tmp_path / "people.json"
    bad.write_text('{"format": "cpm-nb-annotations", "people": [{"image": "a.jpg"}]}')
    with pytest.raises(mpii.MpiiFormatError, match="person record is malformed"):
        mpii.read_json(bad)
    bad.write_text('{"trunc')
    with pytest.raises(errors.DataError, match="people.json is unreadable or corrupt"):
        files.read_json(bad)



# === 9. where files go ======================================================================================


def test_the_working_directory_is_never_the_data_folder(tmp_path, monkeypatch):
    project = tmp_path / "my_project"  # looks like a checkout, but the package is not in it
    (project / "notebooks").mkdir(parents=True)
    (project / "pyproject.toml").write_text('[project]\nname = "my-project"\n')
    monkeypatch.chdir(project)
    for var in ("CPM_NB_DATA", "CPM_NB_RUNS", "CPM_NB_FIGURES"):
        monkeypatch.delenv(var, raising=False)
    for folder in (paths.data_root(), paths.runs_root(), paths.figures_root(),
                   synthetic.data_dir()):
        assert not folder.resolve().is_relative_to(project.resolve()), folder


def test_outside_a_checkout_everything_goes_to_the_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "checkout_root", lambda: None)
    monkeypatch.setattr(paths, "COLAB_DRIVE", tmp_path / "no-drive")
    for var in ("CPM_NB_DATA", "CPM_NB_RUNS", "CPM_NB_FIGURES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = tmp_path / "xdg" / "cpm_nb"
    assert paths.cache_root() == cache and paths.data_root() == cache
    assert paths.runs_root() == cache / "runs" and paths.figures_root() == cache / "figures"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored (XDG spec)
    assert paths.cache_root() == paths.Path.home() / ".cache" / "cpm_nb"


def test_environment_variables_choose_the_folders(tmp_path, monkeypatch):
    for var, fn in (("CPM_NB_DATA", paths.data_root), ("CPM_NB_RUNS", paths.runs_root),
                    ("CPM_NB_FIGURES", paths.figures_root)):
        monkeypatch.setenv(var, str(tmp_path / var))
        assert fn() == tmp_path / var


# === the Python API: output checks and locks ===================================================================


@pytest.mark.parametrize("kind, make, message", [
    ("file", "dir", "is a folder"),
    ("dir", "file", "is a file, not a folder"),
    ("file", "under-file", "is a file, not a folder"),
])
def test_check_output_path(tmp_path, kind, make, message):
    thing = tmp_path / "thing"
    if make == "dir":
        thing.mkdir()
    else:
        thing.write_text("x")
    target = thing / "out.json" if make == "under-file" else thing
    with pytest.raises(errors.DataError, match=message):
        files.check_output_path(target, kind, "--out")
    assert files.check_output_path(tmp_path / "new" / "deeper", "dir") == \
        tmp_path / "new" / "deeper"


def test_folder_lock_is_reentrant_in_one_thread(tmp_path):
    with files.locked(tmp_path), files.locked(tmp_path):
        assert (tmp_path / ".lock").exists()
    assert not (tmp_path / ".lock").exists()  # released: no lock file left behind
    with files.locked(tmp_path):  # released: can be taken again
        pass
