"""``cpm-nb info``: package, TensorFlow and Keras versions, the backend, devices, the profile.

The command resolves the active profile and passes it to :func:`cpm_nb.core.session.describe`.
"""

from __future__ import annotations

import argparse

from cpm_nb.cli.options import Command, add_json_option, print_json


def _arguments(parser: argparse.ArgumentParser) -> None:
    add_json_option(parser, "the facts")


def _run(args: argparse.Namespace) -> int:
    from cpm_nb.core import config, paths, session

    info = session.describe(config.get_profile())
    info["folders"] = {"data": str(paths.data_root()), "runs": str(paths.runs_root()),
                       "figures": str(paths.figures_root())}
    if args.json != "-":
        print(session.format_description(info))
        for what, folder in info["folders"].items():
            print(f"{what + ' folder':<15} {folder}")
    if args.json:
        print_json(info, args.json)
    return 0


COMMAND = Command(
    name="info",
    help="print package/TensorFlow/Keras versions, the backend, devices, the profile and "
         "the data, runs and figures folders",
    add_arguments=_arguments,
    run=_run,
)
