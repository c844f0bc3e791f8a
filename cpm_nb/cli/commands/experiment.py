"""``cpm-nb experiment stages|ablations``: train CPM with 1, 2, 3, 4 and 6 stages at equal
compute (or equal steps), and the attribution ablations of what a second stage adds."""

from __future__ import annotations

import argparse
import dataclasses
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
    parser.add_argument("name", choices=["stages", "ablations"], metavar="EXPERIMENT",
                        help="the experiment to run: stages, or ablations (at the double "
                        "budget, paired with the committed 1- and 2-stage runs)")
    parser.add_argument("--equal", choices=["compute", "steps"], default="compute",
                        help="stages: every run gets the reference (6-stage) run's FLOPs x "
                        "steps (compute, the default) or its steps (steps, as the paper)")
    parser.add_argument("--report", choices=["equal-steps", "side-by-side", "paired"],
                        help="stages: print a report and train nothing: equal-steps (the "
                        "committed curves at equal steps, paired by seed), side-by-side "
                        "(the results in --results, equal compute beside equal steps) or "
                        "paired (each result in --results: every stage count minus 2 "
                        "stages by seed, with a 95 %% t interval)")
    parser.add_argument("--results", nargs="+", metavar="FILE",
                        help="the result files of --report side-by-side")
    parser.add_argument("--which", type=_which, metavar="a,b,c,d",
                        help="ablations: the variants (default: all): a 1 stage with 2 "
                        "stages' field and parameters; b no beliefs into stage 2; c the loss "
                        "on the last stage only; d a centre map (d1: 1 stage, d2: 2 stages)")
    parser.add_argument("--estimate", action="store_true",
                        help="print the runs, where each comes from (cached, committed, to "
                        "train) and the time to train the missing ones, and train nothing")
    parser.add_argument("--train-missing-baselines", action="store_true",
                        help="ablations: train the baselines the committed results lack "
                        "(1 stage, seeds 1 and 2) instead of pairing fewer seeds")
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


def _which(text: str) -> tuple[str, ...]:
    from cpm_nb.core.errors import ConfigError
    from cpm_nb.training import ablations

    try:
        return tuple(ablations.expand(t.strip() for t in text.split(",") if t.strip()))
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
    words = ["cpm-nb", "--profile", profile, "experiment", args.name]
    if args.name == "ablations" and args.which:
        words += ["--which", ",".join(args.which)]
    if args.train_missing_baselines:
        words += ["--train-missing-baselines"]
    if args.equal != "compute":
        words += ["--equal", args.equal]
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


# options that belong to one experiment only, with their defaults: given to the other one
# they would be ignored, and the run trained would not be the one asked for
ONLY_FOR = {"stages": {"equal": "compute", "report": None, "results": None, "stages": None,
                       "validations": None},
            "ablations": {"which": None, "train_missing_baselines": False}}


def _check_scope(args: argparse.Namespace) -> None:
    for name, options in ONLY_FOR.items():
        given = [o for o, default in options.items() if getattr(args, o) != default]
        if args.name != name and given:
            flags = ", ".join("--" + o.replace("_", "-") for o in given)
            raise CliError(f"{flags}: only for 'experiment {name}', not '{args.name}'; "
                           f"drop {'it' if len(given) == 1 else 'them'} or run "
                           f"'cpm-nb experiment {name}'")
    if args.report and args.estimate:
        raise CliError("--report prints a report of finished results and --estimate the plan "
                       "of a run: give one of them")


def _run(args: argparse.Namespace) -> int:
    from cpm_nb.core import config
    from cpm_nb.training import experiments

    _check_scope(args)
    profile = config.get_profile().name
    if args.report:
        return _report(args)
    if args.name == "ablations":
        return _ablations(args, profile)
    exp = experiments.EXPERIMENTS.get(profile)
    if exp is None:
        raise CliError(f"the stage experiment has the profiles {', '.join(experiments.EXPERIMENTS)}"
                       f", not {profile!r} (use --profile cpu)")
    if args.seeds and args.seeds > len(exp.seeds):
        raise CliError(f"--seeds {args.seeds}: the experiment has {len(exp.seeds)} seeds")
    _check_equal_compute(exp, args)
    exp = dataclasses.replace(exp.scaled(args.budget, args.stages, args.validations),
                              equal=args.equal)
    if args.estimate:
        print(experiments.format_plan(experiments.plan(exp, args.seeds, args.cache_dir)))
        return 0
    command = _command_line(args, profile)
    result = experiments.run_stage_experiment(exp, seeds=args.seeds, cache_dir=args.cache_dir,
                                              progress=not args.no_progress and None,
                                              verbose=args.json != "-", command=command)
    if args.json != "-":
        print(experiments.format_summary(result))
        print("PCKh@0.5 after each stage (mean over seeds):")
        print(experiments.format_per_stage(result))
        if len(exp.seeds[:args.seeds] if args.seeds else exp.seeds) > 1:
            print("every stage count minus 2 stages, paired by seed:")
            print(experiments.format_paired_stages(experiments.paired_stages(result)))
    if args.json:
        print_json(result, args.json)
    return 0


def _report(args: argparse.Namespace) -> int:
    from cpm_nb.core import files
    from cpm_nb.training import equal_steps, experiments

    if args.report == "equal-steps":
        report = equal_steps.equal_step_report()
        if args.json != "-":
            print("PCKh@0.5 of a minus b stages at equal steps, both at the full learning rate "
                  "(committed float32 curves, every budget):")
            print(equal_steps.format_equal_steps(report))
        if args.json:
            print_json(report, args.json)
        return 0
    if not args.results:
        raise CliError(f"--report {args.report} needs --results FILE [FILE ...] (results of "
                       "'experiment stages', e.g. cpm_nb/results/stage_experiment.json)")
    results = [experiments.check_result(files.read_json(path, "experiment result"), path)
               for path in args.results]
    if args.report == "side-by-side":
        print(experiments.format_side_by_side(results))
        return 0
    for path, result in zip(args.results, results):
        print(f"{path}: every stage count minus 2 stages, paired by seed (PCKh@0.5 points)")
        print(experiments.format_paired_stages(experiments.paired_stages(result)))
    return 0


def _ablations(args: argparse.Namespace, profile: str) -> int:
    from cpm_nb.core.errors import ConfigError
    from cpm_nb.training import ablations

    if args.budget != 1.0 and args.budget != ablations.BUDGET:
        raise CliError(f"--budget {args.budget:g}: the ablations run at the stage experiment's "
                       f"double budget only (--budget {ablations.BUDGET} or no --budget)")
    try:
        exp = ablations.experiment(profile)
    except ConfigError as err:
        raise CliError(str(err)) from None
    if args.seeds and args.seeds > len(exp.seeds):
        raise CliError(f"--seeds {args.seeds}: the experiment has {len(exp.seeds)} seeds")
    if args.estimate:
        print(ablations.format_plan(ablations.plan(
            args.which or ablations.variants_names(), args.seeds, profile, args.cache_dir,
            args.train_missing_baselines)))
        return 0
    result = ablations.run_ablations(
        args.which or ablations.variants_names(), seeds=args.seeds, profile=profile,
        cache_dir=args.cache_dir, train_missing=args.train_missing_baselines,
        progress=not args.no_progress and None, verbose=args.json != "-",
        command=_command_line(args, profile))
    if args.json != "-":
        print(ablations.format_variants(result))
        print("variant minus baseline, paired by seed (PCKh@0.5 points; on_other_person: % of "
              "the distracted joints):")
        print(ablations.format_paired(result))
    if args.json:
        print_json(result, args.json)
    return 0


COMMAND = Command(
    name="experiment",
    help="run an experiment: 'stages' trains 1, 2, 3, 4 and 6 stages at equal compute; "
         "'ablations' what a second stage adds",
    description=(
        "The stage experiment: the 'stage-experiment' network (stage 1 sees 0.48 of the\n"
        "128-px crop, as the paper's sees 0.43 of 368 px) with 1, 2, 3, 4 and 6 stages,\n"
        "three seeds each, every run with the forward FLOPs x steps of the 6-stage run.\n"
        "Runs are cached: a second call loads them in seconds. Training all 15 took 70\n"
        "minutes on 2 (shared) CPU cores.\n\n"
        "examples:\n"
        "  cpm-nb --profile cpu experiment stages --json-out cpm_nb/results/stage_experiment.json\n"
        "  cpm-nb --profile cpu experiment stages --seeds 1     one seed per stage count\n"
        "  cpm-nb --profile fast experiment stages --json       a smoke run (CI)\n"
        "  cpm-nb --profile cpu experiment stages --budget 2 --equal steps --stages 2,6\n"
        "  cpm-nb --profile cpu experiment stages --budget 8 --stages 6,2 --estimate   the plan\n"
        "  cpm-nb experiment stages --report equal-steps        the committed curves\n"
        "  cpm-nb --profile cpu experiment ablations --which c --seeds 3 --json-out "
        "cpm_nb/results/ablations_2x.json"
    ),
    add_arguments=_arguments,
    run=_run,
)
