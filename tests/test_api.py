"""The public API: the names of `import cpm_nb` and of each subpackage's `__all__` exist,
none hides a module, importing the package stays cheap, and the README's "From Python"
section uses only those names."""

import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import cpm_nb

REPO = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("model", "data", "training", "evaluation", "inference", "caffe")


def test_every_public_name_of_the_package_exists():
    for name in cpm_nb.__all__:
        assert getattr(cpm_nb, name) is not None, name
    assert set(cpm_nb.__all__) <= set(dir(cpm_nb))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        cpm_nb.nothing  # noqa: B018


@pytest.mark.parametrize("sub", SUBPACKAGES)
def test_every_subpackage_names_its_public_api(sub):
    package = importlib.import_module(f"cpm_nb.{sub}")
    modules = {p.stem for p in (REPO / "cpm_nb" / sub).glob("*.py")}
    assert package.__all__ and not set(package.__all__) & modules  # no name hides a module
    for name in package.__all__:
        assert getattr(package, name) is not None, name


def test_import_cpm_nb_is_cheap():
    code = ("import sys, cpm_nb\n"
            "print(sorted(m for m in sys.modules if m.startswith(('cpm_nb.', 'tensorflow', "
            "'keras', 'jax'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_the_readme_uses_the_public_names():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## From Python"):]
    section = section[:section.index("\n## ", 3)]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    compile(code, "README.md", "exec")
    used = set(re.findall(r"cpm_nb\.(\w+)\(", code))
    listed = {n for row in re.findall(r"^\| (`.*?) \|", section, re.M)
              for n in re.findall(r"`(\w+)`", row)}
    assert used and used <= set(cpm_nb.__all__), used - set(cpm_nb.__all__)
    assert listed and listed <= set(cpm_nb.__all__), listed - set(cpm_nb.__all__)
