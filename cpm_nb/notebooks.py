"""Running the course: execute notebooks headless and keep their jupytext pairs in sync.

``cpm-nb notebooks`` syncs each ``notebooks/NN_*.ipynb`` with its percent-format
``.py`` twin (the reviewable source), executes it top to bottom with widgets in
static mode, and writes the outputs back in place (or into ``--out``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from cpm_nb.cli import CliError, Command, positive_int
from cpm_nb.viz import figures_dir, repo_root


def notebooks_dir() -> Path:
    root = repo_root()
    if root is None:
        raise CliError("no notebooks/ folder: the installed cpm_nb is not in a cpm-nb checkout "
                       "(git clone the repository, then pip install -e . inside it)")
    return root / "notebooks"


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """The course notebooks, in order; ``names`` filters by prefix ('01') or stem."""
    paths = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if names:
        chosen = [p for p in paths if any(p.stem.startswith(n) for n in names)]
        unknown = [n for n in names if not any(p.stem.startswith(n) for p in paths)]
        if unknown:
            valid = ", ".join(p.stem for p in paths)
            raise CliError(f"no notebook matches {', '.join(unknown)}; notebooks: {valid}")
        paths = chosen
    return paths


def cell_signature(notebook) -> list[tuple[str, str]]:
    """What a jupytext pair must agree on: each cell's type and stripped source."""
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def pair_in_sync(ipynb: Path) -> bool:
    """True when ``ipynb`` and its ``.py`` twin hold the same cells."""
    import jupytext

    twin = ipynb.with_suffix(".py")
    return twin.exists() and cell_signature(jupytext.read(ipynb)) == cell_signature(
        jupytext.read(twin))


def sync_pair(ipynb: Path) -> None:
    """Bring the pair in line with whichever side was edited last (jupytext --sync)."""
    from jupytext.cli import jupytext as jupytext_cli

    jupytext_cli(["--sync", "--quiet", str(ipynb)])


def execute(ipynb: Path, out: Path, profile: str | None, timeout: int) -> float:
    """Execute ``ipynb`` headless and write it to ``out``; returns the wall time in s."""
    import nbformat
    from nbclient import NotebookClient

    env_changes = {"CPM_NB_STATIC": "1"}
    if profile:
        env_changes["CPM_NB_PROFILE"] = profile
    saved = {k: os.environ.get(k) for k in env_changes}
    os.environ.update(env_changes)
    try:
        nb = nbformat.read(ipynb, as_version=4)
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no transport notices
                       resources={"metadata": {"path": str(ipynb.parent)}}).execute()
        elapsed = time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return elapsed


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NOTEBOOK",
                        help="notebooks to run, by number or name prefix (default: all)")
    parser.add_argument("--out", metavar="DIR",
                        help="write executed copies into DIR instead of in place")
    parser.add_argument("--timeout", type=positive_int, default=3600,
                        help="per-cell timeout in seconds, >= 1 (default 3600)")


def _run(args: argparse.Namespace) -> int:
    from cpm_nb import config

    profile = config.get_profile().name
    paths = notebook_paths(args.names)
    print(f"executing {len(paths)} notebook(s) with profile '{profile}', widgets static")
    total = 0.0
    for path in paths:
        sync_pair(path)
        target = Path(args.out) / path.name if args.out else path
        seconds = execute(path, target, profile, args.timeout)
        total += seconds
        print(f"  {path.name:<45} {seconds:7.1f} s  -> {target}", flush=True)
    print(f"done in {total:.1f} s; figures in {figures_dir()}")
    return 0


NOTEBOOKS = Command(
    name="notebooks",
    help="execute the course notebooks headless, in place (stored outputs)",
    description=(
        "Execute the numbered notebooks top to bottom with static widgets and store their\n"
        "outputs in place. The profile (--profile or CPM_NB_PROFILE) sets every size;\n"
        "the committed notebooks were executed with --profile cpu.\n\n"
        "examples:\n"
        "  cpm-nb notebooks                     all notebooks, in place\n"
        "  cpm-nb --profile cpu notebooks 01    one notebook\n"
        "  cpm-nb notebooks --out /tmp/run      executed copies elsewhere"
    ),
    add_arguments=_arguments,
    run=_run,
)
