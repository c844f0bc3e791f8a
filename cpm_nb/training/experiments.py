"""The stage experiment: does refining beliefs over more stages help, and where?

CPM's claim is that later stages, which see ever more context, correct the
beliefs of earlier ones.  The test only means something when stage 1 cannot
already see the whole person: the ``stage-experiment`` configuration
(:data:`cpm_nb.model.architecture.NAMED_CONFIGS`) keeps the paper's proportions at a
CPU's scale (stage 1 sees 0.48 of a 128-px crop, the paper's 0.43 of 368 px;
each stage adds 0.63 crops, the paper's 0.65).

:class:`StageExperiment` trains it with 1, 2, 3, 4 and 6 stages, several seeds
each, at **equal compute**: every run gets the same forward FLOPs x steps as the
6-stage run, so a 1-stage net trains 1.375x as many steps (2,750 against 2,000).  With
``equal="steps"`` (``cpm-nb experiment stages --equal steps``) every stage count trains the
reference run's steps instead, as the paper compares its depths; those runs differ from the
equal-compute ones (their keys hold their steps) except the reference run, the same in both.
:mod:`cpm_nb.training.equal_steps` reads equal-step points off the committed curves.  Every run is a cached
run like :func:`cpm_nb.training.loop.load_or_train`'s.  :func:`run_stage_experiment`
returns the results as JSON (``cpm-nb experiment stages --json-out FILE``), and
:func:`summarize_runs` the mean and spread over seeds, overall, per stage of each
net and on the subsets where context decides (occluded joints, a second person in
the crop, crossed limbs).  The committed result lives in
``cpm_nb/results/stage_experiment.json``; :func:`load_committed` reads it.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cpm_nb.core import files, paths

RESULTS_FILE = "cpm_nb/results/stage_experiment.json"  # in the checkout; shipped with the package
# longer budgets, validated 8 times a run (are the curves flat? does the ranking hold?): twice
# the compute for every stage count (seed 0) and for 2 vs 6 stages (3 seeds); 4x for 2 vs 6
EQUAL_MODES = ("compute", "steps")
SCALED_RESULTS = {"stage_experiment_2x": 2, "stage_experiment_2x_2v6": 2,
                  "stage_experiment_4x_2v6": 4}


@dataclass(frozen=True)
class StageExperiment:
    """What the experiment trains: the model, stage counts, seeds and the budget."""

    model: str = "stage-experiment"  # a named configuration
    stage_counts: tuple[int, ...] = (1, 2, 3, 4, 6)
    seeds: tuple[int, ...] = (0, 1, 2)
    reference_stages: int = 6
    reference_steps: int = 2000  # steps of the reference net; the others: same FLOPs x steps
    profile: str = "cpu"  # optimizer, schedule, sigma, batch and data sizes of this profile
    run_profile: str = "stages"  # the runs' name prefix and their own data folder
    n_val: int = 600  # validation images (more people than the cpu profile, for the subsets)
    validations: int = 4  # validations per run (the learning curve's points)
    # Training settings of every run, pinned here (not read from the profile, whose own
    # schedule may change): Adam at 1e-3 after a 100-step warm-up, x0.1 at decay_at of the
    # steps, sigma 5 px, batch 16, the profile's 3,000 training images, float32 (the
    # committed runs' precision: bf16 would change every number).
    training: tuple[tuple[str, object], ...] = (
        ("optimizer", "adam"), ("learning_rate", 1e-3), ("schedule", "step"),
        ("warmup_steps", 100), ("lr_decay_factor", 0.1), ("weight_decay", 5e-4),
        ("sigma", 5.0), ("batch_size", 16), ("checkpoint_every", 50), ("n_train", 3000),
        ("precision", "float32"))
    decay_at: float = 0.8
    equal: str = "compute"  # compute: same FLOPs x steps as the reference; steps: its steps

    def __post_init__(self):
        if self.equal not in EQUAL_MODES:
            from cpm_nb.core.errors import ConfigError

            raise ConfigError(f"equal must be one of {', '.join(EQUAL_MODES)}, not "
                              f"{self.equal!r}")

    def config(self, stages: int):
        from cpm_nb.model import architecture

        return architecture.get_config(self.model).replace(stages=stages)

    def flops(self, stages: int) -> int:
        from cpm_nb.model import architecture

        return architecture.flops_per_image(self.config(stages))

    def steps(self, stages: int) -> int:
        """Steps with the reference run's forward FLOPs x steps, rounded to 50 (equal
        compute); the reference run's steps (``equal="steps"``)."""
        if self.equal == "steps":
            return self.reference_steps
        budget = self.reference_steps * self.flops(self.reference_stages)
        return max(50, int(round(budget / self.flops(stages) / 50)) * 50)

    def train_config(self, stages: int, seed: int):
        """One run: ``profile``'s settings, its own run name and data folder (``run_profile``)."""
        from cpm_nb.core.config import resolve_profile
        from cpm_nb.training.config import train_config

        steps = self.steps(stages)
        cfg = train_config(resolve_profile(self.profile), model=self.config(stages), steps=steps,
                           seed=seed, n_val=self.n_val,
                           eval_every=max(50, steps // self.validations // 50 * 50),
                           **self._pinned(steps))
        return cfg.replace(profile=self.run_profile,
                           synthetic=cfg.synthetic.replace(name=self.run_profile))

    def _pinned(self, steps: int) -> dict:
        pinned = dict(self.training)
        if self.decay_at:
            pinned["lr_decay_steps"] = max(1, int(self.decay_at * steps))
        return pinned

    def scaled(self, budget: float = 1.0, stage_counts=None, validations=None):
        """The same experiment with ``budget`` times the compute (``budget=2``: do the
        curves still move with twice the steps?), optionally fewer stage counts and more
        validations per run."""
        return dataclasses.replace(
            self, reference_steps=int(round(self.reference_steps * budget / 50)) * 50,
            stage_counts=tuple(stage_counts or self.stage_counts),
            validations=validations or self.validations)

    def doubled(self):
        """The runs of the double-budget results (:data:`SCALED_RESULTS`): twice the compute,
        8 validations each; the better-trained networks the notebooks look inside."""
        return self.scaled(2, validations=8)

    def as_json(self) -> dict:
        out = dataclasses.asdict(self)
        if self.equal == "compute":  # the default, which results written before it lack
            del out["equal"]
        return out


EXPERIMENTS = {
    "cpu": StageExperiment(),
    # on a GPU the notebooks draw the same runs (the presets hold the ones they look inside;
    # the others train there at about the estimate the command prints)
    "gpu": StageExperiment(),
    # a smoke version for tests and CI: two stage counts, one seed, a few steps
    "fast": StageExperiment(stage_counts=(1, 2), seeds=(0,), reference_stages=2,
                            reference_steps=100, profile="fast", run_profile="stages-fast",
                            n_val=32, training=(), decay_at=0.0),
}


def run_one(exp: StageExperiment, stages: int, seed: int, cache_dir=None,
            progress: bool | None = None, verbose: bool = True) -> tuple[dict, dict]:
    """Train (or load) one run of the experiment; return its row and its learning curve."""
    trained = trained_run(exp, stages, seed, cache_dir, progress, verbose)
    m = trained.meta["metrics"]
    row = {"stages": stages, "seed": seed, "steps": exp.steps(stages),
           "flops_per_image": exp.flops(stages), "train_s": trained.meta["wall_s"],
           "pckh": m["mean"], "per_stage": m["per_stage"], "hard": m["hard"],
           "hard_counts": m["hard_counts"], "hard_per_stage": m["hard_per_stage"],
           "errors_per_stage": m.get("errors_per_stage"), "run": trained.run_dir.name}
    return row, learning_curve(trained.run_dir)


def learning_curve(run_dir) -> dict:
    """A run's validation PCKh@0.5 at each validation and its training loss every
    checkpoint, from its ``history.json``."""
    from cpm_nb.training import runs

    path = Path(run_dir) / runs.HISTORY
    h = files.read_json(path, "learning curves")
    curve = {key: h.get(key, []) if isinstance(h, dict) else None
             for key in ("val_step", "val_pckh", "step", "loss")}
    numbers = all(isinstance(v, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        for v in curve.values())
    if not numbers or len(curve["val_step"]) != len(curve["val_pckh"]) \
            or len(curve["step"]) != len(curve["loss"]):
        from cpm_nb.core.errors import DataError

        raise DataError(f"learning curves {path}: not a training history (lists of numbers "
                        "'val_step'/'val_pckh' and 'step'/'loss' of equal lengths); delete "
                        f"the run folder {path.parent} to train the run again")
    return {**curve, "loss": [round(v, 4) for v in curve["loss"]]}


def trained_run(exp: StageExperiment, stages: int, seed: int = 0, cache_dir=None,
                progress: bool | None = None, verbose: bool = True):
    """One run of the experiment as a :class:`cpm_nb.training.runs.Trained` (loaded from the
    cache; trained first, with a printed estimate, when it is not there)."""
    from cpm_nb.training.loop import train_cached

    return train_cached(exp.train_config(stages, seed), cache_dir=cache_dir,
                        progress=progress, verbose=verbose)


def data_folder(exp: StageExperiment):
    """The prepared TFRecord folder the experiment's runs train and validate on."""
    from cpm_nb.training.loop import data_dir

    return data_dir(exp.train_config(exp.stage_counts[0], exp.seeds[0]))


def run_stage_experiment(exp: StageExperiment, seeds: int | None = None, cache_dir=None,
                         progress: bool | None = None, verbose: bool = True,
                         command: str | None = None) -> dict:
    """Train every run (cached), and return the per-run rows, the summary and provenance.

    ``seeds``: use only the first ``seeds`` seeds of ``exp``; ``command``: the command
    line recorded in the provenance."""
    chosen = exp.seeds[:seeds] if seeds else exp.seeds
    exp = dataclasses.replace(exp, seeds=tuple(chosen))
    start = time.perf_counter()
    rows, curves = [], {}
    for seed in exp.seeds:  # seed by seed: a partial run still covers every stage count
        for stages in exp.stage_counts:
            if verbose:
                print(f"[stage experiment] {stages} stage(s), seed {seed}: "
                      f"{exp.steps(stages)} steps", flush=True)
            row, curves[f"{stages}/{seed}"] = run_one(exp, stages, seed, cache_dir, progress,
                                                      verbose)
            rows.append(row)
    from cpm_nb.model import architecture

    cfg = exp.config(max(exp.stage_counts))
    return {"experiment": exp.as_json(), "model": dataclasses.asdict(cfg),
            "receptive_field_per_stage": architecture.stage_receptive_fields(cfg),
            "receptive_field_over_crop": architecture.describe(cfg)["receptive_field_over_crop"],
            "summary": summarize_runs(rows), "runs": rows,
            "learning_curves": curves,
            "provenance": provenance(time.perf_counter() - start, command)}


def seconds_per_flop(rows) -> float:
    """Training seconds per forward FLOP x step of finished runs (the median): what an
    estimate of a run of this experiment scales."""
    rates = [r["train_s"] / (r["steps"] * r["flops_per_image"]) for r in rows]
    return float(np.median(rates))


def plan(exp: StageExperiment, seeds: int | None = None, cache_dir=None) -> list[dict]:
    """What :func:`run_stage_experiment` would do, training nothing: every run (stages,
    seed), its steps, whether it is cached, and for a run to train its expected seconds
    (for the ``cpu`` experiment, from every committed float32 run's seconds per FLOP x step)."""
    from cpm_nb.training import runs

    rate = (seconds_per_flop([row for name in ("stage_experiment", *SCALED_RESULTS)
                              for row in load_committed(name)["runs"]])
            if exp.profile == "cpu" else None)
    out = []
    for seed in (exp.seeds[:seeds] if seeds else exp.seeds):
        for stages in exp.stage_counts:
            cfg = exp.train_config(stages, seed)
            source = "cached" if runs.cached(cfg, cache_dir) is not None else "train"
            seconds = (rate * cfg.steps * exp.flops(stages)
                       if source == "train" and rate else None)
            out.append({"run": f"{stages}st", "stages": stages, "seed": seed,
                        "steps": cfg.steps, "source": source, "name": cfg.run_name,
                        "seconds": seconds})
    return out


def format_plan(rows: list[dict]) -> str:
    """A plan (:func:`plan`, or the ablations') as text, with the expected time of the runs
    to train."""
    lines = [f"{'run':>5} {'seed':>4} {'steps':>6}  {'source':<10} {'estimate':>9}  run name"]
    for r in rows:
        est = f"{r['seconds'] / 60:.0f} min" if r["seconds"] else "-"
        lines.append(f"{r['run']:>5} {r['seed']:>4} {r['steps']:>6}  {r['source']:<10} "
                     f"{est:>9}  {r['name']}")
    todo = [r for r in rows if r["source"] == "train"]
    total = sum(r["seconds"] or 0 for r in todo)
    took = f"{total / 3600:.1f} h" if total >= 7200 else f"{total / 60:.0f} min"
    lines.append(f"{len(todo)} run(s) to train" + (
        f", about {took} on this machine's 2 cores (float32, as the committed runs)"
        if total else ""))
    return "\n".join(lines)


def _stats(values) -> dict:
    v = np.array([x for x in values if x is not None], float)
    if not len(v):
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def summarize_runs(rows: list[dict]) -> dict:
    """Per stage count: PCKh@0.5 mean/std/min/max over seeds, the mean per-stage curve,
    the subsets and the error shares (last stage), and the mean training time."""
    out = {}
    for stages in sorted({r["stages"] for r in rows}):
        mine = [r for r in rows if r["stages"] == stages]
        per_stage = np.array([r["per_stage"] for r in mine], float)
        subsets = {k: _stats(r["hard"][k] for r in mine) for k in mine[0]["hard"]}
        errors = {k: _stats(r["errors_per_stage"][k][-1] for r in mine)
                  for k in (mine[0].get("errors_per_stage") or {})}
        out[str(stages)] = {"pckh": _stats(r["pckh"] for r in mine),
                            "per_stage_mean": per_stage.mean(0).tolist(),
                            "per_stage_std": per_stage.std(0, ddof=1).tolist()
                            if len(mine) > 1 else [0.0] * per_stage.shape[1],
                            "subsets": subsets, "errors": errors,
                            "steps": mine[0]["steps"],
                            "train_s_mean": float(np.mean([r["train_s"] for r in mine]))}
    return out


def provenance(wall_s: float, command: str | None = None) -> dict:
    """The command, commit, machine and date that produced a result."""
    import os

    from cpm_nb.core import runtime

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    command = command or "cpm-nb --profile cpu experiment stages --json-out " + RESULTS_FILE
    return {"command": command,
            "commit": commit, "machine": {"python": platform.python_version(),
                                          "processor": platform.machine(),
                                          "cpus": os.cpu_count(),
                                          "backend": runtime.keras_backend()},
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "wall_s": wall_s}


def load_committed(name: str = "stage_experiment", path=None) -> dict:
    """A committed result, ``cpm_nb/results/NAME.json`` (installed with the package, so
    it is there on Colab too): ``stage_experiment`` (the experiment), or one of
    :data:`SCALED_RESULTS` (at 2 or 4 times the compute)."""
    path = Path(path) if path else paths.results_path(name)
    return files.read_json(path, "committed result")


def _fmt(stats: dict) -> str:
    m = stats["mean"]
    if m is None or not math.isfinite(m):
        return "-"
    if stats.get("n") == 1:  # one seed: no spread to show
        return f"{m:5.1f}"
    return f"{m:5.1f} ± {stats['std']:.1f}"


def format_summary(result: dict) -> str:
    """The summary as a text table: PCKh@0.5 and the subsets, mean ± std over seeds
    (the value alone where there is one seed)."""
    summary = result["summary"]
    keys = ("occluded_joints", "with_distractors", "limbs_crossed")
    head = (f"{'stages':>6} {'steps':>6} {'PCKh@0.5':>12} {'occluded':>12} {'distractor':>12} "
            f"{'crossed':>12} {'on other %':>11} {'L/R swap %':>11} {'train s':>8}")
    lines = [head]
    for stages, s in summary.items():
        errs = s["errors"]
        lines.append(
            f"{stages:>6} {s['steps']:>6} {_fmt(s['pckh']):>12} "
            + " ".join(f"{_fmt(s['subsets'][k]):>12}" for k in keys)
            + f" {_fmt(errs['on_other_person']):>11} {_fmt(errs['left_right_swapped']):>11}"
            + f" {s['train_s_mean']:>8.0f}")
    return "\n".join(lines)


def format_per_stage(result: dict) -> str:
    """PCKh@0.5 after each stage inside each net (mean over seeds)."""
    lines = []
    for stages, s in result["summary"].items():
        curve = " -> ".join(f"{v:.1f}" for v in s["per_stage_mean"])
        lines.append(f"{stages} stage(s): {curve}")
    return "\n".join(lines)


def check_result(result, path) -> dict:
    """``result`` if it has the shape of a stage-experiment result (what
    :func:`run_stage_experiment` writes), else one :class:`DataError` naming ``path``."""
    from cpm_nb.core.errors import DataError

    def is_run(r):
        return (isinstance(r, dict) and all(isinstance(r.get(k), int) for k in ("stages", "seed"))
                and isinstance(r.get("pckh"), (int, float)) and isinstance(r.get("hard"), dict))

    ok = (isinstance(result, dict) and isinstance(result.get("experiment"), dict)
          and isinstance(result.get("summary"), dict) and isinstance(result.get("runs"), list)
          and all(is_run(r) for r in result["runs"])
          and all(isinstance(s, dict) and "pckh" in s and "steps" in s
                  for s in result["summary"].values()))
    if not ok:
        raise DataError(f"{path}: not a stage-experiment result (an 'experiment', a 'summary' "
                        "and 'runs' with stages, seed, pckh and hard subsets); give a file "
                        "written by 'cpm-nb experiment stages --json-out FILE'")
    return result


def format_side_by_side(results: list[dict]) -> str:
    """Results of the same experiment in both modes (equal compute, equal steps) side by
    side: per stage count, each mode's steps and PCKh@0.5 (mean ± std over seeds)."""
    by_mode = {r["experiment"].get("equal", "compute"): r["summary"] for r in results}
    modes = [m for m in EQUAL_MODES if m in by_mode]
    counts = sorted({int(k) for s in by_mode.values() for k in s})
    head = f"{'stages':>6} " + " ".join(f"{'equal ' + m + ': steps':>20} {'PCKh@0.5':>12}"
                                        for m in modes)
    lines = [head]
    for n in counts:
        cells = []
        for m in modes:
            s = by_mode[m].get(str(n))
            cells.append(f"{s['steps']:>20} {_fmt(s['pckh']):>12}" if s
                         else f"{'-':>20} {'-':>12}")
        lines.append(f"{n:>6} " + " ".join(cells))
    return "\n".join(lines)


PAIRED_MEASURES = ("pckh", "occluded_joints", "with_distractors", "limbs_crossed")


def paired_stages(result: dict, reference: int = 2) -> list[dict]:
    """Every stage count minus ``reference`` stages, paired by seed (same data order and
    initialisation of the shared layers), on PCKh@0.5 and the subsets: the per-seed
    differences, the mean with its 95 % t interval and the paired t-test
    (:func:`cpm_nb.evaluation.statistics.paired_difference`), and beside them the
    validation set's binomial sampling error of the reference's mean on its joints."""
    from cpm_nb.evaluation.statistics import binomial_se, paired_difference

    runs = {(r["stages"], r["seed"]): r for r in result["runs"]}
    out = []
    for stages in sorted({s for s, _ in runs}):
        seeds = sorted(seed for s, seed in runs if s == stages and (reference, seed) in runs)
        if stages == reference or not seeds:
            continue
        for measure in PAIRED_MEASURES:
            def score(r, m=measure):
                return r["pckh"] if m == "pckh" else r["hard"][m]

            a = [score(runs[(stages, s)]) for s in seeds]
            b = [score(runs[(reference, s)]) for s in seeds]
            counts = runs[(reference, seeds[0])].get("hard_counts", {})
            joints = (counts.get("occluded_joints", 0) + counts.get("visible_joints", 0)
                      if measure == "pckh" else counts.get(measure, 0))
            diff = paired_difference(a, b)
            out.append({"stages": stages, "reference": reference, "measure": measure,
                        "seeds": seeds, "difference": diff.as_json(),
                        "verdict": diff.verdict(_stages(stages), _stages(reference)),
                        "reference_joints": joints,
                        "reference_binomial_se": binomial_se(float(np.mean(b)), joints)
                        if joints else None})
    return out


def _stages(n: int) -> str:
    return f"{n} stage{'s' if n != 1 else ''}"


def format_paired_stages(rows: list[dict]) -> str:
    """:func:`paired_stages` as text, one line per stage count and measure."""
    lines = [f"{'a-b':>5} {'measure':>17} {'per seed':>20}  mean [95 % CI]; verdict; "
             "validation SE of b"]
    for row in rows:
        d = row["difference"]
        per_seed = " ".join(f"{v:+.1f}" for v in d["differences"])
        ci = (f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]" if d["low"] is not None
              else f"{d['mean']:+.1f}")
        se = row["reference_binomial_se"]
        lines.append(f"{row['stages']}-{row['reference']:<3} {row['measure']:>17} "
                     f"{per_seed:>20}  {ci}; {row['verdict']}"
                     + (f"; SE {se:.1f} ({row['reference_joints']} joints)" if se else ""))
    return "\n".join(lines)
