"""``cpm-nb presets``: the trained models shipped with the package, and how to make them
again (``build``) when the code changes what they are (``check``)."""

from __future__ import annotations

import argparse
import sys

from cpm_nb.cli.options import CliError, Command, add_json_option, print_json


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=("list", "check", "build"), default="list",
                        help="list (default): the shipped presets; check: does each still "
                             "match the configuration the code makes (exit 1 if not); build: "
                             "train the named presets from scratch into the package")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="presets to build (default: every preset that check finds stale)")
    add_json_option(parser, "the presets")


def _listing() -> list[dict]:
    from cpm_nb.training import preset_build, presets

    sizes = preset_build.sizes()
    rows = []
    for name in presets.names():
        meta = presets.info(name)
        rows.append({"name": name, "model": f"{presets.PREFIX}{name}", "pckh": meta.get("pckh"),
                     "about": meta.get("about"), "command": meta.get("command"),
                     "commit": meta.get("commit"), "train_s": meta.get("train_s"),
                     "precision": meta.get("precision"), "bytes": sizes.get(name),
                     "generator_version": meta.get("generator_version"),
                     "folder": str(presets.folder(name))})
    return rows


def _run(args: argparse.Namespace) -> int:
    from cpm_nb.training import preset_build

    if args.action == "list":
        rows = _listing()
        if args.json:
            print_json(rows, args.json)
        for r in rows:
            print(f"{r['model']:<22} PCKh@0.5 {r['pckh']:5.1f}  {r['bytes'] / 1e6:4.1f} MB  "
                  f"{r['train_s'] / 60:4.1f} min ({r['precision']})  {r['about']}")
        total = sum(r["bytes"] for r in rows)
        print(f"{len(rows)} presets, {total / 1e6:.1f} MB in all", file=sys.stderr)
        return 0
    rows = preset_build.check()
    if args.action == "check":
        if args.json:
            print_json(rows, args.json)
        for r in rows:
            state = "ok" if r["ok"] else f"stale: shipped {r['shipped_key']}, code {r['code_key']}"
            print(f"{r['name']:<16} {state}")
        return 0 if all(r["ok"] for r in rows) else 1
    wanted = args.names or [r["name"] for r in rows if not r["ok"]]
    unknown = sorted(set(wanted) - set(preset_build.PRESETS))
    if unknown:
        raise CliError(f"no preset {', '.join(unknown)} (presets: "
                       f"{', '.join(preset_build.PRESETS)})")
    built = []
    for name in wanted:
        record = preset_build.build(name, command=" ".join(["cpm-nb", *sys.argv[1:]]))
        print(f"built preset {name}: PCKh@0.5 {record['pckh']:.2f} in {record['train_s']:.0f} s "
              f"({record['precision']})", file=sys.stderr, flush=True)
        built.append(record)
    if args.json:
        print_json(built, args.json)
    if not wanted:
        print("every preset matches the code: nothing to build", file=sys.stderr)
    return 0


COMMAND = Command(
    name="presets",
    help="the trained models shipped with cpm-nb (list, check, build)",
    add_arguments=_arguments,
    run=_run,
    description="""\
The course's trained models ship with the package: `--model preset:NAME` works in
predict, evaluate and export, `cpm_nb.presets.load(NAME)` in Python, and
load_or_train (the notebooks) loads a preset instead of training whenever the
configuration asked for is the preset's (CPM_NB_RETRAIN=1 or `train --retrain` trains
it yourself).  Each preset records how it was made: the command, the commit, the
synthetic generator's version, the training time and machine, the final PCKh@0.5.

examples:
  cpm-nb presets                      list them (PCKh@0.5, size, training time)
  cpm-nb presets check                does each still match what the code trains?
  cpm-nb presets build cpu            train the cpu preset again (about 10 minutes)
  cpm-nb predict photo.jpg --model preset:cpu --out poses/""",
)
