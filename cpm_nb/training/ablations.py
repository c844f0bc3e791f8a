"""Attribution ablations: what does a second stage add, and why?

Going from 1 to 2 stages in the stage experiment (:mod:`cpm_nb.training.experiments`)
changes four things at once: the receptive field (62 -> 142 px), the depth, about 25 % more
parameters, and the belief-map input of stage 2.  And without a centre map, stage 1 (62 px of
a 128-px crop) cannot see the crop's border, so it cannot tell the centred person from a
distractor, while stage 2 can.  Each variant below changes one of those, as a field of
:class:`~cpm_nb.model.architecture.CPMConfig` (or ``TrainConfig.supervision``), so it enters
the run's key:

* ``a``: 1 stage with the 2-stage net's receptive field and parameter count: five k x k
  convolutions open stage 1 (``stage1_convs``, the field a later stage adds), their width
  (``stage1_channels``) chosen to match the parameters (:func:`matched_stage1_channels`);
* ``b``: 2 stages, stage 2 without the belief maps (``stage_beliefs=False``: it sees only the
  shared features);
* ``c``: 2 stages trained without intermediate supervision (``supervision="last"``: the loss
  of the last stage only; stage 1's head then learns only what stage 2 needs of its maps,
  not beliefs, so its score is a reference, not a stage-1 result);
* ``d``: 1 and 2 stages with a centre map, as the release has (a Gaussian at the crop centre,
  pooled into every stage, stage 1 included: ``center_map``, ``center_stage1``), which hands
  every stage the position cue; ``d1`` is paired with 1 stage and with 2 (does the cue close
  the gap a second stage closes?).

Every variant trains at **equal compute** at the double budget
(:meth:`StageExperiment.doubled`: the 6-stage net's forward FLOPs x 4,000 steps), with the
experiment's pinned settings and seeds, in float32 like the committed runs.  The baselines
are the committed double-budget runs of 1 and 2 stages (``stage_experiment_2x*.json``),
paired by seed (same seed: same data order, same initial weights wherever the layers
coincide); a baseline the committed results lack is trained only on request
(``train_missing=True``).  :func:`paired_rows` reports the per-seed differences and the
paired mean with its 95 % t interval (:mod:`cpm_nb.evaluation.statistics`), overall, on
occluded joints, with a distractor in the crop and for joints that land on the other person,
per stage where there are stages; beside them the validation set's own binomial sampling
error.  ``cpm-nb experiment ablations --which a,b,c,d --seeds 3 --json-out FILE``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from cpm_nb.core.errors import ConfigError

RESULTS_FILE = "cpm_nb/results/ablations_2x.json"
BUDGET = 2  # the ablations' compute: the double-budget stage experiment's
PRECISION = "float32"  # the committed baselines' precision (round 2)
BASELINE_RESULTS = ("stage_experiment_2x", "stage_experiment_2x_2v6")
# the release's centre map: sigma 21 px at 368 px, scaled to the crop
CENTER_SIGMA_AT_368 = 21.0
LOWER_IS_BETTER = ("on_other_person",)  # error shares: fewer is better
# scores compared (keys of a run's ``hard``; "on_other_person" comes from errors_per_stage)
SUBSETS = ("occluded_joints", "with_distractors")


@dataclass(frozen=True)
class Variant:
    """One ablation: its stage count, the model fields and training fields it changes, and
    the stage counts of the baselines it is paired with."""

    name: str
    label: str
    stages: int
    model: tuple[tuple[str, object], ...] = ()
    training: tuple[tuple[str, object], ...] = ()
    baselines: tuple[int, ...] = ()
    note: str = ""


def variants(exp=None) -> dict[str, Variant]:
    """The variants by name (``a``, ``b``, ``c``, ``d1``, ``d2``) for the experiment ``exp``
    (default: the ``cpu`` stage experiment)."""
    exp = exp or _experiment("cpu")
    base = exp.config(1)
    sigma = round(CENTER_SIGMA_AT_368 * base.input_size / 368, 2)
    centre = (("center_map", True), ("center_stage1", True), ("center_sigma", sigma))
    return {
        "a": Variant("a", "1 stage, 2 stages' field and parameters", 1,
                     (("stage1_convs", 5), ("stage1_channels", matched_stage1_channels(exp))),
                     baselines=(1, 2)),
        "b": Variant("b", "2 stages, no beliefs into stage 2", 2,
                     (("stage_beliefs", False),), baselines=(2, 1)),
        "c": Variant("c", "2 stages, loss on the last stage only", 2,
                     training=(("supervision", "last"),), baselines=(2,),
                     note="stage 1 is not trained to make beliefs (its maps only feed stage "
                          "2): its score is a reference, not a stage-1 result"),
        "d1": Variant("d1", "1 stage with a centre map", 1, centre, baselines=(1, 2)),
        "d2": Variant("d2", "2 stages with a centre map", 2, centre, baselines=(2,)),
    }


def expand(which) -> list[str]:
    """Variant names from ``a,b,c,d`` (``d`` = ``d1`` and ``d2``)."""
    names = []
    for w in which:
        names += ["d1", "d2"] if w == "d" else [w]
    known = set(variants_names())
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"unknown ablation(s) {', '.join(bad)}: give some of a, b, c, d "
                          "(d1, d2: the centre map with 1 or 2 stages)")
    return list(dict.fromkeys(names))


def variants_names() -> tuple[str, ...]:
    return ("a", "b", "c", "d1", "d2")


def _experiment(profile: str):
    from cpm_nb.training.experiments import EXPERIMENTS

    if profile not in EXPERIMENTS:
        raise ConfigError(f"the ablations have the profiles {', '.join(EXPERIMENTS)}, not "
                          f"{profile!r} (use --profile cpu)")
    return EXPERIMENTS[profile].doubled() if profile == "cpu" else EXPERIMENTS[profile]


def experiment(profile: str = "cpu"):
    """The stage experiment the ablations train beside: the double budget for ``cpu``; the
    ``fast`` smoke experiment as it is."""
    return _experiment(profile)


def matched_stage1_channels(exp) -> int:
    """The width of variant a's five stage-1 convolutions whose 1-stage net has the
    parameter count closest to the 2-stage net's."""
    from cpm_nb.model.architecture import count_params

    target = count_params(exp.config(2))
    one = exp.config(1)
    return min(range(8, 257), key=lambda c: abs(
        count_params(one.replace(stage1_convs=5, stage1_channels=c)) - target))


def model_config(exp, variant: Variant):
    return exp.config(variant.stages).replace(**dict(variant.model))


def equal_compute_steps(exp, model) -> int:
    """Steps with the reference run's forward FLOPs x steps (the stage experiment's rule:
    :meth:`StageExperiment.steps`), rounded to 50."""
    from cpm_nb.model.architecture import flops_per_image

    budget = exp.reference_steps * exp.flops(exp.reference_stages)
    return max(50, int(round(budget / flops_per_image(model) / 50)) * 50)


def train_config(exp, variant: Variant, seed: int):
    """The variant's run: the experiment's run of as many stages with the variant's model,
    equal-compute steps (and the schedule, decay and validations that follow from them),
    the variant's training fields and float32."""
    model = model_config(exp, variant)
    steps = equal_compute_steps(exp, model)
    base = exp.train_config(variant.stages, seed)
    pinned = exp._pinned(steps)
    changes = {"model": model, "steps": steps,
               "eval_every": max(50, steps // exp.validations // 50 * 50),
               **{k: v for k, v in pinned.items() if k == "lr_decay_steps"},
               **dict(variant.training)}
    if exp.profile == "cpu":
        changes["precision"] = PRECISION
    return base.replace(**changes)


def describe(exp, variant: Variant) -> dict:
    """Parameters, forward FLOPs, receptive field per stage and steps of a variant."""
    from cpm_nb.model import architecture

    model = model_config(exp, variant)
    return {"variant": variant.name, "label": variant.label, "stages": variant.stages,
            "model_fields": dict(variant.model), "training_fields": dict(variant.training),
            "params": architecture.count_params(model),
            "flops_per_image": architecture.flops_per_image(model),
            "receptive_field_per_stage": architecture.stage_receptive_fields(model),
            "steps": equal_compute_steps(exp, model), "note": variant.note}


# --- the baselines ---------------------------------------------------------------------


def committed_baselines(names=BASELINE_RESULTS) -> dict[tuple[int, int], dict]:
    """``{(stages, seed): run row}`` of the committed double-budget results."""
    from cpm_nb.training.experiments import load_committed

    rows = {}
    for name in names:
        for row in load_committed(name)["runs"]:
            rows.setdefault((row["stages"], row["seed"]), row)
    return rows


def estimate_seconds(exp, names, seeds, baselines: dict, train_missing: bool) -> dict:
    """The expected training seconds per variant (and for the missing baselines, when they
    are to be trained), from the committed runs' seconds per FLOP x step."""
    from cpm_nb.training.experiments import seconds_per_flop

    rate = seconds_per_flop(baselines.values())
    out = {}
    table = variants(exp)
    for name in names:
        d = describe(exp, table[name])
        out[name] = rate * d["steps"] * d["flops_per_image"] * len(seeds)
    if train_missing:
        for stages, seed in missing_baselines(names, seeds, baselines, exp):
            out[f"baseline {stages}st seed {seed}"] = (
                rate * exp.steps(stages) * exp.flops(stages))
    return out


def plan(which, seeds: int | None = None, profile: str = "cpu", cache_dir=None,
         train_missing: bool = False) -> list[dict]:
    """What :func:`run_ablations` would do: every run (variant or baseline, seed), where it
    comes from (committed, cached, to train or left out) and, for a run to train, its
    expected seconds (the committed float32 runs' seconds per FLOP x step)."""
    from cpm_nb.model.architecture import flops_per_image
    from cpm_nb.training import runs
    from cpm_nb.training.experiments import seconds_per_flop

    exp = experiment(profile)
    names = expand(which)
    chosen = exp.seeds[:seeds] if seeds else exp.seeds
    baselines = committed_baselines() if profile == "cpu" else {}
    rate = seconds_per_flop(baselines.values()) if baselines else None
    table = variants(exp)
    out = []

    def add(label, cfg, source, name=None):
        if source == "train" and runs.cached(cfg, cache_dir) is not None:
            source = "cached"
        seconds = (rate * cfg.steps * flops_per_image(cfg.model)
                   if source == "train" and rate else None)
        out.append({"run": label, "seed": cfg.seed, "steps": cfg.steps, "source": source,
                    "name": name or cfg.run_name, "seconds": seconds})

    for seed in chosen:
        for name in names:
            add(name, train_config(exp, table[name], seed), "train")
    for stages, seed in sorted({(b, s) for n in names for b in table[n].baselines
                                for s in chosen}):
        cfg = baseline_config(exp, stages, seed)
        if (stages, seed) in baselines:
            add(f"{stages}st", cfg, "committed", baselines[(stages, seed)]["run"])
        else:
            add(f"{stages}st", cfg, "train" if train_missing or not baselines else "left out")
    return out


def format_plan(rows: list[dict]) -> str:
    """:func:`plan` as text, with the expected time of the runs to train."""
    from cpm_nb.training.experiments import format_plan as format_runs

    lines = [format_runs(rows)]
    if any(r["source"] == "left out" for r in rows):
        lines.append("left out: baselines the committed results lack; their seeds are not "
                     "paired (--train-missing-baselines trains them)")
    return "\n".join(lines)


def baseline_config(exp, stages: int, seed: int):
    """A baseline run: the stage experiment's own run (float32 for ``cpu``, as committed)."""
    cfg = exp.train_config(stages, seed)
    return cfg.replace(precision=PRECISION) if exp.profile == "cpu" else cfg


def missing_baselines(names, seeds, baselines: dict, exp) -> list[tuple[int, int]]:
    table = variants(exp)
    need = sorted({(b, s) for n in names for b in table[n].baselines for s in seeds})
    return [k for k in need if k not in baselines]


# --- training and the table ------------------------------------------------------------


def run_row(trained, cfg, variant: str) -> dict:
    """One run's scores (the stage experiment's row and the variant's name)."""
    m = trained.meta["metrics"]
    return {"variant": variant, "stages": cfg.stages, "seed": cfg.seed, "steps": cfg.steps,
            "train_s": trained.meta["wall_s"], "pckh": m["mean"], "per_stage": m["per_stage"],
            "hard": m["hard"], "hard_counts": m["hard_counts"],
            "hard_per_stage": m["hard_per_stage"],
            "errors_per_stage": m.get("errors_per_stage"),
            "sampling_error": m.get("sampling_error"), "run": trained.run_dir.name}


def run_ablations(which, seeds: int | None = None, profile: str = "cpu", cache_dir=None,
                  train_missing: bool = False, progress: bool | None = None,
                  verbose: bool = True, command: str | None = None) -> dict:
    """Train (or load) every chosen variant for the first ``seeds`` seeds, pair each with
    its baselines and return the rows, the paired table and the provenance as JSON."""
    from cpm_nb.training.experiments import provenance
    from cpm_nb.training.loop import train_cached

    exp = experiment(profile)
    names = expand(which)
    chosen = exp.seeds[:seeds] if seeds else exp.seeds
    baselines = committed_baselines() if profile == "cpu" else {}
    table = variants(exp)
    if verbose:
        print(format_plan(plan(which, seeds, profile, cache_dir, train_missing)), flush=True)
    start = time.perf_counter()
    rows = []
    for seed in chosen:
        for name in names:
            v = table[name]
            cfg = train_config(exp, v, seed)
            if verbose:
                print(f"[ablations] {name} ({v.label}), seed {seed}: {cfg.steps} steps",
                      flush=True)
            trained = train_cached(cfg, cache_dir=cache_dir, progress=progress,
                                   verbose=verbose)
            rows.append(run_row(trained, cfg, name))
    base_rows = []
    for stages, seed in sorted({(b, s) for n in names for b in table[n].baselines
                                for s in chosen}):
        if (stages, seed) in baselines:
            base_rows.append({**baselines[(stages, seed)], "variant": "baseline",
                              "source": "committed"})
        elif train_missing or not baselines:
            cfg = baseline_config(exp, stages, seed)
            trained = train_cached(cfg, cache_dir=cache_dir, progress=progress,
                                   verbose=verbose)
            base_rows.append({**run_row(trained, cfg, "baseline"),
                              "source": "trained"})
    return {"experiment": exp.as_json(), "budget": BUDGET if profile == "cpu" else None,
            "precision": PRECISION if profile == "cpu" else None,
            "variants": {n: describe(exp, table[n]) for n in names},
            "baselines_described": {str(s): describe(exp, Variant(f"{s}st", f"{s} stage(s)",
                                                                   s))
                                    for s in sorted({r["stages"] for r in base_rows})},
            "runs": rows, "baselines": base_rows,
            "paired": paired_rows(rows, base_rows, table),
            "provenance": provenance(time.perf_counter() - start, command)}


def _scores(row: dict) -> dict[str, list[float | None]]:
    """Per measure, the score after each stage of a run (stage 1 first)."""
    stages = len(row["per_stage"])
    out = {"pckh": list(row["per_stage"])}
    for k in SUBSETS:
        out[k] = list(row["hard_per_stage"].get(k) or [None] * stages)
    errors = row.get("errors_per_stage") or {}
    out["on_other_person"] = list(errors.get("on_other_person") or [None] * stages)
    return out


def paired_rows(rows: list[dict], base_rows: list[dict], table: dict) -> list[dict]:
    """Variant minus baseline, paired by seed: per variant, baseline, measure and stage of
    the variant (stage 1, ..., last; the baseline's same stage, its last with the variant's
    last, or its last where it has fewer), the per-seed differences and the paired mean with
    its 95 % t interval, and the binomial sampling error of the baseline's mean score on its
    joints."""
    from cpm_nb.evaluation.statistics import binomial_se, paired_difference

    base = {(r["stages"], r["seed"]): r for r in base_rows}
    out = []
    for name in dict.fromkeys(r["variant"] for r in rows):
        mine = {r["seed"]: r for r in rows if r["variant"] == name}
        for b in table[name].baselines:
            seeds = [s for s in sorted(mine) if (b, s) in base]
            if not seeds:
                continue
            stages = len(mine[seeds[0]]["per_stage"])
            for measure in ("pckh", *SUBSETS, "on_other_person"):
                for st in range(stages):
                    va, vb = [], []
                    for s in seeds:
                        sa, sb = _scores(mine[s])[measure], _scores(base[(b, s)])[measure]
                        va.append(sa[st])
                        vb.append(sb[_baseline_stage(st, len(sa), len(sb))])
                    if any(v is None for v in va + vb):
                        continue
                    diff = paired_difference(va, vb)
                    joints = _joints(base[(b, seeds[0])], measure)
                    se = binomial_se(float(np.mean(vb)), joints) if joints else None
                    out.append({"variant": name, "baseline_stages": b, "measure": measure,
                                "stage": st + 1, "seeds": seeds, "variant_scores": va,
                                "baseline_scores": vb, "difference": diff.as_json(),
                                "verdict": diff.verdict(
                                    name, f"the {b}-stage baseline",
                                    lower_is_better=measure in LOWER_IS_BETTER),
                                "baseline_joints": joints, "baseline_binomial_se": se})
    return out


def _joints(row: dict, measure: str) -> int | None:
    counts = row.get("hard_counts") or {}
    if measure == "pckh":
        return sum(counts.get(k, 0) for k in ("occluded_joints", "visible_joints")) or None
    if measure == "on_other_person":
        return None  # a share of the distracted joints, not a PCKh
    return counts.get(measure)


def _baseline_stage(stage: int, stages: int, base_stages: int) -> int:
    """The baseline's stage (0-based) paired with the variant's ``stage``: the last with the
    last (a 1-stage variant is compared with a 2-stage network's output, not its stage 1),
    otherwise the same stage, or the baseline's last where it has fewer."""
    if stage == stages - 1:
        return base_stages - 1
    return min(stage, base_stages - 1)


def format_paired(result: dict, stages: str = "all") -> str:
    """The paired table as text: variant - baseline, measure, stage, per-seed differences,
    the mean [95 % CI], the verdict, and the baseline's binomial sampling error; ``stages``:
    ``"all"``, ``"last"`` (each variant's output) or ``"earlier"`` (the stages before it)."""
    if stages not in ("all", "last", "earlier"):
        raise ValueError(f"stages must be 'all', 'last' or 'earlier', not {stages!r}")
    lines = [f"{'variant':>7} {'vs':>4} {'measure':>17} {'stage':>5} {'variant':>7} "
             f"{'base':>6} {'per seed':>20}  mean [95 % CI]; verdict; base SE"]
    described = result["variants"]
    for row in result["paired"]:
        n_stages = described[row["variant"]]["stages"]
        last = row["stage"] == n_stages
        if (stages == "last" and not last) or (stages == "earlier" and last):
            continue
        d = row["difference"]
        per_seed = " ".join(f"{v:+.1f}" for v in d["differences"])
        ci = (f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}]" if d["low"] is not None
              else f"{d['mean']:+.1f}")
        se = (f"; SE {row['baseline_binomial_se']:.1f}" if row["baseline_binomial_se"]
              else "")
        lines.append(f"{row['variant']:>7} {row['baseline_stages']:>3}st {row['measure']:>17} "
                     f"{row['stage']:>5} {np.mean(row['variant_scores']):>7.1f} "
                     f"{np.mean(row['baseline_scores']):>6.1f} {per_seed:>20}  {ci}; "
                     f"{row['verdict']}{se}")
    return "\n".join(lines)


def format_variants(result: dict) -> str:
    """Parameters, FLOPs, receptive fields and steps of each variant and baseline."""
    lines = [f"{'run':>8} {'params':>9} {'MFLOPs':>8} {'steps':>6}  field per stage (px); label"]
    for name, d in {**result["baselines_described"], **result["variants"]}.items():
        fields = ", ".join(map(str, d["receptive_field_per_stage"]))
        lines.append(f"{name:>8} {d['params']:>9,} {d['flops_per_image'] / 1e6:>8.1f} "
                     f"{d['steps']:>6}  {fields}; {d['label']}")
    return "\n".join(lines)


def as_json(variant: Variant) -> dict:
    return dataclasses.asdict(variant)
