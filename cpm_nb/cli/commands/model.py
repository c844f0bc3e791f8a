"""``cpm-nb model``: describe a CPM configuration (parameters, FLOPs, receptive fields, layers).

The analytic description comes from :mod:`cpm_nb.model.architecture`; ``--check`` builds the
network in Keras (:func:`cpm_nb.model.cpm.build_cpm`) and compares.  Without ``--config``
the active profile's model is described: this command resolves the profile and passes
it down.
"""

from __future__ import annotations

import argparse

from cpm_nb.cli.options import Command, add_json_option, print_json
from cpm_nb.core import config as _config
from cpm_nb.model.architecture import (
    NAMED_CONFIGS,
    describe,
    format_layer_table,
    from_profile,
    get_config,
)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="NAME",
                        help="a named configuration (" + ", ".join(NAMED_CONFIGS) +
                        ") or a profile name (" + ", ".join(_config.profile_names()) +
                        "); default: the active profile's model")
    parser.add_argument("--layers", action="store_true", help="also print the layer table")
    parser.add_argument("--check", action="store_true",
                        help="build the Keras model and check its parameter count and output "
                             "shapes against the analytic table (imports TensorFlow)")
    add_json_option(parser, "the facts")


def _run(args: argparse.Namespace) -> int:
    cfg = get_config(args.config) if args.config is not None else from_profile(_config.get_profile())
    info = describe(cfg)
    if args.check:
        info["check"] = _keras_check(cfg, info)
    if args.json:
        print_json(info, args.json)
        return 0
    _print_description(cfg, info)
    if args.layers:
        print()
        print(format_layer_table(cfg))
    return 0


def _keras_check(cfg, info: dict) -> dict:
    from cpm_nb.model.cpm import build_cpm

    model = build_cpm(cfg)
    shapes = [list(o.shape[1:]) for o in model.outputs]
    return {"keras_params": int(model.count_params()),
            "params_match": int(model.count_params()) == info["params"],
            "output_shapes_match": shapes == list(info["outputs"].values())}


def _print_description(cfg, info: dict) -> None:
    c = info["config"]
    print(f"CPM configuration {cfg.name!r}: input {cfg.input_size}x{cfg.input_size} "
          f"({' + '.join(cfg.input_names)}), {cfg.stages} stages, width {c['width']}, "
          f"{cfg.num_maps} maps of {cfg.map_size}x{cfg.map_size}")
    print(f"  parameters: {info['params']:,}    forward FLOPs per image: "
          f"{info['flops_per_image'] / 1e9:,.2f} G")
    for b in info["blocks"]:
        print(f"  {b['block']:<7} {b['convs']:>2} convs  {b['params']:>11,} params "
              f"({b['params_share']:6.1%})  {b['flops'] / 1e9:8.2f} GFLOPs ({b['flops_share']:6.1%})")
    fields = ", ".join(f"{f} px" for f in info["receptive_field_per_stage"])
    print(f"  receptive field per stage: {fields}")
    ratios = ", ".join(f"{r:.2f}" for r in info["receptive_field_over_crop"])
    print(f"  receptive field / crop side: {ratios}  (paper: stage 1 about 160/368 = 0.43)")
    if "check" in info:
        ch = info["check"]
        print(f"  Keras check: {ch['keras_params']:,} params (match: {ch['params_match']}), "
              f"output shapes match: {ch['output_shapes_match']}")


COMMAND = Command(
    name="model",
    help="describe a CPM configuration: parameters, FLOPs, receptive field per stage, layers",
    add_arguments=_arguments,
    run=_run,
    description="""\
Describe a CPM network without building it (analytic counts; --check builds it in Keras).

examples:
  cpm-nb model                              the active profile's scaled model
  cpm-nb model --config source-article --layers
  cpm-nb model --config cpm-mpii-release --check     29,852,058 parameters, as released
  cpm-nb --profile fast model --json-out out.json""",
)
