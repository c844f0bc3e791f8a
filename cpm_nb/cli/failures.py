"""The error boundary's dictionary: any exception as one line, chosen by what the failure
*means* (a full disk, memory, a malformed input, an interruption), not by its type.

:func:`describe` returns ``(message, exit status)`` for :func:`cpm_nb.cli.app.main`.
Library code raises :class:`cpm_nb.core.errors.CpmError` with its own message where an
input enters; everything else (NumPy, Keras, nbclient, the recursion limit) lands here,
and the line names the command's input files, so the user knows what to look at.
The traceback itself is behind ``--debug`` / ``CPM_NB_DEBUG=1``.
"""

from __future__ import annotations

import errno
import os

DEBUG_ENV = "CPM_NB_DEBUG"
DEBUG_HINT = "re-run with --debug for the traceback"

INTERRUPTED = 130
ERROR = 2

_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class Interrupted(KeyboardInterrupt):
    """SIGTERM, turned into the same path as Ctrl-C."""


def debug_requested(argv) -> bool:
    return "--debug" in (argv or []) or os.environ.get(DEBUG_ENV, "").strip() not in (
        "", "0", "false", "no")


def _inputs_text(args) -> str:
    from cpm_nb.cli.options import input_paths

    names = input_paths(args)
    if not names:
        return ""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f" while reading {shown}"


def _text(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(getattr(err, "message", None) or err).split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _memory_advice(args) -> str:
    if hasattr(args, "batch_size"):
        return "try a smaller --batch-size or profile"
    return "close other programs or use a smaller profile (--profile fast)"


def _disk_full(err: OSError) -> str:
    where = err.filename or "the output folder"
    return f"no space left on the disk while writing {where}; free some space and re-run"


def _interrupted(args) -> str:
    if getattr(args, "command", None) == "train":
        return ("interrupted; the last checkpoint is kept: add --resume to the same command "
                "to continue from it")
    return "interrupted; finished outputs are kept (written atomically): re-run the command"


def describe(err: BaseException, args, interrupted: bool = False) -> tuple[str, int]:
    """``(one-line message, exit status)`` for any failure of a command."""
    from cpm_nb.cli.options import CliError
    from cpm_nb.core.errors import CpmError

    name = type(err).__name__
    if isinstance(err, KeyboardInterrupt) or interrupted:
        return _interrupted(args), INTERRUPTED
    if isinstance(err, (CliError, CpmError)):
        return str(err), ERROR
    if isinstance(err, MemoryError):
        return f"out of memory{_inputs_text(args)}; {_memory_advice(args)}", ERROR
    if isinstance(err, OSError):
        if err.errno in _DISK_FULL:
            return _disk_full(err), ERROR
        return _os_message(err), ERROR
    if isinstance(err, RecursionError):
        return (f"input nested too deeply{_inputs_text(args)} (more levels than Python can "
                "follow); check that the file is what it should be"), ERROR
    text = _text(err)
    if name == "ResourceExhaustedError":
        if "space left" in text.lower():
            return _disk_full(OSError(errno.ENOSPC, text)), ERROR
        if "alloc" in text.lower() or "oom" in text.lower():
            return f"out of memory ({text}); {_memory_advice(args)}", ERROR
        return f"resource exhausted{_inputs_text(args)} ({text}); {DEBUG_HINT}", ERROR
    if name == "DataLossError":
        return (f"corrupted data ({text}); re-create the TFRecords with `cpm-nb prepare ...` "
                "(synthetic: add --force)"), ERROR
    if name == "DecompressionBombError":
        return f"image too large ({text})", ERROR
    if name == "DeadKernelError":
        return (f"the notebook's kernel died ({text}); it may have run out of memory: try "
                "--profile fast"), ERROR
    if name in ("CellTimeoutError",):
        return f"a notebook cell timed out ({text}); raise --timeout", ERROR
    if name == "CellExecutionError":
        return f"a notebook cell failed: {_cell_error(err)}", ERROR
    return (f"unexpected {name}{_inputs_text(args)}: {text}; the input may be malformed "
            f"({DEBUG_HINT})"), ERROR


def _cell_error(err) -> str:
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        return _text(f"{ename}: {evalue}")
    lines = [line for line in str(err).splitlines() if line.strip()]
    return _text(lines[-1] if lines else err)


def _os_message(err: OSError) -> str:
    """A file-system error as one line: what failed, on which file."""
    what = err.strerror or str(err)
    names = [n for n in (err.filename, getattr(err, "filename2", None)) if n]
    where = f": {' -> '.join(map(str, names))}" if names else ""
    return f"{what}{where} (check the path, its permissions and the free disk space)"
