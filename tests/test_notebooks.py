"""Course conventions every notebook keeps (nbval itself runs the notebooks)."""

import json
from pathlib import Path

import pytest

from cpm_nb.notebooks import cell_signature

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks/NN_*.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_jupytext_pair_in_sync(path):
    jupytext = pytest.importorskip("jupytext")
    twin = path.with_suffix(".py")
    assert twin.exists(), f"{twin.name} missing: jupytext --set-formats ipynb,py:percent {path}"
    assert cell_signature(jupytext.read(path)) == cell_signature(jupytext.read(twin)), (
        f"{path.name} and {twin.name} differ: run jupytext --sync {path}"
    )


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
    assert not unexecuted, f"code cells {unexecuted} have no stored execution: cpm-nb notebooks"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), "execute top to bottom in one run"
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors
    assert path.stat().st_size < 3_000_000
