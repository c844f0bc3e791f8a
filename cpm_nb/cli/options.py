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
