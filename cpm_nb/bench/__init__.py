"""Benchmarks: ``python -m cpm_nb.bench NAME [--json OUT]``.

Each benchmark times our implementation and a baseline *in the same run* and
prints them side by side with the ratio; ``--json`` writes the figures.  Speed
goals are checked here, never in timed unit tests.  A benchmark is a function
``fn(args) -> dict`` in its own module of this package (``cpm_nb.bench.NAME``),
importing what it measures, named in :data:`BENCHMARKS`.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import time
from collections.abc import Callable

# name -> ("module:function", one-line description)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "heatmaps": ("cpm_nb.bench.heatmaps:bench_heatmaps", "target maps/s (16x16 joints, 46x46): in-graph vs NumPy loop"),
    "model": ("cpm_nb.bench.model:bench_model", "CPM forward pass at 368 px: images/s, compiled vs eager"),
    "train": ("cpm_nb.bench.train:bench_train", "training images/s: fit with its data path vs the bare compiled step"),
    "pipeline": ("cpm_nb.bench.pipeline:bench_pipeline", "augmented 368-px examples/s: tf.data vs per-sample NumPy/PIL/SciPy"),
    "records": ("cpm_nb.bench.records:bench_records", "TFRecord CRC-32C and reading MB/s: google-crc32c vs the pure-Python loop"),
    "predict": ("cpm_nb.bench.predict:bench_predict", "end-to-end predict images/s (JPEG -> joints) vs raw forward, batch 8"),
}


def timeit(fn: Callable[[], object], items: int = 1, warmup: int = 1, repeat: int = 5,
           min_time: float = 0.5) -> dict:
    """Time ``fn`` (which processes ``items`` items per call); best-of and median rates.

    Runs ``warmup`` untimed calls, then at least ``repeat`` timed calls and at
    least ``min_time`` seconds in total.
    """
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    median = times[len(times) // 2]
    return {
        "calls": len(times),
        "best_s": times[0],
        "median_s": median,
        "per_s": items / median,
    }


def machine() -> dict:
    import os

    return {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count()}


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    """Print ``rows`` of (label, value) under ``title``, aligned."""
    width = max(len(label) for label, _ in rows)
    print(title)
    print("-" * len(title))
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cpm_nb.bench",
        description="Benchmarks that print our figures beside a baseline measured in the same run.",
        epilog="benchmarks:\n" + "\n".join(f"  {k:<10} {v[1]}" for k, v in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS), metavar="NAME",
                        help="one of: " + ", ".join(sorted(BENCHMARKS)))
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions (a smoke run; figures are noisier)")
    args = parser.parse_args(argv)
    module, function = BENCHMARKS[args.name][0].split(":")
    result = getattr(importlib.import_module(module), function)(args)
    result = {"benchmark": args.name, "machine": machine(), **result}
    if args.json:
        from cpm_nb.core import files

        files.atomic_write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0
