"""The ``cpm-nb`` command line (also ``python -m cpm_nb``).

One entry point, one subcommand per job.  Each subcommand is a module of
:mod:`cpm_nb.cli.commands` defining a :class:`Command`, named in :data:`COMMANDS`; adding
one is one line here.  Modules are imported only when their command is parsed, and
TensorFlow only when a command runs, so ``--help`` stays quick.

Shared by every command:

* ``--profile P`` before or after the subcommand;
* :func:`add_json_option`: ``--json`` (a flag: the result as JSON on stdout and
  nothing else there; other lines go to stderr) and ``--json-out FILE`` (also write
  it to FILE, checked before any work and written atomically).  Neither takes a
  positional argument by surprise;
* numeric option types that name their valid range: :func:`int_in_range`,
  :func:`positive_int`, :func:`nonnegative_int`, :func:`float_in_range`,
  :func:`finite_float`;
* errors: a :class:`CliError`, any :class:`cpm_nb.core.errors.CpmError`, a file-system
  error, an out-of-memory error or corrupt TFRecord data is one line on stderr
  naming what and how to fix it, exit status 2 (130 when interrupted).  Status 1 is
  a partial failure that the command reports itself (e.g. ``predict``: an image
  that could not be read).
"""

from __future__ import annotations

import argparse
import os
import sys

from cpm_nb.cli.commands import (
    convert_caffe,
    evaluate,
    evaluate_mpii,
    experiment,
    export,
    info,
    model,
    notebooks,
    predict,
    prepare,
    presets,
    train,
)
from cpm_nb.cli.options import CliError, Command, json_only_on_stdout

EPILOG = """\
the workflow (each command has --help with examples):
  cpm-nb info                               versions, backend, devices, active profile
  cpm-nb prepare synthetic                  render the embedded synthetic set + TFRecords
  cpm-nb prepare mpii --root DIR            download/convert real MPII (12.9 GB images)
  cpm-nb train --data synthetic --out runs/my-run
  cpm-nb evaluate --model runs/my-run --data synthetic --json-out scores.json
  cpm-nb experiment stages --json-out stages.json   1-6 stages at equal compute, 3 seeds
  cpm-nb predict photo.jpg --model runs/my-run --out predictions/ --json
  cpm-nb evaluate-mpii --annotations gt_valid.mat --predictions preds.mat
  cpm-nb convert-caffe --prototxt P --caffemodel W --out RUN   a released CPM model as a run
  cpm-nb notebooks                          execute every notebook headless (untracked copies)

profiles (CPM_NB_PROFILE or --profile, before or after COMMAND): fast (CI), cpu
(laptop), gpu (paper size)

--json prints only the JSON on stdout; --json-out FILE writes it to FILE.
exit status: 0 done, 1 partly done (reported per item), 2 error (one line on stderr),
130 interrupted
"""


# Every subcommand, in --help order.
COMMANDS = [info.COMMAND, notebooks.COMMAND, prepare.COMMAND, evaluate_mpii.COMMAND,
            model.COMMAND, train.COMMAND, evaluate.COMMAND, experiment.COMMAND,
            predict.COMMAND, export.COMMAND, convert_caffe.COMMAND, presets.COMMAND]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the valid choices."""

    argv: list[str] = []  # the arguments being parsed (for hints), shared by subparsers

    def parse_args(self, args=None, namespace=None):
        Parser.argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def error(self, message):
        hint = ""
        argv = Parser.argv
        if any(a == "--json" or a.startswith("--json=") for a in argv) and (
                "unrecognized arguments" in message or "--json" in message):
            hint = " (--json takes no value: it prints the JSON on stdout; use --json-out FILE)"
        self.exit(2, f"{self.prog}: error: {message}{hint} (try '{self.prog} --help')\n")


PROFILE_HELP = ("run profile: fast, cpu or gpu (default: $CPM_NB_PROFILE, else gpu when a "
                "GPU is visible, else cpu)")


def build_parser(commands: list[Command]) -> Parser:
    parser = Parser(
        prog="cpm-nb",
        description="Convolutional Pose Machines on MPII: data, training, evaluation, inference.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--profile", help=PROFILE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in commands:
        p = sub.add_parser(command.name, help=command.help,
                           description=command.description or command.help,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_arguments(p)
        _add_profile(p)
        p.set_defaults(_run=command.run)
    return parser


def _add_profile(parser: argparse.ArgumentParser) -> None:
    """``--profile`` after the subcommand too (and after a sub-subcommand), without
    overriding one given before it."""
    parser.add_argument("--profile", default=argparse.SUPPRESS, help=PROFILE_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_profile(child)


def _version() -> str:
    from cpm_nb import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    from cpm_nb.core import config, errors, files

    parser = build_parser(COMMANDS)
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # a usage error (one line already printed): its status
        if done.code in (0, None):  # --help, --version
            raise
        return int(done.code) if isinstance(done.code, int) else 2
    try:
        if args.profile:
            config.set_profile(args.profile)
        elif os.environ.get(config.PROFILE_ENV, "").strip():
            config.get_profile()  # fail early on a bad CPM_NB_PROFILE
        json_out = getattr(args, "json", None)
        if json_out not in (None, "-"):
            files.check_output_path(json_out, "file", "--json-out")
        with json_only_on_stdout(json_out == "-"):
            return int(args._run(args) or 0)
    except (CliError, errors.CpmError) as err:
        return _fail(args, str(err))
    except KeyboardInterrupt:
        return _fail(args, "interrupted; outputs are written atomically, so re-run the same "
                           "command to finish", 130)
    except MemoryError:
        return _fail(args, "out of memory; try a smaller --batch-size or profile")
    except OSError as err:
        return _fail(args, _os_message(err))
    except Exception as err:
        message = _known_failure(err)
        if message is None:
            raise
        return _fail(args, message)


def _fail(args, message: str, status: int = 2) -> int:
    message = " ".join(str(message).split())  # always one line
    print(f"cpm-nb {args.command}: error: {message}", file=sys.stderr, flush=True)
    return status


def _os_message(err: OSError) -> str:
    """A file-system error as one line: what failed, on which file."""
    what = err.strerror or str(err)
    names = [n for n in (err.filename, getattr(err, "filename2", None)) if n]
    where = f": {' -> '.join(map(str, names))}" if names else ""
    return f"{what}{where} (check the path, its permissions and the free disk space)"


def _known_failure(err: Exception) -> str | None:
    """One line for the errors of libraries we do not import here (TensorFlow, Pillow)."""
    name = type(err).__name__
    text = " ".join(str(getattr(err, "message", None) or err).split())[:200]
    if name == "ResourceExhaustedError":
        return f"out of memory ({text}); try a smaller --batch-size or profile"
    if name == "DataLossError":
        return (f"corrupted data ({text}); re-create the TFRecords with `cpm-nb prepare ...` "
                "(synthetic: add --force)")
    if name == "DecompressionBombError":
        return f"image too large ({text})"
    return None




if __name__ == "__main__":
    sys.exit(main())
