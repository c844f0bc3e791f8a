"""The source article's experiment: the same network with 2 and with 6 stages.

:func:`stage_experiment` trains the profile's network once per number of stages on
the same budget (cached like :func:`cpm_nb.train.load_or_train`);
:func:`experiment_table` and :func:`format_experiment` put the results side by side.
"""

from __future__ import annotations

from cpm_nb import config as _config

# Steps of each run of the experiment (same data, batch, input size and steps for both).
# On the CPU a short smoke run that keeps a first `cpm-nb notebooks` within ~15 minutes.
EXPERIMENT_STEPS = {"fast": 20, "cpu": 400, "gpu": 30000}
EXPERIMENT_STAGES = (2, 6)


def stage_experiment(profile: str | _config.Profile, stages=EXPERIMENT_STAGES,
                     steps: int | None = None, cache_dir=None, progress: bool | None = None,
                     verbose: bool = True) -> dict:
    """Train the profile's network with each number of ``stages`` on the same budget and
    return ``{stages: Trained}``."""
    from cpm_nb.train import load_or_train
    from cpm_nb.train_config import TRAINING

    name = profile if isinstance(profile, str) else profile.name
    steps = steps or EXPERIMENT_STEPS.get(name, 1000)
    every = TRAINING.get(name, TRAINING["cpu"])["checkpoint_every"]
    eval_every = max(every, steps // 4 // every * every)
    return {n: load_or_train(profile, cache_dir=cache_dir, progress=progress, verbose=verbose,
                             stages=n, steps=steps, eval_every=eval_every)
            for n in stages}


def experiment_table(runs: dict) -> list[dict]:
    """One row per run: PCKh@0.5 overall, on the hard subsets, per stage, wall time."""
    rows = []
    for n, trained in runs.items():
        m = trained.meta["metrics"]
        rows.append({"stages": n, "params": int(trained.model.count_params()),
                     "steps": trained.meta["steps"], "pckh": m["mean"],
                     "occluded_joints": m["hard"]["occluded_joints"],
                     "with_distractors": m["hard"]["with_distractors"],
                     "article_25px": m["article_25px"], "per_stage": m["per_stage"],
                     "train_s": trained.meta["wall_s"]})
    return rows


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


def format_experiment(rows: list[dict]) -> str:
    head = (f"{'stages':>6} {'params':>10} {'steps':>6} {'PCKh@0.5':>9} {'occluded':>9} "
            f"{'distract.':>9} {'25 px':>7} {'train s':>8}  per-stage PCKh@0.5")
    lines = [head]
    for r in rows:
        lines.append(f"{r['stages']:>6} {r['params']:>10,} {r['steps']:>6} {_fmt(r['pckh']):>9} "
                     f"{_fmt(r['occluded_joints']):>9} {_fmt(r['with_distractors']):>9} "
                     f"{_fmt(r['article_25px']):>7} {r['train_s']:>8.0f}  "
                     + " -> ".join(_fmt(v) for v in r["per_stage"]))
    return "\n".join(lines)
