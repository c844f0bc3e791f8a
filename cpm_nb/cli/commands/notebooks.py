"""``cpm-nb notebooks``: execute the course notebooks headless, showing progress.

Plain runs write executed copies into ``build/notebooks/`` (or ``--out``) and figures
into ``build/figures/``, both untracked; ``--refresh`` (for maintainers) stores the
outputs in place and rewrites the tracked ``figures/``.  The work is
:mod:`cpm_nb.course.notebooks`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cpm_nb.cli.options import CliError, Command, positive_int


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NOTEBOOK",
                        help="notebooks to run, by number or name prefix, or .ipynb files and "
                             "folders of them (default: all)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", metavar="DIR",
                       help="write the executed copies into DIR (default: build/notebooks/ "
                            "of the checkout; the cache for an install without one)")
    where.add_argument("--refresh", action="store_true",
                       help="maintainers: sync each .ipynb/.py pair, store the outputs in "
                            "place and rewrite figures/ (tracked files)")
    parser.add_argument("--timeout", type=positive_int, default=3600,
                        help="per-cell timeout in seconds, >= 1 (default 3600)")


def _run(args: argparse.Namespace) -> int:
    from cpm_nb.core import config, files, paths
    from cpm_nb.course import notebooks

    if args.out is not None:
        files.check_output_path(args.out, "dir", "--out")  # before any notebook runs
    notebooks.require_runner()
    profile = config.get_profile().name
    chosen = notebooks.notebook_paths(args.names)
    out_dir = None if args.refresh else Path(args.out or notebooks.default_out_dir())
    if out_dir is not None and out_dir.resolve() in {p.parent.resolve() for p in chosen}:
        raise CliError("--out is the folder of the notebooks themselves: use --refresh to "
                       "store the outputs in place")
    figures = paths.stored_figures_dir() if args.refresh else paths.figures_root()
    if args.refresh and figures is None:
        raise CliError("--refresh stores outputs in a checkout's figures/: run it in a clone")
    where = "in place" if out_dir is None else f"into {out_dir}"
    print(f"executing {len(chosen)} notebook(s) {where} with profile '{profile}', widgets "
          f"static; figures into {figures}", flush=True)
    if args.refresh:
        total = _refresh(chosen, figures, profile, args.timeout)
    else:
        total = 0.0
        for path in chosen:
            total += _run_one(path, out_dir / path.name, profile, args.timeout)
    print(f"done in {total:.1f} s; figures in {figures}", flush=True)
    return 0


def _run_one(path: Path, target: Path, profile: str, timeout: int, refresh: bool = False,
             figures: Path | None = None) -> float:
    from cpm_nb.course import notebooks

    print(f"{path.name}", flush=True)
    seconds = notebooks.run_notebook(path, target, refresh=refresh, profile=profile,
                                     timeout=timeout, log=sys.stdout, figures=figures)
    print(f"  {path.name:<45} {seconds:7.1f} s  -> {target}", flush=True)
    return seconds


def _keep_failed(err, staged: Path) -> str:
    """The failed notebook's executed copy moved out of the staging folder (into the
    untracked build/notebooks/), and the error's line naming it there."""
    import os

    from cpm_nb.course import notebooks

    keep = notebooks.default_out_dir() / staged.name
    if staged.is_file():
        keep.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, keep)
    return (str(err).replace(str(staged), str(keep)) + "; nothing tracked was changed "
            "(figures/ and the notebooks are as before)")


def _refresh(chosen: list[Path], figures: Path, profile: str, timeout: int) -> float:
    """Run every notebook into a staging folder (executed copies and figures), and only
    when all succeeded move them over the tracked files: an interrupted or failed refresh
    leaves figures/ and the notebooks as they were."""
    import os
    import shutil

    from cpm_nb.core import files
    from cpm_nb.course import notebooks

    staging = files.staging_folder(figures)
    try:
        staged_figures, staged_notebooks = staging / "figures", staging / "notebooks"
        if figures.is_dir():  # what the notebooks not run here made, for those that read it
            shutil.copytree(figures, staged_figures)
        staged_figures.mkdir(exist_ok=True)
        total = 0.0
        for path in chosen:
            try:
                total += _run_one(path, staged_notebooks / path.name, profile, timeout,
                                  refresh=True, figures=staged_figures)
            except notebooks.CellFailed as err:
                raise CliError(_keep_failed(err, staged_notebooks / path.name)) from None
        figures.mkdir(parents=True, exist_ok=True)
        for item in sorted(staged_figures.rglob("*")):
            if item.is_file():
                dest = figures / item.relative_to(staged_figures)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(item, dest)
        for path in chosen:
            os.replace(staged_notebooks / path.name, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return total


COMMAND = Command(
    name="notebooks",
    help="execute the course notebooks headless, with progress (--refresh: stored outputs)",
    description=(
        "Execute the numbered notebooks top to bottom with static widgets, printing a line\n"
        "per cell and what the cells print. The profile (--profile or CPM_NB_PROFILE) sets\n"
        "every size. A plain run touches no tracked file: executed copies go to\n"
        "build/notebooks/ (or --out DIR), figures to build/figures/ ($CPM_NB_FIGURES).\n"
        "--refresh is the maintainers' command that updates the stored outputs: it syncs\n"
        "each .ipynb with its .py twin, executes in place and rewrites figures/; the\n"
        "committed notebooks were refreshed with --profile cpu.\n\n"
        "examples:\n"
        "  cpm-nb notebooks                          all notebooks into build/notebooks/\n"
        "  cpm-nb --profile fast notebooks 01        one notebook, quickly\n"
        "  cpm-nb notebooks --out /tmp/run 01 03     executed copies elsewhere\n"
        "  cpm-nb notebooks ~/cpm-nb/notebooks/03_gaussian_label_maps.ipynb\n"
        "                                            a notebook file (any install, no clone)\n"
        "  cpm-nb --profile cpu notebooks --refresh  maintainers: store outputs and figures/"
    ),
    add_arguments=_arguments,
    run=_run,
)
