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
from cpm_nb.course import notebooks
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
    assert f"colab.research.google.com/github/cpm-nb/cpm-nb/blob/main/notebooks/{path.name}" in first
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


# === the install cell: one pin, installed once per runtime, says whether to restart ===========

GPU_NOTEBOOKS = ("04", "05", "06", "07")  # training or running the full model


def install_cell(path: Path) -> str:
    """The first code cell's source up to ``import cpm_nb`` (the Colab install part)."""
    jupytext = pytest.importorskip("jupytext")
    first = next(c for c in jupytext.read(path.with_suffix(".py")).cells if c.cell_type == "code")
    return first.source.split("\nimport cpm_nb")[0]


def pinned_ref(path: Path) -> str:
    refs = re.findall(r'^CPM_NB_REF = "([^"]+)"', install_cell(path), re.MULTILINE)
    assert len(refs) == 1, f"{path.name}: the install cell sets CPM_NB_REF once"
    return refs[0]


def test_every_install_cell_pins_the_package_release():
    refs = {path.stem[:2]: pinned_ref(path) for path in NOTEBOOKS}
    assert set(refs.values()) == {f"v{cpm_nb.__version__}"}, (
        f"CPM_NB_REF must be 'v{cpm_nb.__version__}' (cpm_nb.__version__'s tag) everywhere: {refs}")
    for path in NOTEBOOKS:
        assert "git+https://github.com/cpm-nb/cpm-nb@{CPM_NB_REF}" in install_cell(path)


def run_install_cell(source: str, monkeypatch) -> tuple[list, str]:
    """Execute the install part as on Colab, pip replaced by a recorder (no network)."""
    calls = []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(source, "<install cell>", "exec"), {})
    return calls, output.getvalue()


def test_install_cell_installs_once_per_runtime(monkeypatch):
    source = install_cell(NOTEBOOKS[0])
    calls, printed = run_install_cell(source, monkeypatch)  # this version is installed
    assert calls == [] and printed == ""
    other = source.replace(f'"{pinned_ref(NOTEBOOKS[0])}"', '"v999.0"')
    calls, printed = run_install_cell(other, monkeypatch)
    assert len(calls) == 1 and calls[0][-1] == "cpm-nb @ git+https://github.com/cpm-nb/cpm-nb@v999.0"
    assert printed.strip() == "installed cpm-nb v999.0; no restart needed"  # pip changed nothing


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

