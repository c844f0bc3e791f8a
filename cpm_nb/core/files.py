"""One place for reading and writing files safely: atomic outputs, early output checks,
names from data files kept inside their folder, folder locks, and JSON.

Every tool of the package goes through these, so a failure never leaves a half
written file behind, a hostile data file cannot make a tool read elsewhere, and a
bad JSON file is one line naming the file, never a traceback.  (Images have their
own loader, :mod:`cpm_nb.io.images`.)

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`
  and :func:`atomic_output` (a context manager yielding a temporary path in the same
  folder: fsync-ed and ``os.replace``-d over the target on success, removed on
  failure); :func:`swap_folder` puts a finished folder in place of another.
* :func:`check_output_path` -- fail *before any work* when an output path is a
  folder where a file is wanted (or the reverse) or its folder cannot be created
  or written.
* :func:`inside` -- a relative name read from a data file (an image name in the
  annotations), resolved under its folder; :class:`EscapingPathError` when it is
  absolute or climbs out with ``..``.
* :func:`locked` -- the one folder lock (``FOLDER/.lock``, through ``filelock``):
  re-entrant in the thread that holds it, exclusive between threads and processes;
  a second holder waits, or is refused with a given error; the lock file is removed
  when the last hold ends, so a finished job leaves none behind.
* :func:`read_input` -- an input file's bytes, refusing what is not a regular file
  (a folder, ``/dev/zero``) and anything over a size cap; a pipe (``<(...)``, a FIFO)
  is read up to the cap, and one with no writer is given up after a wait, never hung on.
* :func:`read_json` / :func:`parse_json` -- the one JSON reader: a document, or a
  :class:`DataError` naming the file; :func:`json_text` -- the one JSON writer's text:
  NaN and infinities become ``null``, so every file written is valid JSON.

:class:`DataError` is the error for data and files (not for command-line flags):
``cpm-nb`` prints it as one line and exits with status 2.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import uuid
from pathlib import Path

from cpm_nb.core.errors import CpmError, DataError  # re-exported: files.DataError

LOCK_FILE = ".lock"

class EscapingPathError(DataError):
    """A name read from a data file that would point outside its folder."""


# --- atomic outputs --------------------------------------------------------------------------


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_name(path: Path) -> Path:
    """A unique hidden name beside ``path`` (``.NAME.HEX.tmp``) for a file being written."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path``; when the block succeeds, the file written
    there is fsync-ed and moved over ``path`` in one ``os.replace`` (readers see the old
    file or the new one, never a part); when it fails, the temporary file is removed and
    ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, data, indent: int | None = 2) -> None:
    """``data`` as JSON (plus a newline; :func:`json_text`) written atomically to ``path``."""
    atomic_write_text(path, json_text(data, indent) + "\n")


def swap_folder(new, target) -> None:
    """Put the finished folder ``new`` in place of ``target`` (which may exist).

    Two renames (the old folder aside, the new one in) then the old one is deleted;
    a crash between the renames leaves ``target`` missing and the old folder as
    ``.<name>.<hex>.old`` beside it, never a mix of the two."""
    import shutil

    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(target, old)
    os.replace(new, target)
    _fsync_folder(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staging_folder(target) -> Path:
    """A new empty hidden folder beside ``target``, on the same file system, to build
    an output in before :func:`swap_folder`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))


def remove_leftovers(folder, patterns=(".*.tmp", ".*.old")) -> None:
    """Delete what killed writers left in ``folder`` (temporary files and folders named by
    :func:`temp_name`, :func:`staging_folder` and :func:`swap_folder`).  Call it only
    while holding the folder's :func:`locked`, so no live writer's files are taken."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return
    for pattern in patterns:
        for item in folder.glob(pattern):
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


# --- checking outputs before the work ------------------------------------------------------


def _first_existing(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path(".")


def check_output_path(path, kind: str = "file", what: str = "output") -> Path:
    """Check, before any work, that ``path`` can be written as a ``kind`` ('file' or
    'dir'): it is not of the other kind, and its nearest existing folder is a writable
    folder (the missing ones can then be created).  Returns the path; raises
    :class:`DataError` naming ``what`` (e.g. '--json-out') and the fix."""
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    path = Path(path).expanduser()
    if str(path) in ("", "."):
        if kind == "file":
            raise DataError(f"{what}: give a file name, not {str(path)!r}")
    if kind == "file" and path.is_dir():
        raise DataError(f"{what} {path} is a folder; give a file name (e.g. {path}/out.json)")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise DataError(f"{what} {path} is a file, not a folder; give a folder path")
    if kind == "file" and path.exists() and not os.access(path, os.W_OK):
        raise DataError(f"{what} {path} is not writable; choose another path or fix its "
                        "permissions")
    base = _first_existing(path if kind == "dir" else path.parent)
    if not base.is_dir():
        raise DataError(f"cannot create {what} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise DataError(f"cannot write {what} {path}: {base} is not writable; choose another "
                        "path or fix its permissions")
    return path


# --- names read from data files ----------------------------------------------------------------


def inside(folder, name, source=None) -> Path:
    """``folder / name`` for a relative ``name`` read from a data file (``source``, for
    the message); :class:`EscapingPathError` when ``name`` is absolute, empty, holds a
    NUL, or leaves ``folder`` with ``..``.

    The check is on the name itself (normalised, before symbolic links): links that the
    user put inside the folder are followed, names that climb out of it are refused."""
    name = str(name)
    where = f" in {source}" if source else ""
    if not name or "\0" in name:
        raise EscapingPathError(f"invalid file name {name!r}{where}")
    norm = os.path.normpath(name)
    if os.path.isabs(name) or norm == ".." or norm.startswith(".." + os.sep) or norm == ".":
        raise EscapingPathError(f"file name {name!r}{where} points outside {folder}; "
                                "names must be relative paths inside that folder")
    return Path(folder) / norm


# --- locks --------------------------------------------------------------------------------------


class FolderLocked(CpmError, RuntimeError):
    """Another thread or process holds the folder's lock."""


@contextlib.contextmanager
def locked(folder, busy: CpmError | None = None):
    """Hold the folder's lock, ``folder/.lock`` (created with the folder), for the block.

    Another thread or process holding it is waited for, or, when ``busy`` is given (an
    exception: what to tell the caller), refused with it at once.  Re-entrant in the
    thread that holds it.  When the thread's outermost hold ends the lock file is
    removed, still locked, so a finished job leaves no ``.lock`` behind: a waiter that
    had opened the removed file finds it unlinked once it gets it and takes the new one
    (``filelock`` >= 4 checks this), so removing it never lets two holders in."""
    import filelock

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # one lock object per file and process; its holds are counted per thread
    lock = filelock.FileLock(str((folder / LOCK_FILE).resolve()), is_singleton=True)
    try:
        lock.acquire(timeout=-1 if busy is None else 0)
    except filelock.Timeout:
        raise busy from None
    try:
        yield
    finally:
        if lock.lock_counter == 1:  # the outermost hold of this thread
            with contextlib.suppress(OSError):
                os.unlink(lock.lock_file)
        lock.release()


# --- reading inputs -----------------------------------------------------------------------------

MAX_INPUT_BYTES = 4 << 30  # no input the package reads is larger (a caffemodel: 0.2 GB)
PIPE_WAIT_S = 10.0  # how long a pipe may stay silent before it is given up


def read_input(path, what: str = "input file", limit: int = MAX_INPUT_BYTES,
               error: type[CpmError] = DataError, wait: float | None = None) -> bytes:
    """The bytes of ``path``, an input file.  A folder, a device (``/dev/zero``), a
    socket or a file larger than ``limit`` bytes is refused with ``error`` (one line);
    a pipe or FIFO is read up to ``limit`` bytes, and one that stays silent ``wait``
    seconds (no writer) is refused, so nothing hangs or fills the memory."""
    import stat

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{what} {path} is a folder; give a file")
    if stat.S_ISFIFO(mode):
        return _read_pipe(path, what, limit, error, PIPE_WAIT_S if wait is None else wait)
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is not a regular file (a device or socket); give a file")
    size = os.stat(path).st_size
    if size > limit:
        raise error(f"{what} {path} is {size / 1e6:,.0f} MB, more than the {limit / 1e6:,.0f} "
                    "MB such a file can be; is it the right file?")
    try:
        return path.read_bytes()
    except OSError as err:
        raise error(f"cannot read {what} {path}: {err.strerror or err}") from None


def _read_pipe(path: Path, what: str, limit: int, error, wait: float) -> bytes:
    """A pipe's bytes up to ``limit``, giving up when it is silent for ``wait`` seconds."""
    import select

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # no writer: open must not block
    chunks, size = [], 0
    try:
        while True:
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                raise error(f"{what} {path} is a pipe that sent nothing for {wait:g} s (no "
                            "writer?); give a file")
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise error(f"{what} {path} is a pipe sending more than {limit / 1e6:,.0f} MB; "
                            "give a file")
            chunks.append(chunk)
    finally:
        os.close(fd)


# --- JSON ---------------------------------------------------------------------------------------


def _finite(obj):
    """``obj`` with NaN and infinities as None (JSON ``null``) and NumPy numbers and arrays
    as Python ones."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # a NumPy array or number
        return _finite(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def json_text(data, indent: int | None = 2) -> str:
    """``data`` as strict JSON text: NaN and infinities written as ``null`` (what every
    JSON file and ``--json`` output of the package holds); ``indent=None`` is compact."""
    separators = (",", ":") if indent is None else None
    return json.dumps(_finite(data), indent=indent, separators=separators, allow_nan=False)


def parse_json(text, source: str, what: str = "JSON", fix: str = ""):
    """The JSON document in ``text`` (str or bytes) read from ``source``; :class:`DataError`
    (one line naming ``source`` and ``fix``) when it is not JSON."""
    hint = f"; {fix}" if fix else ""
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{what} {source} is unreadable or corrupt ({err}){hint}") from None


def read_json(path, what: str = "JSON file", fix: str = ""):
    """The JSON document in ``path``; :class:`DataError` (one line naming the file and
    ``fix``) when it is missing, unreadable, truncated or not JSON."""
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}{hint}") from None
    except OSError as err:
        reason = err.strerror or str(err)
        raise DataError(f"{what} {path} is unreadable or corrupt ({reason}){hint}") from None
    return parse_json(data, str(path), what, fix)
