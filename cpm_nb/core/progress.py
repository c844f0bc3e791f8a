"""Progress of long jobs: the one helper behind every progress display of the package
(rendering and cropping the data, downloads, extraction, training, predicting).

In a terminal or a Jupyter notebook it is a ``tqdm`` bar.  Headless -- ``CPM_NB_STATIC=1``
(a notebook executed by ``cpm-nb notebooks``, the tests) or, outside Jupyter, stderr not
a terminal (a log file, a pipe) -- it writes plain lines to stderr instead, one about
every tenth of the job, which a log and the notebook runner's console show where a
bar's carriage returns would not::

    with Progress(len(people), "cropping train", unit="person", mode=progress) as bar:
        for group in groups:
            ...
            bar.update(len(group))

    for job in track(jobs, "rendering", unit="img", mode=progress):
        ...

``mode``: True (a bar, or lines when headless), False (nothing), ``"bar"`` or ``"lines"``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator

MODES = ("bar", "lines", "off")
LINES = 10  # lines per job when headless (plus the last)
UNKNOWN_TOTAL_EVERY_S = 30.0  # headless, a job of unknown size: a line this often


def resolve_mode(mode: bool | str = True) -> str:
    """``"bar"``, ``"lines"`` or ``"off"`` for ``mode`` (see the module docstring)."""
    if mode is False or mode is None:
        return "off"
    if isinstance(mode, str):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, not {mode!r}")
        return mode
    from cpm_nb.core.runtime import static_mode

    if static_mode():
        return "lines"
    return "bar" if _in_jupyter() or _is_terminal(sys.stderr) else "lines"


def _in_jupyter() -> bool:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A counter of ``total`` items (None: unknown) shown as :func:`resolve_mode` says.

    :meth:`update` adds, :meth:`update_to` sets the count; :meth:`set_postfix` adds
    ``key value`` pairs (a loss, a score) to the bar or the next line.  ``unit_scale``
    shows byte counts as kB/MB/GB."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", initial: int = 0,
                 mode: bool | str = True, unit_scale: bool = False, stream=None):
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.n = self._shown = initial
        self.mode = resolve_mode(mode)
        self.stream = stream
        self.postfix: dict[str, str] = {}
        self._start = self._last_line = time.perf_counter()
        self._bar = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit,
                             unit_scale=unit_scale, unit_divisor=1024 if unit_scale else 1000,
                             dynamic_ncols=True, file=stream)

    @property
    def is_bar(self) -> bool:
        """Whether a live bar is shown (worth updating for every item)."""
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        self.update_to(self.n + n)

    def update_to(self, n: int) -> None:
        """Set the count to ``n`` (a headless line when it crosses a tenth of the total)."""
        step, self.n = n - self.n, n
        if self._bar is not None:
            if step:
                self._bar.update(step)
        elif self.mode == "lines" and self._line_due():
            self._line()

    def set_postfix(self, values: dict) -> None:
        self.postfix = {str(k): str(v) for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(self.postfix)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "lines" and self.n != self._shown:
            self._line()
        self.mode = "off"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _line_due(self) -> bool:
        if self.total:
            tenth = math.floor(min(self.n, self.total) * LINES / self.total)
            return tenth > math.floor(self._shown * LINES / self.total) or (
                self.n >= self.total > self._shown)
        return time.perf_counter() - self._last_line >= UNKNOWN_TOTAL_EVERY_S

    def _line(self) -> None:
        count = self._format(self.n)
        if self.total:
            count = f"{count}/{self._format(self.total)}"
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        unit = "" if self.unit_scale else f" {_plural(self.unit)}"
        stream = self.stream or sys.stderr
        stream.write(f"{self.desc}: {count}{unit}{extra} "
                     f"({time.perf_counter() - self._start:.0f} s)\n")
        stream.flush()
        self._shown, self._last_line = self.n, time.perf_counter()

    def _format(self, n: int) -> str:
        if not self.unit_scale:
            return f"{n:,}"
        from tqdm import tqdm

        return tqdm.format_sizeof(n, self.unit, 1024)


def _plural(unit: str) -> str:
    return {"person": "people"}.get(unit, unit if unit.endswith("s") else unit + "s")


def track(iterable: Iterable, desc: str, total: int | None = None, unit: str = "it",
          mode: bool | str = True) -> Iterator:
    """Yield the items of ``iterable``, counting them on a :class:`Progress`."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    if resolve_mode(mode) == "off":
        yield from iterable
        return
    with Progress(total, desc, unit=unit, mode=mode) as bar:
        for item in iterable:
            yield item
            bar.update(1)
