"""Course conventions every notebook keeps (nbval itself runs the notebooks)."""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import cpm_nb
from cpm_nb.core import paths
from cpm_nb.core.errors import ConfigError, DataError
from cpm_nb.course import notebooks, source
from cpm_nb.course.notebooks import cell_signature

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_jupytext_pair_in_sync(path):
    jupytext = pytest.importorskip("jupytext")
    twin = path.with_suffix(".py")
    assert twin.exists(), f"{twin.name} missing: jupytext --set-formats ipynb,py:percent {path}"
    notebook, script = jupytext.read(path), jupytext.read(twin)
    assert cell_signature(notebook) == cell_signature(script), (
        f"{path.name} and {twin.name} differ: run jupytext --sync {path}"
    )
    for key in ("accelerator", "colab"):  # what Colab reads from the .ipynb
        assert notebook.metadata.get(key) == script.metadata.get(key), (
            f"{path.name} and {twin.name} differ in metadata '{key}': run jupytext --sync {path}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_conventions(path):
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    first = "".join(cells[0]["source"])
    assert first.startswith(f"# {path.stem[:2]} · "), "first cell: '# NN · Title'"
    assert source.pinned(REPO).badge_url(path.name) in first
    code = [c for c in cells if c["cell_type"] == "code"]
    setup = "".join(code[0]["source"])
    assert '"google.colab" in sys.modules' in setup and "cpm_nb.setup(" in setup
    assert setup.startswith("# NBVAL_IGNORE_OUTPUT")
    sources = [("".join(c["source"])) for c in cells]
    assert any(s.startswith("## Summary") for s in sources), "a Summary section"
    assert any("## Exercises" in s for s in sources), "an Exercises section"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_are_fresh_and_small(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    unexecuted = [i for i, c in enumerate(code) if c["execution_count"] is None]
    assert not unexecuted, f"code cells {unexecuted} have no stored execution: cpm-nb notebooks --refresh"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "execute top to bottom in one run"
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors
    assert path.stat().st_size < 3_000_000


# === the install cell: one source, an uploaded wheel first, one line when it fails ============

GPU_NOTEBOOKS = ("04", "05", "06", "07")  # training or running the full model


def first_code_cell(path: Path) -> str:
    jupytext = pytest.importorskip("jupytext")
    return next(c for c in jupytext.read(path.with_suffix(".py")).cells
                if c.cell_type == "code").source


def install_cell(path: Path) -> str:
    """The first code cell's source up to ``import cpm_nb`` (the Colab install part)."""
    return first_code_cell(path).split("\nimport cpm_nb")[0]


def test_one_source_everywhere():
    """Install cells, badges (notebooks and README) and pyproject.toml name one source, whose
    tag is this version's; the install part of every first cell is the same text."""
    assert source.disagreements(REPO) == []
    pinned = source.pinned(REPO)
    assert pinned.ref == f"v{cpm_nb.__version__}" or not re.fullmatch(r"v\d.*", pinned.ref)
    assert len({install_cell(path) for path in NOTEBOOKS}) == 1, "install cells differ"
    assert 'f"cpm-nb @ git+https://github.com/{CPM_NB_SOURCE}"' in install_cell(NOTEBOOKS[0])
    assert source.main([]) == 0


def test_a_fork_rewrites_every_place_and_back(tmp_path, capsys):
    """``python -m cpm_nb.course.source OWNER/NAME@REF`` points everything at a fork (pairs
    still in sync, outputs kept); pointing back restores the files byte for byte."""
    jupytext = pytest.importorskip("jupytext")
    shutil.copytree(REPO / "notebooks", tmp_path / "notebooks")
    for name in ("README.md", "pyproject.toml", "cpm_nb/__init__.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, tmp_path / name)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    original = source.pinned(tmp_path)
    assert source.main(["--root", str(tmp_path), "me/cpm-fork@my-branch"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "source: me/cpm-fork@my-branch"
    assert source.pinned(tmp_path) == source.Source("me/cpm-fork", "my-branch")
    assert source.disagreements(tmp_path) == []
    for path in sorted((tmp_path / "notebooks").glob("*.ipynb")):
        pair = jupytext.read(path), jupytext.read(path.with_suffix(".py"))
        assert cell_signature(pair[0]) == cell_signature(pair[1])
        assert 'CPM_NB_SOURCE = "me/cpm-fork@my-branch"' in "".join(
            c.source for c in pair[0].cells)
        stored = json.loads(path.read_text())
        assert stored["cells"] and all(c.get("outputs") == o.get("outputs") for c, o in zip(
            stored["cells"], json.loads(before[path])["cells"]))
    pyproject = (tmp_path / "pyproject.toml").read_text()
    assert 'Source = "https://github.com/me/cpm-fork"' in pyproject
    assert "github.com/cpm-nb/cpm-nb" not in pyproject
    readme = (tmp_path / "README.md").read_text()
    assert readme.count("colab.research.google.com/github/me/cpm-fork/blob/my-branch/") == 7
    assert source.main(["--root", str(tmp_path), str(original)]) == 0
    assert {p: p.read_bytes() for p in before} == before
    with pytest.raises(ConfigError, match="OWNER/NAME@REF"):
        source.parse("not a repo", "0.1.0")


FRESH_COLAB = """
import importlib.metadata, sys, types
sys.modules["google.colab"] = types.ModuleType("google.colab")  # what the install cell asks
_all = importlib.metadata.distributions  # a fresh runtime: no cpm-nb installed yet
importlib.metadata.distributions = lambda **kw: [
    d for d in _all(**kw) if d.metadata["Name"] != "cpm-nb"]
"""


def run_in_fake_colab(cells: list[str], folder: Path, timeout: int = 120):
    """Execute ``cells`` after :data:`FRESH_COLAB` in a real IPython kernel started in
    ``folder``: the notebook as nbclient left it, and the error that stopped it (or None)."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s)
                                         for s in (FRESH_COLAB, *cells)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(folder)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:
        return nb, err
    return nb, None


@pytest.fixture
def offline_pip(monkeypatch, tmp_path):
    """pip and git for the kernels: no package index, no network (every GitHub URL is
    redirected to a folder that does not exist), installs into a throwaway target."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_NO_DEPS", "1")
    monkeypatch.setenv("PIP_TARGET", str(tmp_path / "target"))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.file://{tmp_path}/no-such-host/.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", "https://github.com/")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    return tmp_path / "target"


def test_a_failed_install_is_one_line_and_a_clean_stop(tmp_path, offline_pip):
    """The real first cell of notebook 01 in a fake Colab kernel whose git source cannot be
    reached (no wheel uploaded): real pip and git fail, the cell prints one line that says
    what failed and the way out, and the notebook stops there (the next cell never runs)."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    cell = first_code_cell(NOTEBOOKS[0])
    nb, err = run_in_fake_colab([cell, 'print("the next cell ran")'], tmp_path)
    assert err is not None, "the notebook did not stop"
    install, after = nb.cells[1], nb.cells[2]
    assert after.execution_count is None and after.outputs == []
    (shown,) = install.outputs  # nothing but the error: no pip output, no traceback wall
    assert shown.output_type == "error" and shown.ename == "InstallFailed"
    (line,) = shown.traceback  # what Jupyter and Colab display
    pinned = source.pinned(REPO)
    assert line == shown.evalue
    assert line.startswith(f"pip could not install {pinned.pip_requirement} (fatal: ")
    assert "does not appear to be a git repository" in line
    assert line.endswith("): upload the wheel that `python -m build` makes to /content, or "
                         "set CPM_NB_SOURCE to a fork")
    assert not offline_pip.exists()
    print(f"\nwhat the learner sees:\n{line}")


def test_an_uploaded_wheel_is_installed_first(tmp_path, offline_pip, built_wheel):
    """A ``cpm_nb-*.whl`` in the working directory wins over the (unreachable) git source:
    real pip installs the wheel built from this checkout into a throwaway target."""
    shutil.copy2(built_wheel, tmp_path / built_wheel.name)
    nb, err = run_in_fake_colab([install_cell(NOTEBOOKS[0])], tmp_path)
    assert err is None, err
    (printed,) = nb.cells[1].outputs
    assert printed.text == f"installed {built_wheel.name}; no restart needed\n"
    assert (offline_pip / "cpm_nb" / "__init__.py").is_file()
    assert (offline_pip / f"cpm_nb-{cpm_nb.__version__}.dist-info" / "METADATA").is_file()


def exec_install_cell(source_text: str, monkeypatch, installed: bool, pip_stdout: str = ""):
    """Execute the install part in this process as on Colab with pip replaced by a recorder:
    a real install cannot replace numpy here (the restart message's case)."""
    calls = []

    def fake_pip(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, pip_stdout, "")

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", fake_pip)
    if not installed:
        from importlib import metadata

        every = metadata.distributions
        monkeypatch.setattr(metadata, "distributions", lambda **kw: [
            d for d in every(**kw) if d.metadata["Name"] != "cpm-nb"])
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(source_text, "<install cell>", "exec"), {})
    return calls, output.getvalue()


def test_install_cell_installs_once_per_runtime_and_says_when_to_restart(monkeypatch,
                                                                          tmp_path):
    monkeypatch.chdir(tmp_path)  # no wheel here
    cell = install_cell(NOTEBOOKS[0])
    calls, printed = exec_install_cell(cell, monkeypatch, installed=True)
    assert calls == [] and printed == ""  # this version is installed: nothing to do
    requirement = source.pinned(REPO).pip_requirement
    calls, printed = exec_install_cell(cell, monkeypatch, installed=False, pip_stdout=(
        f"Collecting {requirement}\nSuccessfully installed cpm-nb-{cpm_nb.__version__}\n"))
    assert [c[-1] for c in calls] == [requirement]
    assert printed == f"installed {requirement}; no restart needed\n"
    calls, printed = exec_install_cell(cell, monkeypatch, installed=False, pip_stdout=(
        "  Attempting uninstall: numpy\n    Found existing installation: numpy 1.26.4\n"
        "    Uninstalling numpy-1.26.4:\n  Attempting uninstall: keras\n"
        "    Found existing installation: keras 3.8.0\n"))
    assert printed == ("restart the runtime (Runtime > Restart session): pip replaced "
                       "['numpy', 'keras']\n")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_gpu_notebooks_ask_colab_for_a_gpu(path):
    jupytext = pytest.importorskip("jupytext")
    metadata = jupytext.read(path.with_suffix(".py")).metadata
    if path.stem[:2] in GPU_NOTEBOOKS:
        assert metadata.get("accelerator") == "GPU", f"{path.name}: accelerator: GPU"
        assert metadata.get("colab", {}).get("gpuType") == "T4", f"{path.name}: colab.gpuType T4"
    else:
        assert "accelerator" not in metadata


# === cpm-nb notebooks: progress, the [dev] extra, nothing tracked written =====================


def test_missing_dev_extra_is_one_line_naming_the_install_command():
    code = ("import sys; sys.modules['nbclient'] = None; from cpm_nb.cli.app import main; "
            "sys.exit(main(['notebooks', '01']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("cpm-nb notebooks: error: ") and "nbclient" in lines[0]
    assert 'pip install -e ".[dev]"' in lines[0]


def test_require_runner_names_every_missing_module(monkeypatch):
    for name in ("jupytext", "ipykernel"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(notebooks.MissingRunnerError, match="jupytext, ipykernel"):
        notebooks.require_runner()


def test_plain_runs_write_only_untracked_places(monkeypatch):
    monkeypatch.delenv("CPM_NB_FIGURES", raising=False)
    assert paths.figures_root() == REPO / "build" / "figures"
    assert paths.stored_figures_dir() == REPO / "figures"
    assert notebooks.default_out_dir() == REPO / "build" / "notebooks"
    if shutil.which("git") and (REPO / ".git").exists():
        probe = ["build/figures/01_photo.png", "build/notebooks/01_x.ipynb"]
        ignored = subprocess.run(["git", "check-ignore", *probe], cwd=REPO, capture_output=True,
                                 text=True).stdout.split()
        assert ignored == probe, "build/ must be in .gitignore"


def tiny_notebook(folder: Path, name: str = "99_tiny") -> Path:
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 99 · tiny"),
        nbformat.v4.new_code_cell('import os\nprint("figures:", os.environ["CPM_NB_FIGURES"])'),
        nbformat.v4.new_code_cell('import time\ntime.sleep(1.2)\nprint("one\\ntwo")'),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def test_progress_lines_echo_and_heartbeat(tmp_path, monkeypatch):
    source = tiny_notebook(tmp_path)
    before = source.read_bytes()
    monkeypatch.setattr(notebooks, "HEARTBEAT_S", 0.4)
    log = io.StringIO()
    target = tmp_path / "out" / source.name
    notebooks.run_notebook(source, target, refresh=False, profile="fast", timeout=60, log=log)
    lines = log.getvalue().splitlines()
    assert lines[0] == f"      figures: {paths.figures_root()}"  # the cell's print, indented
    assert re.fullmatch(r"  \[99\] cell 1/2  \d+\.\d s", lines[1])
    assert any(re.fullmatch(r"  \[99\] cell 2/2  still running, \d+ s so far", x) for x in lines)
    assert lines[-3:-1] == ["      one", "      two"]
    assert re.fullmatch(r"  \[99\] cell 2/2  \d+\.\d s", lines[-1])
    assert source.read_bytes() == before  # a plain run leaves the source alone
    executed = json.loads(target.read_text())
    assert [c["execution_count"] for c in executed["cells"][1:]] == [1, 2]


def test_notebooks_named_by_file_or_folder_run_without_a_checkout(tmp_path, monkeypatch,
                                                                    capsys):
    """An installed wheel has no checkout: `cpm-nb notebooks FILE|FOLDER` runs notebooks
    given by path, writing into the cache unless --out says where."""
    from cpm_nb.cli import app as cli

    folder = tmp_path / "course"
    folder.mkdir()
    first, second = tiny_notebook(folder, "98_tiny"), tiny_notebook(folder, "99_tiny")
    monkeypatch.setattr(paths, "checkout_root", lambda: None)  # as for a wheel install
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert notebooks.notebook_paths([str(second)]) == [second]
    assert notebooks.notebook_paths([str(folder)]) == [first, second]
    assert notebooks.default_out_dir() == tmp_path / "cache" / "cpm_nb" / "notebooks"
    with pytest.raises(DataError, match="no notebook at"):
        notebooks.notebook_paths([str(folder / "00_missing.ipynb")])
    with pytest.raises(DataError, match="not in a cpm-nb checkout"):
        notebooks.notebook_paths(["01"])
    assert cli.main(["notebooks", str(first), "--out", str(folder)]) == 2
    assert "--out is the folder of the notebooks themselves" in capsys.readouterr().err
    assert cli.main(["--profile", "fast", "notebooks", str(first)]) == 0
    out = capsys.readouterr().out
    assert f"-> {tmp_path / 'cache' / 'cpm_nb' / 'notebooks' / first.name}" in out
    executed = json.loads((tmp_path / "cache" / "cpm_nb" / "notebooks" / first.name).read_text())
    assert [c["execution_count"] for c in executed["cells"][1:]] == [1, 2]


def test_refresh_runs_in_place_with_the_stored_figures_folder(tmp_path):
    source = tiny_notebook(tmp_path)
    notebooks.run_notebook(source, source, refresh=True, profile="fast", timeout=60, log=None)
    cells = json.loads(source.read_text())["cells"]
    assert "".join(cells[1]["outputs"][0]["text"]) == f"figures: {REPO / 'figures'}\n"


def test_a_refresh_from_the_text_side_keeps_the_cell_ids(tmp_path):
    """Cells whose source did not change keep their ids, so a re-execution's diff shows
    only what changed; an edited cell gets a new one."""
    jupytext = pytest.importorskip("jupytext")
    source = tiny_notebook(tmp_path)
    before = [c["id"] for c in json.loads(source.read_text())["cells"]]
    text = jupytext.writes(jupytext.read(source), "py:percent")
    twin = source.with_suffix(".py")
    twin.write_text(text.replace("time.sleep(1.2)", "time.sleep(0.1)"))
    newer = source.stat().st_mtime + 10
    os.utime(twin, (newer, newer))  # the text side was edited last
    notebook = notebooks.read_newer_side(source)
    after = [c["id"] for c in notebook.cells]
    assert after[:2] == before[:2] and after[2] != before[2]

