"""Running the course: execute the notebooks headless, with progress on the console.

Each ``notebooks/NN_*.ipynb`` is paired with a percent-format ``.py`` twin (the
reviewable source).  :func:`run_notebook` executes one of them top to bottom with
widgets in static mode and writes the executed copy where it is told:

* an ordinary run reads the newer side of the pair and writes into an untracked folder
  (:func:`default_out_dir`); its figures go to :func:`cpm_nb.core.paths.figures_root`, also
  untracked, so a clone stays clean;
* a refresh (the maintainers' job) syncs the pair, executes in place and writes the
  figures into the tracked ``figures/`` (:func:`cpm_nb.core.paths.stored_figures_dir`).

The runner needs the ``[dev]`` extra (:data:`RUNNER_MODULES`); :func:`require_runner`
says so in one line.  Progress goes to ``log``: one line per cell, the text the cells
print (e.g. a training run's estimate and summary), and a heartbeat while a long cell
is silent.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from cpm_nb.core import paths
from cpm_nb.core.errors import ConfigError, DataError

RUNNER_MODULES = ("nbclient", "nbformat", "jupytext", "ipykernel")
INSTALL_HINT = 'pip install -e ".[dev]"'
HEARTBEAT_S = 60.0  # a cell silent this long gets a "still running" line


class MissingRunnerError(ConfigError):
    """The packages that execute notebooks (the ``[dev]`` extra) are not installed."""


def require_runner() -> None:
    """Raise :class:`MissingRunnerError` unless every module of :data:`RUNNER_MODULES`
    can be imported (checked without importing them)."""
    missing = [name for name in RUNNER_MODULES if not _importable(name)]
    if missing:
        raise MissingRunnerError(
            f"executing notebooks needs {', '.join(missing)} (the [dev] extra), which "
            f"is not installed: {INSTALL_HINT} in the cpm-nb checkout")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def checkout() -> Path:
    """The cpm-nb checkout the package runs from; a :class:`DataError` otherwise."""
    root = paths.checkout_root()
    if root is None:
        raise DataError("no notebooks/ folder: the installed cpm_nb is not in a cpm-nb checkout "
                        "(git clone the repository, then pip install -e . inside it)")
    return root


def notebooks_dir() -> Path:
    return checkout() / "notebooks"


def default_out_dir() -> Path:
    """Where ordinary runs write executed copies: ``build/notebooks/`` of the checkout
    (untracked), or ``notebooks/`` of the cache (:func:`cpm_nb.core.paths.cache_root`) for a
    regular install, which has no checkout."""
    root = paths.checkout_root()
    return root / "build" / "notebooks" if root else paths.cache_root() / "notebooks"


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """The course notebooks, in order; ``names`` filters them by prefix ('01') or stem, or
    names notebook files (``.ipynb``) and folders of them, which need no checkout: an
    installed wheel runs the notebooks of a clone or a download this way."""
    blank = [n for n in names or [] if not str(n).strip()]
    if blank:
        raise DataError("an empty notebook name ('') was given; name notebooks by number "
                        "(e.g. 03), or give none to run them all")
    given = [n for n in names or [] if _is_path(n)]
    chosen = [p for name in given for p in _notebooks_at(Path(name))]
    prefixes = [n for n in names or [] if n not in given]
    if given and not prefixes:
        return chosen
    found = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))
    if not prefixes:
        return found
    unknown = [n for n in prefixes if not any(p.stem.startswith(n) for p in found)]
    if unknown:
        valid = ", ".join(p.stem for p in found)
        raise DataError(f"no notebook matches {', '.join(unknown)}; notebooks: {valid}")
    return chosen + [p for p in found if any(p.stem.startswith(n) for n in prefixes)]


def _is_path(name: str) -> bool:
    return name.endswith(".ipynb") or Path(name).is_dir()


def _notebooks_at(path: Path) -> list[Path]:
    """``path`` itself (a notebook) or the notebooks in it (a folder), in name order."""
    if path.is_dir():
        found = sorted(path.glob("*.ipynb"))
        if not found:
            raise DataError(f"no notebook (.ipynb) in the folder {path}")
        return found
    if not path.is_file():
        raise DataError(f"no notebook at {path}: give an .ipynb file, a folder of them, or a "
                        "course notebook's number")
    return [path]


def cell_signature(notebook) -> list[tuple[str, str]]:
    """What a jupytext pair must agree on: each cell's type and stripped source."""
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def sync_pair(ipynb: Path) -> None:
    """Bring the pair in line with whichever side was edited last (jupytext --sync)."""
    from jupytext.cli import jupytext as jupytext_cli

    jupytext_cli(["--sync", "--quiet", str(ipynb)])


def read_newer_side(ipynb: Path):
    """The notebook as its newer side holds it (the ``.py`` twin when edited last),
    read without writing either file."""
    import jupytext
    import nbformat

    try:
        stored = nbformat.read(ipynb, as_version=4)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        # nbformat's NotJSONError and ValidationError are ValueErrors
        raise DataError(f"{ipynb} is not a readable notebook ({type(err).__name__}: "
                        f"{' '.join(str(err).split())[:150]}); restore it, e.g. with "
                        "`git checkout`") from None
    twin = ipynb.with_suffix(".py")
    if twin.exists() and twin.stat().st_mtime > ipynb.stat().st_mtime:
        notebook = jupytext.read(twin)
        keep_cell_ids(notebook, stored)
        return notebook
    return stored


def keep_cell_ids(notebook, stored) -> None:
    """Give ``notebook``'s cells the ids their twins (same type and source) have in
    ``stored``: the text side has no ids, and new random ones on every refresh would
    bury the real changes of a re-execution in its diff."""
    ids: dict[tuple[str, str], str] = {}
    for cell, key in zip(stored.cells, cell_signature(stored)):
        if cell.get("id"):
            ids.setdefault(key, cell["id"])
    taken = set()
    for cell, key in zip(notebook.cells, cell_signature(notebook)):
        old = ids.get(key)
        if old and old not in taken:
            cell["id"] = old
            taken.add(old)


class CellFailed(DataError):
    """A cell of a notebook raised; the executed copy, error included, was saved."""


def run_notebook(ipynb: Path, target: Path, *, refresh: bool, profile: str | None,
                 timeout: int, log: TextIO | None = None, figures: Path | None = None) -> float:
    """Execute ``ipynb`` and write it to ``target``; returns the wall time in s.

    ``refresh``: sync the pair first and send figures to the tracked ``figures/``;
    otherwise nothing tracked is written (figures go to :func:`paths.figures_root`).
    ``figures``: another folder for them (a refresh stages them there, to be moved into
    ``figures/`` once every notebook has run).  When a cell fails, the executed copy is
    still written to ``target`` (unless ``target`` is ``ipynb`` itself), so the error
    can be read there, and :class:`CellFailed` says so in one line."""
    if refresh:
        sync_pair(ipynb)
    notebook = read_newer_side(ipynb)
    if figures is None:
        figures = paths.stored_figures_dir() if refresh else paths.figures_root()
    env = {"CPM_NB_STATIC": "1", paths.FIGURES_ENV: str(figures)}
    if profile:
        env["CPM_NB_PROFILE"] = profile
    try:
        seconds = execute(notebook, ipynb.parent, env, timeout, label=ipynb.stem[:2], log=log)
    except Exception as err:
        if type(err).__name__ != "CellExecutionError":
            raise
        saved = ""
        if target.resolve() != ipynb.resolve():
            write(notebook, target)
            saved = f"; the executed copy, with the error, is {target}"
        raise CellFailed(f"{ipynb.name}: a cell failed: {_cell_error(err)}{saved}") from None
    write(notebook, target)
    return seconds


def _cell_error(err) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        text = f"{ename}: {evalue}"
    else:
        lines = [line for line in str(err).splitlines() if line.strip()]
        text = lines[-1] if lines else type(err).__name__
    return " ".join(text.split())[:300]


def write(notebook, target: Path) -> None:
    import nbformat

    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, target)


def execute(notebook, folder: Path, env: dict[str, str], timeout: int, label: str = "",
            log: TextIO | None = None) -> float:
    """Execute ``notebook`` (in place) with its kernel in ``folder`` and ``env`` added to
    the environment; returns the wall time in s.  Ctrl-C or SIGTERM during the run is a
    :class:`KeyboardInterrupt`, whatever the dying kernel made nbclient raise; the
    kernel's own stderr (its start-up and shutdown chatter) is dropped unless
    ``CPM_NB_DEBUG`` is set: what cells print and raise reaches ``log`` and the
    notebook."""
    progress = _Progress(notebook, label, log)
    client = _progress_client(notebook, folder, timeout, progress)
    quiet = {} if os.environ.get("CPM_NB_DEBUG", "").strip() not in ("", "0") else {
        "stderr": subprocess.DEVNULL}
    start = time.perf_counter()
    with _environment(env), progress:
        try:
            client.execute(**quiet)
        except Exception:
            # nbclient handles SIGINT/SIGTERM itself (it shuts the kernel down and then
            # fails with DeadKernelError or an AssertionError): it marks that it did so
            if getattr(client, "_async_cleanup_kernel_future", None) is not None:
                raise KeyboardInterrupt("the notebook run was interrupted") from None
            raise
    return time.perf_counter() - start


@contextlib.contextmanager
def _environment(changes: dict[str, str]):
    """Temporarily add variables to ``os.environ`` (the kernel inherits them)."""
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _progress_client(notebook, folder: Path, timeout: int, progress: _Progress):
    from nbclient import NotebookClient

    class ProgressClient(NotebookClient):
        """nbclient's client that reports each cell and echoes what the cells print."""

        def process_message(self, msg, cell, cell_index):
            if msg["msg_type"] == "stream":
                progress.echo(msg["content"].get("text", ""))
            return super().process_message(msg, cell, cell_index)

    return ProgressClient(
        notebook, timeout=timeout, kernel_name="python3", log=_client_log(),
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no transport notices
        resources={"metadata": {"path": str(folder)}},
        on_cell_execute=progress.cell_started, on_cell_executed=progress.cell_done)


class _CurrentStderr(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is when it emits: traitlets'
    default logger binds the ``sys.stderr`` of its first use, which in a host that swaps
    the stream (pytest's capture, a notebook) may be closed by the next message."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; the property ignores it
        pass


def _client_log() -> logging.Logger:
    """nbclient's and jupyter_client's messages (warnings and up) on the current stderr."""
    log = logging.getLogger("cpm_nb.notebooks.kernel")
    if not log.handlers:
        log.addHandler(_CurrentStderr())
        log.setLevel(logging.WARNING)
        log.propagate = False
    return log


class _Progress:
    """Console lines for one notebook: ``  [05] cell 12/48  3.1 s`` per code cell, the
    cells' printed text indented, and a heartbeat while a cell runs silently."""

    def __init__(self, notebook, label: str, log: TextIO | None):
        code = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
        self.number = {index: n for n, index in enumerate(code, 1)}
        self.total, self.label, self.log = len(code), label, log
        self.current: int | None = None
        self.started = self.last_output = time.perf_counter()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.at_line_start = True

    def __enter__(self):
        if self.log is not None:
            threading.Thread(target=self._heartbeat, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.done.set()

    def cell_started(self, cell, cell_index, **_):
        self.current = self.number.get(cell_index)
        self.started = self.last_output = time.perf_counter()

    def cell_done(self, cell, cell_index, **_):
        elapsed = time.perf_counter() - self.started
        self.current = None
        self._line(f"cell {self.number.get(cell_index, '?')}/{self.total}  {elapsed:.1f} s")

    def echo(self, text: str) -> None:
        """The kernel's printed text, each line indented under the cell lines."""
        if self.log is None or not text:
            return
        self.last_output = time.perf_counter()
        with self.lock:
            for piece in text.splitlines(keepends=True):
                self.log.write(("      " if self.at_line_start else "") + piece)
                self.at_line_start = piece.endswith(("\n", "\r"))
            self.log.flush()

    def _line(self, text: str) -> None:
        if self.log is None:
            return
        with self.lock:
            self.log.write(("" if self.at_line_start else "\n") + f"  [{self.label}] {text}\n")
            self.at_line_start = True
            self.log.flush()

    def _heartbeat(self) -> None:
        while not self.done.wait(HEARTBEAT_S / 4):
            now, cell = time.perf_counter(), self.current
            if cell is not None and now - self.last_output >= HEARTBEAT_S:
                self.last_output = now
                self._line(f"cell {cell}/{self.total}  still running, "
                           f"{now - self.started:.0f} s so far")
