"""Which presets the package ships, and how each is trained again.

:data:`PRESETS` names every preset and the code that makes its configuration: the ``cpu``
profile's model (notebooks 05-07) and the stage experiment's double-budget runs that the
notebooks look inside (6 and 2 stages, seed 0).  :func:`check` compares each shipped
preset's configuration key with the one the code makes now (a test fails when they drift
apart: then ``cpm-nb presets build`` trains them again); :func:`build` trains a preset
from scratch and writes it into the package with its provenance.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cpm_nb.core import files
from cpm_nb.training import presets, runs


@dataclass(frozen=True)
class Preset:
    """A shipped model: its name, what it is for and the code that makes its configuration."""

    name: str
    about: str
    config: Callable  # () -> TrainConfig


def _profile_config(name: str):
    from cpm_nb.core.config import resolve_profile
    from cpm_nb.training.config import train_config

    return train_config(resolve_profile(name))


def _stage_run(stages: int):
    from cpm_nb.training.experiments import EXPERIMENTS

    return EXPERIMENTS["cpu"].doubled().train_config(stages, 0)


PRESETS = {p.name: p for p in (
    Preset("cpu", "the cpu profile's model: 2 stages, 128 px, stage 1 sees 0.48 of the crop "
                  "(notebooks 05-07)", lambda: _profile_config("cpu")),
    Preset("stages-2x-6st", "the stage experiment's 6-stage network at twice the budget, "
                            "seed 0 (notebooks 04-06)", lambda: _stage_run(6)),
    Preset("stages-2x-2st", "the stage experiment's 2-stage network at twice the budget, "
                            "seed 0 (notebook 06)", lambda: _stage_run(2)),
)}


def check() -> list[dict]:
    """For every preset the code defines: the key it ships with, the key the code makes now,
    and whether they agree (and the files are there)."""
    rows = []
    for name, preset in PRESETS.items():
        want = preset.config().key()
        try:
            have = presets.info(name).get("key")
        except Exception:  # missing or unreadable: not shipped
            have = None
        rows.append({"name": name, "shipped_key": have, "code_key": want,
                     "ok": have == want and (presets.presets_dir() / name /
                                             runs.MODEL_FILE).is_file()})
    return rows


def build(name: str, cache_dir=None, command: str | None = None, progress=None) -> dict:
    """Train preset ``name`` from scratch (a fresh run in the cache, whatever is there), copy
    its model into the package and write its ``preset.json``; return that record."""
    from cpm_nb.core import runtime
    from cpm_nb.data.synthetic import GENERATOR_VERSION
    from cpm_nb.training.config import devices_for
    from cpm_nb.training.loop import train

    if name not in PRESETS:
        raise KeyError(f"no preset {name!r} (presets: {', '.join(PRESETS)})")
    cfg = PRESETS[name].config()
    run = runs.run_dir(cfg, cache_dir)
    start = time.perf_counter()
    result = train(cfg, run, resume=False, progress=progress)
    wall = time.perf_counter() - start
    target = presets.presets_dir() / name
    staging = files.staging_folder(target)
    try:
        for item in (runs.MODEL_FILE, runs.CONFIG_FILE, runs.HISTORY):
            shutil.copy2(run / item, staging / item)
        dev = devices_for(cfg)
        record = {
            "name": name, "about": PRESETS[name].about, "key": cfg.key(),
            "command": command or f"cpm-nb presets build {name}",
            "commit": _commit(), "generator_version": GENERATOR_VERSION,
            "pckh": result.metrics["mean"], "per_stage": result.metrics["per_stage"],
            "steps": cfg.steps, "train_s": round(result.wall_s, 1),
            "command_s": round(wall, 1), "precision": dev.precision,
            "machine": _machine(runtime), "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                  time.gmtime()),
        }
        files.atomic_write_json(staging / presets.PRESET_FILE, record)
        files.swap_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def _commit() -> str | None:
    import subprocess

    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def _machine(runtime) -> dict:
    import os
    import platform

    flags = runtime.cpu_flags()
    return {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "bf16_instructions": sorted(f for f in runtime.BF16_CPU_FLAGS if f in flags),
            "devices": runtime.visible_devices(), "backend": runtime.keras_backend(),
            "versions": runtime.versions()}


def sizes() -> dict[str, int]:
    """Bytes on disk of every shipped preset."""
    root = presets.presets_dir()
    return {name: sum(f.stat().st_size for f in (root / name).iterdir() if f.is_file())
            for name in presets.names()}
