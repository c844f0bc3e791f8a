"""The ``cpm-nb`` command line (also ``python -m cpm_nb``).

One entry point, one subcommand per job.  Each subcommand lives next to the
code it drives, as a :class:`Command` named in :data:`COMMANDS`; adding one is
one line here.  Modules are imported only when their command is parsed, and
TensorFlow only when a command runs, so ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

EPILOG = """\
the workflow (each command has --help with examples):
  cpm-nb info                               versions, backend, devices, active profile
  cpm-nb prepare synthetic                  render the embedded synthetic set + TFRecords
  cpm-nb prepare mpii --root DIR            download/convert real MPII (12.9 GB images)
  cpm-nb train --data synthetic --out runs/my-run
  cpm-nb evaluate --model runs/my-run --data synthetic --json scores.json
  cpm-nb predict photo.jpg --model runs/my-run --out predictions/ --json
  cpm-nb evaluate-mpii --annotations gt_valid.mat --predictions preds.mat
  cpm-nb notebooks                          execute every notebook in place (headless)

profiles (CPM_NB_PROFILE or --profile): fast (CI), cpu (laptop), gpu (paper size)
"""


@dataclass(frozen=True)
class Command:
    """A subcommand: its help line, an argument builder and the function that runs it."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str = ""


# "module:attribute" of every subcommand, in --help order.
COMMANDS = [
    "cpm_nb.cli:INFO",
    "cpm_nb.notebooks:NOTEBOOKS",
    "cpm_nb.prepare:PREPARE",
    "cpm_nb.metrics:EVALUATE_MPII",
    "cpm_nb.model:MODEL",
    "cpm_nb.train:TRAIN",
    "cpm_nb.train:EVALUATE",
    "cpm_nb.predict:PREDICT",
    "cpm_nb.export:EXPORT",
]


class CliError(Exception):
    """A user error: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the valid choices."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (try '{self.prog} --help')\n")


def load_commands() -> list[Command]:
    commands = []
    for target in COMMANDS:
        module, attribute = target.split(":")
        commands.append(getattr(importlib.import_module(module), attribute))
    return commands


def build_parser(commands: list[Command]) -> Parser:
    parser = Parser(
        prog="cpm-nb",
        description="Convolutional Pose Machines on MPII: data, training, evaluation, inference.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--profile", help="run profile: fast, cpu or gpu (default: "
                        "$CPM_NB_PROFILE, else gpu when a GPU is visible, else cpu)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in commands:
        p = sub.add_parser(command.name, help=command.help,
                           description=command.description or command.help,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def _version() -> str:
    from cpm_nb import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    from cpm_nb import config

    parser = build_parser(load_commands())
    args = parser.parse_args(argv)
    try:
        if args.profile:
            config.set_profile(args.profile)
        elif os.environ.get(config.PROFILE_ENV, "").strip():
            config.get_profile()  # fail early on a bad CPM_NB_PROFILE
        return int(args._run(args) or 0)
    except (CliError, config.ProfileError) as err:
        print(f"cpm-nb {args.command}: error: {err}", file=sys.stderr)
        return 2


def add_json_option(parser: argparse.ArgumentParser, what: str, note: str = "") -> None:
    """The shared ``--json [OUT]`` option: ``what`` as JSON on stdout ('-' or no value)
    or written to OUT; pair it with :func:`print_json`."""
    parser.add_argument("--json", nargs="?", const="-", metavar="OUT",
                        help=f"{what} as JSON on stdout ('-' or no value) or written to OUT{note}")


def print_json(data, path: str | None = None) -> None:
    """Print ``data`` as JSON, or write it to ``path`` ('-' is stdout)."""
    text = json.dumps(data, indent=2, sort_keys=False)
    if path in (None, "-"):
        print(text)
    else:
        with open(path, "w") as f:
            f.write(text + "\n")


# --- cpm-nb info -----------------------------------------------------------------


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the facts as JSON")


def _info_run(args: argparse.Namespace) -> int:
    from cpm_nb import runtime

    info = runtime.describe()
    if args.json:
        print_json(info)
    else:
        print(runtime.format_description(info))
    return 0


INFO = Command(
    name="info",
    help="print package/TensorFlow/Keras versions, the backend, devices and the profile",
    add_arguments=_info_arguments,
    run=_info_run,
)


if __name__ == "__main__":
    sys.exit(main())
