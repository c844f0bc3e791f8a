"""``cpm-nb experiment stages``: train CPM with 1, 2, 3, 4 and 6 stages at equal compute."""

from __future__ import annotations

import argparse
import shlex

from cpm_nb.cli.options import (
    CliError,
    Command,
    add_json_option,
    float_in_range,
    int_in_range,
    positive_int,
    print_json,
)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=["stages"], metavar="EXPERIMENT",
                        help="the experiment to run: stages")
    parser.add_argument("--seeds", type=positive_int, metavar="N",
                        help="use the first N seeds of the experiment (default: all, 3)")
    parser.add_argument("--stages", type=_stage_counts, metavar="N,N,...",
                        help="only these stage counts, in this order (default: 1,2,3,4,6)")
    parser.add_argument("--budget", type=float_in_range(0, 10, lo_open=True), default=1.0,
                        metavar="X", help="X times the compute of every run (default 1; 2 "
                        "shows whether the curves still move with twice the steps)")
    parser.add_argument("--validations", type=int_in_range(1, 40), metavar="N",
                        help="validations per run, the learning curve's points (default 4)")
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="where the runs are cached (default: runs/ of the checkout)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json_option(parser, "every run, the summary and the provenance")


def _stage_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(t) for t in text.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1 or max(counts) > 12 or len(set(counts)) < len(counts):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give distinct stage counts from 1 to 12, separated by commas (e.g. 2,6)")
    return counts


STEP = 50  # run lengths and validation intervals are multiples of this many steps


def _check_equal_compute(base, args: argparse.Namespace) -> None:
    """Before any training: every run of ``base`` scaled by --budget gets its share of
    the compute (a run rounded up to the 50-step floor would get more than the others)
    and room for the --validations asked for (one per 50 steps at most)."""
    exp = base.scaled(args.budget, args.stages, args.validations)
    unit = base.reference_steps * base.flops(base.reference_stages)  # the budget at 1
    heaviest = max(exp.flops(s) for s in exp.stage_counts)
    smallest = STEP * heaviest / unit  # the budget that gives every run >= STEP steps
    for stages in exp.stage_counts:
        exact = exp.reference_steps * exp.flops(exp.reference_stages) / exp.flops(stages)
        if exact < STEP:
            raise CliError(f"--budget {args.budget:g} gives the {stages}-stage runs "
                           f"{exact:.0f} steps, fewer than {STEP}: they would no longer have "
                           f"equal compute; use --budget {smallest:.2g} or more")
        steps = exp.steps(stages)
        if args.validations and args.validations > steps // STEP:
            raise CliError(f"--validations {args.validations}: the {stages}-stage runs take "
                           f"{steps} steps, room for {steps // STEP} validation(s) (one per "
                           f"{STEP} steps); ask for fewer or raise --budget")


def _command_line(args: argparse.Namespace, profile: str) -> str:
    """The command that reproduces this result (for its provenance)."""
    words = ["cpm-nb", "--profile", profile, "experiment", "stages"]
    if args.stages:
        words += ["--stages", ",".join(map(str, args.stages))]
    if args.budget != 1.0:
        words += ["--budget", f"{args.budget:g}"]
    for option in ("seeds", "validations"):
        if getattr(args, option):
            words += [f"--{option}", str(getattr(args, option))]
    if args.json and args.json != "-":
        words += ["--json-out", args.json]
    return " ".join(shlex.quote(w) for w in words)


def _run(args: argparse.Namespace) -> int:
    from cpm_nb.core import config
    from cpm_nb.training import experiments

    profile = config.get_profile().name
    exp = experiments.EXPERIMENTS.get(profile)
    if exp is None:
        raise CliError(f"the stage experiment has the profiles {', '.join(experiments.EXPERIMENTS)}"
                       f", not {profile!r} (use --profile cpu)")
    if args.seeds and args.seeds > len(exp.seeds):
        raise CliError(f"--seeds {args.seeds}: the experiment has {len(exp.seeds)} seeds")
    _check_equal_compute(exp, args)
    exp = exp.scaled(args.budget, args.stages, args.validations)
    command = _command_line(args, profile)
    result = experiments.run_stage_experiment(exp, seeds=args.seeds, cache_dir=args.cache_dir,
                                              progress=not args.no_progress and None,
                                              verbose=args.json != "-", command=command)
    if args.json != "-":
        print(experiments.format_summary(result))
        print("PCKh@0.5 after each stage (mean over seeds):")
        print(experiments.format_per_stage(result))
    if args.json:
        print_json(result, args.json)
    return 0


COMMAND = Command(
    name="experiment",
    help="run an experiment: 'stages' trains 1, 2, 3, 4 and 6 stages at equal compute",
    description=(
        "The stage experiment: the 'stage-experiment' network (stage 1 sees 0.48 of the\n"
        "128-px crop, as the paper's sees 0.43 of 368 px) with 1, 2, 3, 4 and 6 stages,\n"
        "three seeds each, every run with the forward FLOPs x steps of the 6-stage run.\n"
        "Runs are cached: a second call loads them in seconds. Training all 15 took 70\n"
        "minutes on 2 (shared) CPU cores.\n\n"
        "examples:\n"
        "  cpm-nb --profile cpu experiment stages --json-out cpm_nb/results/stage_experiment.json\n"
        "  cpm-nb --profile cpu experiment stages --seeds 1     one seed per stage count\n"
        "  cpm-nb --profile fast experiment stages --json       a smoke run (CI)"
    ),
    add_arguments=_arguments,
    run=_run,
)
