"""The fault suite, `cpm-nb notebooks`: names and --out checked before any work, a corrupt
notebook and a failing cell as one line (the executed copy of a failed run kept), and a
refresh that commits tracked files only at the end.

Shared fixtures: tests/faults/conftest.py; bad inputs: tests/fault_kit.py."""

from __future__ import annotations

import json

import pytest
from fault_kit import one_line_error, run, snapshot

from cpm_nb.core import paths
from cpm_nb.course import notebooks


def _notebook(folder, name, *sources):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = folder / f"{name}.ipynb"
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _never_run(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a notebook ran before the arguments were checked")

    monkeypatch.setattr(notebooks, "run_notebook", never)


def test_an_empty_name_is_an_error_not_all_notebooks(capsys, monkeypatch):
    _never_run(monkeypatch)
    code, _, err = run(["notebooks", ""], capsys)
    assert code == 2
    one_line_error(err, "an empty notebook name")


def test_out_that_is_a_file_fails_before_any_notebook_runs(tmp_path, capsys, monkeypatch):
    _never_run(monkeypatch)
    target = tmp_path / "a-file"
    target.write_text("keep me")
    code, _, err = run(["notebooks", "01", "--out", target], capsys)
    assert code == 2 and target.read_text() == "keep me"
    one_line_error(err, "--out", "is a file, not a folder")


def test_a_corrupt_notebook_is_one_line(tmp_path, capsys):
    pytest.importorskip("nbformat")
    bad = tmp_path / "98_bad.ipynb"
    bad.write_text('{"cells": [')
    code, _, err = run(["notebooks", bad, "--out", tmp_path / "out"], capsys)
    assert code == 2
    one_line_error(err, "98_bad.ipynb is not a readable notebook")


def test_a_failing_cell_is_one_line_and_its_executed_copy_is_kept(tmp_path, capsys):
    source = _notebook(tmp_path / "course", "97_fails", "print('before')", "1 / 0")
    out = tmp_path / "out"
    code, _, err = run(["--profile", "fast", "notebooks", source, "--out", out], capsys)
    assert code == 2
    one_line_error(err, "97_fails.ipynb: a cell failed: ZeroDivisionError",
                   f"the executed copy, with the error, is {out / source.name}")
    executed = json.loads((out / source.name).read_text())
    assert executed["cells"][0]["outputs"][0]["text"] == ["before\n"]
    assert executed["cells"][1]["outputs"][0]["ename"] == "ZeroDivisionError"


def test_a_failed_refresh_leaves_tracked_figures_and_notebooks_alone(tmp_path, capsys,
                                                                     monkeypatch):
    """The first notebook rewrites a figure, the second fails: figures/ and both notebooks
    are byte-identical afterwards (the refresh commits only at the end)."""
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "plot.png").write_bytes(b"the stored figure")
    monkeypatch.setattr(paths, "stored_figures_dir", lambda: figures)
    monkeypatch.setattr(notebooks, "default_out_dir", lambda: tmp_path / "build")
    course = tmp_path / "course"
    draws = ("import os, pathlib\n"
             "pathlib.Path(os.environ['CPM_NB_FIGURES'], 'plot.png').write_bytes(b'new')")
    first = _notebook(course, "96_draws", draws)
    second = _notebook(course, "97_fails", "1 / 0")
    before = snapshot(figures, course)
    code, _, err = run(["--profile", "fast", "notebooks", "--refresh", first, second], capsys)
    assert code == 2
    last = err.strip().splitlines()[-1]  # after jupytext's notes on the unpaired notebooks
    one_line_error(last, "97_fails.ipynb: a cell failed", "nothing tracked was changed")
    after = snapshot(figures, course)
    assert {k: after.get(k) for k in before} == before
    assert (tmp_path / "build" / "97_fails.ipynb").is_file()  # the failed copy, untracked
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".figures")]


def test_a_refresh_that_succeeds_commits_figures_and_notebooks(tmp_path, capsys, monkeypatch):
    figures = tmp_path / "figures"
    monkeypatch.setattr(paths, "stored_figures_dir", lambda: figures)
    draws = ("import os, pathlib\n"
             "pathlib.Path(os.environ['CPM_NB_FIGURES'], 'plot.png').write_bytes(b'new')")
    first = _notebook(tmp_path / "course", "96_draws", draws)
    code, _, err = run(["--profile", "fast", "notebooks", "--refresh", first], capsys)
    assert code == 0, err
    assert (figures / "plot.png").read_bytes() == b"new"
    assert json.loads(first.read_text())["cells"][0]["execution_count"] == 1


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_an_interrupted_notebook_run_exits_130(tmp_path, signum):
    """A real `cpm-nb notebooks` process, stopped while a cell runs: one line, status 130
    (not the DeadKernelError of the kernel that died with it)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    source = _notebook(tmp_path / "course", "95_slow", "print('started', flush=True)",
                       "import time\ntime.sleep(60)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "cpm_nb", "--profile", "fast", "notebooks",
                             str(source), "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # wait until the kernel runs the slow cell
        if "started" in line or time.monotonic() > deadline:
            break
    time.sleep(0.5)
    if signum == "SIGINT":  # Ctrl-C reaches the whole group, the kernel too
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("cpm-nb notebooks: error: interrupted")
