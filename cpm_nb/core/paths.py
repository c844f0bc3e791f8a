"""Where the package writes: data, runs, figures and the cache.

Nothing is derived from the working directory, so running ``cpm-nb`` inside a user's
own project never writes ``data/`` or ``runs/`` into it.  In order of precedence:

==============  ==================  =========================================================
folder          environment         otherwise
==============  ==================  =========================================================
cache           ``XDG_CACHE_HOME``  ``$XDG_CACHE_HOME/cpm_nb`` (an absolute path), else the
                                    user cache folder of the system (``platformdirs``):
                                    ``~/.cache/cpm_nb`` on Linux,
                                    ``~/Library/Caches/cpm_nb`` on macOS,
                                    ``%LOCALAPPDATA%\\cpm_nb\\Cache`` on Windows
data            ``CPM_NB_DATA``     ``data/`` of the cpm-nb checkout the package is
                                    installed from (``pip install -e .``), else the cache
runs            ``CPM_NB_RUNS``     Colab with Drive mounted: ``MyDrive/cpm_nb/runs``; else
                                    ``runs/`` of the package's checkout; else ``cache/runs``
figures         ``CPM_NB_FIGURES``  ``build/figures/`` of the package's checkout (untracked),
                                    else ``cache/figures``
==============  ==================  =========================================================

The checkout's tracked ``figures/`` (:func:`stored_figures_dir`) is written only by
``cpm-nb notebooks --refresh``, which points ``CPM_NB_FIGURES`` there for its kernels:
running a notebook in Jupyter, under ``pytest --nbval`` or with plain ``cpm-nb notebooks``
leaves a clone's ``git status`` clean.

The checkout (:func:`checkout_root`) is the folder above the installed ``cpm_nb``
package when it holds a ``pyproject.toml`` naming the project ``cpm-nb`` and a
``notebooks/`` folder, i.e. only for an editable install from a clone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

CACHE_ENV = "XDG_CACHE_HOME"
DATA_ENV = "CPM_NB_DATA"
RUNS_ENV = "CPM_NB_RUNS"
FIGURES_ENV = "CPM_NB_FIGURES"
COLAB_DRIVE = Path("/content/drive/MyDrive")
PROJECT_NAME = "cpm-nb"
APP_NAME = "cpm_nb"  # the cache folder's name


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # the installed cpm_nb folder


def results_path(name: str) -> Path:
    """A committed result shipped with the package: ``cpm_nb/results/NAME`` (``.json`` added
    when ``name`` has no suffix)."""
    return PACKAGE_DIR / "results" / (name if Path(name).suffix else f"{name}.json")


def checkout_root() -> Path | None:
    """The cpm-nb checkout that holds the imported package, or None (a regular install)."""
    import cpm_nb

    root = Path(cpm_nb.__file__).resolve().parents[1]
    project = root / "pyproject.toml"
    if not (project.is_file() and (root / "notebooks").is_dir()):
        return None
    try:
        text = project.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    name = re.search(r'^\s*name\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return root if name and name.group(1) == PROJECT_NAME else None


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/cpm_nb``, else the system's user cache folder for ``cpm_nb``
    (``platformdirs``; ``~/.cache/cpm_nb`` on Linux)."""
    base = _env_path(CACHE_ENV)
    if base is not None and base.is_absolute():  # the XDG spec: ignore relative values
        return base / APP_NAME
    import platformdirs

    folder = Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))
    # older platformdirs take a relative $XDG_CACHE_HOME as it is
    return folder if folder.is_absolute() else Path.home() / ".cache" / APP_NAME


def data_root() -> Path:
    """``$CPM_NB_DATA``, else ``data/`` of the package's checkout, else the cache."""
    env = _env_path(DATA_ENV)
    if env is not None:
        return env
    root = checkout_root()
    return root / "data" if root is not None else cache_root()


def runs_root() -> Path:
    """``$CPM_NB_RUNS``, else Drive on Colab, else ``runs/`` of the checkout, else the
    cache's ``runs/``."""
    env = _env_path(RUNS_ENV)
    if env is not None:
        return env
    if COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / "cpm_nb" / "runs"
    root = checkout_root()
    return root / "runs" if root is not None else cache_root() / "runs"


def figures_root() -> Path:
    """``$CPM_NB_FIGURES``, else ``build/figures/`` of the checkout (untracked), else the
    cache's ``figures/`` (not created here)."""
    env = _env_path(FIGURES_ENV)
    if env is not None:
        return env
    root = checkout_root()
    return root / "build" / "figures" if root is not None else cache_root() / "figures"


def stored_figures_dir() -> Path | None:
    """The checkout's tracked ``figures/`` (the stored outputs' figures), or None outside
    a checkout."""
    root = checkout_root()
    return root / "figures" if root is not None else None
