"""Equal steps from the committed learning curves: the paper's comparison without training.

The paper trains every depth for the same number of iterations; the stage experiment gives
every depth the same compute (:mod:`cpm_nb.training.experiments`).  The committed runs
already hold equal-step points: runs of one network and one seed follow the same trajectory
(same initial weights, same data order, same learning rate) until their learning rate
decays at ``decay_at`` (0.8) of their steps, whatever their budget, so every validation
made before a run's decay is a point of *the* curve of that network and seed.  Two networks
of the same seed compare at every step both curves hold while both are still at the full
learning rate: :func:`curve_points` merges the curves of every committed result (and checks
that runs of one network and seed agree where they overlap), :func:`equal_step_table` takes
the differences per seed and their paired mean with a t interval
(:func:`cpm_nb.evaluation.statistics.paired_difference`).

``cpm-nb experiment stages --report equal-steps`` prints the table; the numbers are
committed in ``cpm_nb/results/equal_steps_committed.json``.
"""

from __future__ import annotations

import itertools

from cpm_nb.core.errors import DataError

# the committed float32 results (round 2) whose curves are merged
COMMITTED = ("stage_experiment", "stage_experiment_2x", "stage_experiment_2x_2v6",
             "stage_experiment_4x_2v6")
RESULTS_FILE = "cpm_nb/results/equal_steps_committed.json"


def decay_step(result: dict, steps: int) -> int:
    """The step at which a run of ``steps`` steps decays its learning rate (the
    experiment's ``decay_at``, 0.8 for every committed result; without one, never)."""
    decay_at = result["experiment"].get("decay_at", 0.8)
    return max(1, int(decay_at * steps)) if decay_at else steps


def curve_points(results: dict[str, dict], tolerance: float = 1e-6) -> dict:
    """``{(stages, seed): {step: PCKh@0.5}}``: every validation made at the full learning
    rate (at or before the run's decay) in the curves of ``results`` (name -> result)."""
    points: dict = {}
    for name, result in results.items():
        for run in result["runs"]:
            curve = result["learning_curves"][f"{run['stages']}/{run['seed']}"]
            last = decay_step(result, run["steps"])
            mine = points.setdefault((run["stages"], run["seed"]), {})
            for step, pckh in zip(curve["val_step"], curve["val_pckh"]):
                if step > last:
                    continue
                if step in mine and abs(mine[step] - pckh) > tolerance:
                    raise DataError(f"{name}: {run['stages']} stage(s), seed {run['seed']} "
                                    f"scores {pckh:.4f} at step {step} where another run of the "
                                    f"same network and seed scored {mine[step]:.4f}; the curves "
                                    "do not share a trajectory (check the results' settings)")
                mine[step] = float(pckh)
    return points


def equal_step_table(points: dict, pairs=None) -> list[dict]:
    """For each pair ``(a, b)`` of stage counts (``a > b``; default: every pair the curves
    allow) and every step where some seed has both: the differences ``a - b`` per seed and,
    where two or more seeds share the step, their paired mean with its 95 % t interval."""
    from cpm_nb.evaluation.statistics import paired_difference

    counts = sorted({stages for stages, _ in points})
    pairs = pairs or [(a, b) for b, a in itertools.combinations(counts, 2)]
    rows = []
    for a, b in pairs:
        seeds = sorted({s for st, s in points if st == a} & {s for st, s in points if st == b})
        steps = sorted({step for s in seeds for step in points[(a, s)]
                        if step in points[(b, s)]})
        for step in steps:
            have = [s for s in seeds if step in points[(a, s)] and step in points[(b, s)]]
            da = [points[(a, s)][step] for s in have]
            db = [points[(b, s)][step] for s in have]
            diff = paired_difference(da, db)
            rows.append({"a": a, "b": b, "step": step, "seeds": have,
                         "a_pckh": da, "b_pckh": db, "difference": diff.as_json(),
                         "verdict": diff.verdict(f"{a} stages", f"{b} stages")})
    return rows


def committed_results() -> dict[str, dict]:
    """The committed results whose curves :func:`equal_step_report` merges."""
    from cpm_nb.training.experiments import load_committed

    return {name: load_committed(name) for name in COMMITTED}


def equal_step_report(results: dict[str, dict] | None = None) -> dict:
    """The equal-step table of the committed curves as JSON (what ``RESULTS_FILE`` holds)."""
    results = committed_results() if results is None else results
    points = curve_points(results)
    return {"what": "PCKh@0.5 (%) of a minus b stages at equal steps, both at the full "
                    "learning rate (before either run's decay), from the committed curves; "
                    "the mean over seeds with its 95 % t interval (paired by seed)",
            "sources": sorted(results),
            "curves": {f"{a}/{s}": {str(k): v for k, v in sorted(c.items())}
                       for (a, s), c in sorted(points.items())},
            "rows": equal_step_table(points)}


def format_equal_steps(report: dict, pairs=None) -> str:
    """The table as text: one line per pair and step, the per-seed differences, then the
    paired mean [95 % interval] where two or more seeds share the step."""
    lines = [f"{'a-b':>5} {'step':>6} {'seed 0':>7} {'seed 1':>7} {'seed 2':>7}  "
             "paired mean [95 % CI], verdict"]
    for row in report["rows"]:
        if pairs and (row["a"], row["b"]) not in pairs:
            continue
        by_seed = dict(zip(row["seeds"], row["difference"]["differences"]))
        cells = " ".join(f"{by_seed[s]:>+7.1f}" if s in by_seed else f"{'':>7}"
                         for s in (0, 1, 2))
        diff = row["difference"]
        tail = ""
        if diff["n"] > 1:
            tail = (f"  {diff['mean']:+.1f} [{diff['low']:+.1f}, {diff['high']:+.1f}], "
                    f"{row['verdict']}")
        lines.append(f"{row['a']}-{row['b']:<3} {row['step']:>6} {cells}{tail}")
    return "\n".join(lines)
