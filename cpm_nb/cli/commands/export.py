"""``cpm-nb export``: a trained model as a TensorFlow SavedModel and/or TFLite file.

Loads the model with :func:`cpm_nb.inference.predict.load_predictor`, exports it with
:func:`cpm_nb.inference.export.export_model` (staged, parity-checked, moved into place) and
prints or writes the report; exit status 1 when an export differs from Keras.
"""

from __future__ import annotations

import argparse
import sys

from cpm_nb.cli.options import Command, add_json_option, print_json
from cpm_nb.core import files
from cpm_nb.inference import export


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="M",
                        help="a run folder of `cpm-nb train`, a .keras file or a preset "
                             "(preset:cpu)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--format", nargs="+", choices=("savedmodel", "tflite"),
                        default=["savedmodel", "tflite"], help="what to write (default: both)")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the parity check against the Keras model")
    add_json_option(parser, "the report")


def _run(args: argparse.Namespace) -> int:
    from cpm_nb.inference.predict import load_predictor

    files.check_output_path(args.out, "dir", "--out")
    predictor = load_predictor(args.model)  # a ModelError is one line (cpm_nb.cli.app)
    report = export.export_model(predictor.model, args.out, tuple(args.format),
                          check=not args.no_check, meta=predictor.meta or None)
    if args.json:
        print_json(report, args.json)
    if args.json != "-":
        for name, path in report["formats"].items():
            print(f"{name:<10} {path}")
        for name, why in report["skipped"].items():
            print(f"{name:<10} skipped: {why}")
        for name, r in report["parity"].items():
            if "error" in r:
                print(f"parity {name}: FAILED: {r['error']}")
            else:
                print(f"parity {name}: max |maps - keras| = {r['max_abs_diff']:.2e}, max joint "
                      f"shift {r['max_joint_diff_px']:.3f} px -> {'ok' if r['ok'] else 'FAILED'}")
    if report["parity"] and not report["ok"]:
        print("cpm-nb export: error: an export differs from the Keras model beyond the "
              f"tolerance (maps {export.MAPS_ATOL:g}, joints {export.JOINTS_ATOL_PX:g} px); "
              f"nothing was written to {args.out}", file=sys.stderr)
        return 1
    return 0


COMMAND = Command(
    name="export",
    help="export a trained model as a TensorFlow SavedModel and/or TFLite, with a parity check",
    add_arguments=_arguments,
    run=_run,
    description="""\
Export a trained CPM for deployment. The native model.keras + cpm_config.json
of a run folder is all `cpm-nb predict` needs; this adds a TensorFlow
SavedModel (DIR/saved_model, endpoint `serve`) and a float32 TFLite file
(DIR/model.tflite), copies cpm_config.json, and checks that both give the
Keras model's belief maps (max abs difference <= 1e-4) and joints (<= 0.05 px)
on random images. Inputs are raw RGB 0..255 [B, S, S, 3]; the outputs are the
per-stage belief maps, stage 1 first, in the SavedModel and in the TFLite
signature runner (`interpreter.get_signature_runner()`: one output per stage,
output_0 = stage 1, output_1 = stage 2, ...). The raw
`interpreter.get_output_details()` list is in TFLite's own order (it may put stage 2
first): use the signature runner, or sort its entries by the number in their names. The export is built in a staging folder
and moved into DIR only when it passed the check (exit status 1 otherwise, with
DIR as it was).

examples:
  cpm-nb export --model runs/cpu-3st-synthetic-<hash> --out exported/
  cpm-nb export --model model.keras --out exported/ --format tflite --json
""",
)
