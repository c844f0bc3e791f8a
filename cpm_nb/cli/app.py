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
* outputs: :func:`cpm_nb.cli.options.check_outputs` refuses, before any work, an output
  that cannot be written or that is one of the command's inputs (the same file by any
  name, a file inside an input folder, a folder the command replaces holding an input);
* errors: *any* failure is one line on stderr naming what and how to fix it, chosen by
  meaning (:mod:`cpm_nb.cli.failures`: a full disk, memory, a malformed input), exit
  status 2; 130 when interrupted (Ctrl-C or SIGTERM); a closed stdout (``| head``) is a
  quiet exit.  Status 1 is a partial failure that the command reports itself (e.g.
  ``predict``: an image that could not be read).  ``--debug`` or ``CPM_NB_DEBUG=1``
  shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading

from cpm_nb.cli import failures
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
from cpm_nb.cli.options import (
    CliError,
    Command,
    check_outputs,
    json_only_on_stdout,
    pipe_safe_stdout,
)

SUPPORTED_BACKENDS = ("tensorflow", "jax")

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
130 interrupted (Ctrl-C or SIGTERM); --debug (or CPM_NB_DEBUG=1) shows the traceback
of an error instead of its one line
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


DEBUG_HELP = ("on an error, show the Python traceback instead of the one-line message "
              f"(also ${failures.DEBUG_ENV}=1)")
PROFILE_HELP = ("run profile: fast, cpu or gpu (default: $CPM_NB_PROFILE, else gpu when a "
                "GPU is visible, else cpu)")


def build_parser(commands: list[Command]) -> Parser:
    parser = Parser(
        prog="cpm-nb",
        description="Convolutional Pose Machines on MPII: data, training, evaluation, inference.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--profile", help=PROFILE_HELP)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
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
    """``--profile`` and ``--debug`` after the subcommand too (and after a
    sub-subcommand), without overriding one given before it."""
    parser.add_argument("--profile", default=argparse.SUPPRESS, help=PROFILE_HELP)
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help=DEBUG_HELP)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_profile(child)


def _version() -> str:
    from cpm_nb import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    from cpm_nb.core import config

    parser = build_parser(COMMANDS)
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # a usage error (one line already printed): its status
        if done.code in (0, None):  # --help, --version
            raise
        return int(done.code) if isinstance(done.code, int) else 2
    debug = getattr(args, "debug", False) or failures.debug_requested([])
    with _terms_interrupt() as signals:
        try:
            if args.profile:
                config.set_profile(args.profile)
            elif os.environ.get(config.PROFILE_ENV, "").strip():
                config.get_profile()  # fail early on a bad CPM_NB_PROFILE
            _check_backend()
            json_out = getattr(args, "json", None)
            check_outputs(args)
            with pipe_safe_stdout() as stdout, json_only_on_stdout(json_out == "-"):
                status = int(args._run(args) or 0)
            if stdout.closed_pipe:
                _silence_stdout()
            return status
        except BrokenPipeError:  # the reader of stdout quit early (`| head`): nothing to say
            _silence_stdout()
            return 0
        except Exception as err:
            if debug:
                raise
            return _fail(args, *failures.describe(err, args, bool(signals)))
        except KeyboardInterrupt as err:
            return _fail(args, *failures.describe(err, args, True))


@contextlib.contextmanager
def _terms_interrupt():
    """SIGTERM (and SIGINT) raise KeyboardInterrupt in the main thread, and are remembered:
    a failure they cause later (a notebook kernel that died of the same Ctrl-C) is still
    an interruption, exit 130."""
    seen: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return

    def interrupt(signum, frame):
        seen.append(signum)
        raise failures.Interrupted()

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield seen
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _check_backend() -> None:
    """A Keras backend the package does not run on is one line, before any work."""
    backend = os.environ.get("KERAS_BACKEND", "").strip()
    if backend and backend not in SUPPORTED_BACKENDS:
        raise CliError(f"KERAS_BACKEND={backend} is not supported; unset it or set it to "
                       f"{' or '.join(SUPPORTED_BACKENDS)}")


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's final flush does not complain of the pipe."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _fail(args, message: str, status: int = 2) -> int:
    message = " ".join(str(message).split())  # always one line
    print(f"cpm-nb {args.command}: error: {message}", file=sys.stderr, flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
