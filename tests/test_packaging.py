"""pyproject.toml and environment.yml install the same packages."""

import re

import pytest

tomllib = pytest.importorskip("tomllib")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement.strip(), maxsplit=1)[0].lower()


def _pyproject_requirements(repo) -> set[str]:
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    return {r.replace(" ", "") for r in requirements}


def _environment_pip_requirements(repo) -> set[str]:
    lines = (repo / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    reqs = set()
    for line in lines[start + 1:]:
        item = line.strip()
        if not item.startswith("- "):
            break
        item = item[2:].strip()
        if not item.startswith("-e"):
            reqs.add(item.replace(" ", ""))
    return reqs


def test_environment_yml_matches_pyproject(repo):
    ours, conda = _pyproject_requirements(repo), _environment_pip_requirements(repo)
    assert ours == conda, (
        f"only in pyproject.toml: {sorted(ours - conda)}; only in environment.yml: {sorted(conda - ours)}"
    )


def test_runtime_dependencies_have_lower_bounds_only(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        assert "<" not in requirement and "==" not in requirement, requirement
    names = {_name(r) for r in project["dependencies"]}
    assert "tensorflow" in names and "tensorflow-cpu" not in names
    assert {"keras", "numpy", "scipy", "matplotlib", "ipywidgets", "h5py", "tqdm"} <= names


def test_extras_and_console_script(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    dev = {_name(r) for r in project["optional-dependencies"]["dev"]}
    assert {"pytest", "nbval", "jupytext", "ipykernel", "ruff"} <= dev
    assert {_name(r) for r in project["optional-dependencies"]["lab"]} == {"jupyterlab"}
    assert project["scripts"]["cpm-nb"] == "cpm_nb.cli:main"
    assert project["requires-python"] == ">=3.10"


def test_the_wheel_holds_every_package_file_and_the_licence(repo, built_wheel):
    """What `python -m build` ships: every file tracked under cpm_nb/ (code, the committed
    results, presets), the LICENSE, the version and the repository URLs."""
    import email
    import shutil
    import subprocess
    import zipfile

    import cpm_nb
    from cpm_nb.course import source

    names = set(zipfile.ZipFile(built_wheel).namelist())
    if shutil.which("git") and (repo / ".git").exists():
        tracked = subprocess.run(["git", "ls-files", "cpm_nb"], cwd=repo, capture_output=True,
                                 text=True, check=True).stdout.split()
    else:
        tracked = [str(p.relative_to(repo)) for p in (repo / "cpm_nb").rglob("*")
                   if p.is_file() and "__pycache__" not in p.parts]
    assert any(t.startswith("cpm_nb/results/") for t in tracked)
    assert sorted(set(tracked) - names) == []
    info = f"cpm_nb-{cpm_nb.__version__}.dist-info"
    assert any(n.startswith(info) and n.endswith("LICENSE") for n in names)
    with zipfile.ZipFile(built_wheel) as wheel:
        meta = email.message_from_bytes(wheel.read(f"{info}/METADATA"))
    assert meta["Version"] == cpm_nb.__version__ and meta["License-Expression"] == "MIT"
    repo_url = f"https://github.com/{source.pinned(repo).repo}"
    assert f"Source, {repo_url}" in meta.get_all("Project-URL")


def test_ci_runs_the_readme_test_command_then_the_wheel_job(repo):
    readme = (repo / "README.md").read_text()
    command = 'pip install -e ".[dev]" && pytest'
    assert command in readme
    ci = (repo / ".ci" / "run").read_text().splitlines()
    readme_line = ci.index('pip install -e ".[dev]" && ruff check . && pytest')
    wheel_line = ci.index("PYTHON=python .ci/wheel-job")
    assert readme_line < wheel_line
    job = (repo / ".ci" / "wheel-job").read_text()
    for step in ("-m build", '-m venv "$work/venv"', '"$venv/cpm-nb" info',
                 '"$venv/cpm-nb" --profile fast notebooks "$repo/notebooks/'):
        assert step in job, step
