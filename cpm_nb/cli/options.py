"""What every ``cpm-nb`` subcommand shares: the :class:`Command` record, :class:`CliError`,
the JSON options and numeric option types whose errors name the valid range."""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line, an argument builder and the function that runs it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


@contextlib.contextmanager
def json_only_on_stdout(enabled: bool):
    """With ``--json``: every line a command prints goes to stderr, :func:`print_json`
    alone writes to stdout, so stdout is exactly one JSON document."""
    global _JSON_STDOUT
    if not enabled:
        yield
        return
    _JSON_STDOUT = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        _JSON_STDOUT = None


_JSON_STDOUT = None  # the real stdout while json_only_on_stdout is active


class ReaderGone:
    """stdout for a command whose reader may quit early (``cpm-nb ... | head -1``): a
    write to the closed pipe is dropped instead of failing, so the command still writes
    its files (``--json-out``, outputs) and ends normally; :attr:`closed_pipe` says it
    happened, for a quiet exit."""

    def __init__(self, stream):
        self._stream, self.closed_pipe = stream, False

    def write(self, text):
        if not self.closed_pipe:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self.closed_pipe = True
        return len(text)

    def flush(self):
        if not self.closed_pipe:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self.closed_pipe = True

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def pipe_safe_stdout():
    """Run the block with :class:`ReaderGone` as ``sys.stdout``; yields it."""
    safe = ReaderGone(sys.stdout)
    with contextlib.redirect_stdout(safe):
        yield safe


def add_json_option(parser: argparse.ArgumentParser, what: str, note: str = "") -> None:
    """The shared JSON options, both stored in ``args.json``: ``--json`` (a flag; the
    value ``"-"``: ``what`` as JSON on stdout and nothing else there) and ``--json-out
    FILE`` (the path; also write ``what`` to FILE, checked by :func:`main` before the
    command runs).  Pair it with :func:`print_json`.  Being a flag, ``--json`` never
    takes the next word (an image name) as its value."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--json", dest="json", action="store_const", const="-",
                       help=f"print {what} as JSON on stdout, and nothing else there (other "
                            f"lines go to stderr){note}")
    group.add_argument("--json-out", dest="json", metavar="FILE",
                       help=f"also write {what} as JSON to FILE (written atomically; "
                            "'-' is stdout)")


def print_json(data, path: str | None = None) -> None:
    """Print ``data`` as JSON on stdout (``path`` None or '-'), or write it to ``path``
    atomically.  NaN and infinities become null, as in every JSON file the package writes
    (:func:`cpm_nb.core.files.json_text`), so the output is always valid JSON."""
    from cpm_nb.core import files

    if path in (None, "-"):
        out = _JSON_STDOUT or sys.stdout
        out.write(files.json_text(data) + "\n")
        out.flush()
    else:
        files.atomic_write_json(path, data)


# --- numeric options: argparse types whose error names the valid range ---------------------


def _range_text(lo, hi, lo_open=False, hi_open=False, what="an integer") -> str:
    if lo is not None and hi is not None:
        if what == "an integer":
            return f"{what} from {lo} to {hi}"
        return f"{what} in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{what} {'>' if lo_open else '>='} {lo:g}"
    if hi is not None:
        return f"{what} {'<' if hi_open else '<='} {hi:g}"
    return what


def int_in_range(lo: int | None = None, hi: int | None = None, multiple_of: int | None = None):
    """An argparse ``type``: an integer in ``lo..hi`` (inclusive; None = unbounded), a
    multiple of ``multiple_of`` when given; the error names the range."""
    want = _range_text(lo, hi)
    if multiple_of:
        want += f", a multiple of {multiple_of}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi) or (
                multiple_of and value % multiple_of):
            raise argparse.ArgumentTypeError(f"must be {want}, got {value}")
        return value

    parse.__name__ = want  # argparse names the type in some messages
    return parse


def float_in_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False,
                   hi_open: bool = False):
    """An argparse ``type``: a finite number in the interval (open ends as asked)."""
    want = _range_text(lo, hi, lo_open, hi_open, "a number")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        bad = not math.isfinite(value) or (lo is not None and (
            value <= lo if lo_open else value < lo)) or (hi is not None and (
                value >= hi if hi_open else value > hi))
        if bad:
            raise argparse.ArgumentTypeError(f"must be {want}, got {text}")
        return value

    parse.__name__ = want
    return parse


positive_int = int_in_range(1)
nonnegative_int = int_in_range(0)
finite_float = float_in_range()
positive_float = float_in_range(0, None, lo_open=True)


# --- outputs that must not be inputs -------------------------------------------------------------

# argparse destinations holding the files or folders a command reads
INPUT_OPTIONS = ("model", "prototxt", "caffemodel", "images", "annotations", "predictions",
                 "data_dir", "split_file", "names")


def input_paths(args) -> list[str]:
    """The file and folder arguments of ``args`` that the command reads."""
    found = []
    for name in INPUT_OPTIONS:
        value = getattr(args, name, None)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and item:
                found.append(item)
    return found


# commands whose --out folder is replaced as a whole: no input may live inside it
REPLACES_OUT = ("export",)


def check_outputs(args: argparse.Namespace) -> None:
    """Before any work: ``--json-out`` can be written, and no output (``--json-out``,
    ``--out``) is one of the command's inputs -- the same file by another name, a
    symbolic or hard link (``os.path.samefile``), an existing file inside an input
    folder (``--json-out RUN/model.keras``), the input folder itself, or, for a command
    that replaces its ``--out`` folder, a folder holding an input."""
    from pathlib import Path

    from cpm_nb.core import files

    json_out = getattr(args, "json", None)
    outputs = []
    if json_out not in (None, "-"):
        files.check_output_path(json_out, "file", "--json-out")
        outputs.append(("--json-out", Path(json_out).expanduser()))
    out = getattr(args, "out", None)
    if isinstance(out, str) and out:
        outputs.append(("--out", Path(out).expanduser()))
    inputs = [Path(p).expanduser() for p in input_paths(args)]
    inputs = [p for p in inputs if p.exists()]
    for flag, path in outputs:
        for source in inputs:
            clash = _clash(path, source, replaced=flag == "--out" and
                           getattr(args, "command", None) in REPLACES_OUT)
            if clash:
                raise CliError(f"{flag} {path} {clash} {source}: the command would overwrite "
                               f"its own input; choose another {flag}")


# files the package reads from the folders it is given (runs, exports, data sets); a
# result file written into such a folder earlier (scores.json) may be written again
_METADATA = {"cpm_config.json", "train_config.json", "history.json", "meta.json",
             "preset.json", "train.json", "val.json", "people.json"}
_RESULTS = (".json", ".png", ".txt", ".csv", ".mat")


def _read_from_folders(path) -> bool:
    return path.name in _METADATA or path.suffix.lower() not in _RESULTS


def _clash(output, source, replaced: bool) -> str | None:
    """How ``output`` would overwrite ``source`` (None when it would not)."""
    import os

    out, src = output.resolve(), source.resolve()
    if output.exists() and os.path.samefile(output, source):
        return "is the input"
    if out == src:
        return "is the input"
    if (source.is_dir() and out.is_relative_to(src) and output.is_file()
            and _read_from_folders(output)):
        return "is a file of the input folder"
    if replaced and src.is_relative_to(out):
        return "would replace the folder of the input"
    if source.is_dir() and output.is_file() and output.stat().st_nlink > 1 and any(
            _same_inode(output, f) for f in _files_near(source)):
        return "is a hard link to a file of the input folder"
    return None


def _same_inode(a, b) -> bool:
    import os

    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _files_near(folder, depth: int = 2, limit: int = 10_000):
    """The files of ``folder`` and its subfolders, ``depth`` levels down (a bounded walk)."""
    import os

    count = 0
    for root, dirs, names in os.walk(folder):
        if len(os.path.relpath(root, folder).split(os.sep)) >= depth:
            dirs[:] = []
        for name in names:
            count += 1
            if count > limit:
                return
            yield os.path.join(root, name)
