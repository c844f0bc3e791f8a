"""``cpm-nb convert-caffe``: a released CPM Caffe model (prototxt + caffemodel) as a run folder.

The conversion is :func:`cpm_nb.caffe.convert.convert`; its :class:`~cpm_nb.caffe.convert.CaffeError`
(a :class:`cpm_nb.core.errors.ModelError`) is printed as one line with exit status 2.
``--check`` compares the result with OpenCV's Caffe importer (:func:`cpm_nb.caffe.convert.parity`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cpm_nb.cli.options import CliError, Command, add_json_option, print_json
from cpm_nb.model.architecture import CPMConfig, count_params


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prototxt", required=True, metavar="P",
                        help="the deploy file, e.g. pose_deploy_resize.prototxt")
    parser.add_argument("--caffemodel", required=True, metavar="W",
                        help="the trained weights, e.g. pose_iter_320000.caffemodel")
    parser.add_argument("--out", required=True, metavar="RUN",
                        help="run folder to write (model.keras + cpm_config.json)")
    parser.add_argument("--joints", metavar="NAMES",
                        help="comma-separated names of the maps, in order (default: the "
                             "release's order for 15 or 10 maps); 'background' last if any")
    parser.add_argument("--force", action="store_true",
                        help="replace the model of an existing run folder")
    parser.add_argument("--check", action="store_true",
                        help="compare the converted model with OpenCV's Caffe importer on two "
                             "random images, stage by stage (needs opencv-python-headless<5); "
                             "beyond 1e-3 of the map range nothing is written and the exit "
                             "status is 2")
    add_json_option(parser, "the conversion summary")


def _summary(meta: dict, seconds: float) -> dict:
    """What ``cpm-nb convert-caffe`` reports about a conversion."""
    cfg = CPMConfig(**meta["cpm_config"])
    return {"config": meta["cpm_config"], "params": meta.get("params") or count_params(cfg),
            "seconds": round(seconds, 2),
            "caffemodel_mb": round(meta["caffe"]["caffemodel_bytes"] / 1e6, 1),
            "layers_converted": meta["caffe"]["layers_converted"],
            "layers_ignored": meta["caffe"]["layers_ignored"],
            "joints": meta["preprocessing"]["joints"]}


def _convert_checked(args, joints) -> tuple[dict, list[dict]]:
    """Convert into a staging folder, compare it with OpenCV, and only when every stage
    is within :data:`~cpm_nb.caffe.convert.PARITY_TOLERANCE` move the files into --out
    (a model that fails its check never replaces anything)."""
    import os
    import shutil

    from cpm_nb.caffe.convert import (
        CONFIG_FILE,
        MODEL_FILE,
        PARITY_TOLERANCE,
        convert,
        parity,
        parity_misses,
    )
    from cpm_nb.core import files

    out = Path(args.out)
    staging = files.staging_folder(out)
    try:
        meta = convert(args.prototxt, args.caffemodel, staging, joints, True)
        rows = parity(staging, args.prototxt, args.caffemodel)
        missed = parity_misses(rows)
        if missed:
            worst = max(missed, key=lambda r: r["relative"])
            raise CliError(f"--check: the converted model differs from OpenCV's by "
                           f"{worst['relative']:.2g} of the map range at {worst['stage']} "
                           f"(tolerance {PARITY_TOLERANCE:g}); nothing was written to {out}")
        out.mkdir(parents=True, exist_ok=True)
        for name in (MODEL_FILE, CONFIG_FILE):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta, rows


def _run(args: argparse.Namespace) -> int:
    from cpm_nb.caffe.convert import CONFIG_FILE, LICENCE, MODEL_FILE, convert
    from cpm_nb.core import files

    files.check_output_path(args.out, "dir", "--out")
    if (Path(args.out) / MODEL_FILE).exists() and not args.force:
        raise CliError(f"{args.out} already holds a {MODEL_FILE}; choose another --out or "
                       "pass --force to replace it")
    joints = [j.strip() for j in args.joints.split(",")] if args.joints is not None else None
    if args.check:
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise CliError("--check needs OpenCV 4: pip install 'opencv-python-headless<5'") \
                from None
    start = time.perf_counter()
    if args.check:
        meta, rows = _convert_checked(args, joints)
    else:
        meta, rows = convert(args.prototxt, args.caffemodel, args.out, joints, args.force), None
    info = _summary(meta, time.perf_counter() - start)
    cfg = CPMConfig(**meta["cpm_config"])
    if rows is not None:
        info["check"] = rows
    if args.json:
        print_json(info, args.json)
        if args.json == "-":
            return 0
    print(f"converted {args.caffemodel} ({info['caffemodel_mb']} MB) in {info['seconds']} s: "
          f"{cfg.name}, {cfg.input_size} px, {cfg.stages} stages, {cfg.num_maps} maps, "
          f"{info['params']:,} parameters, {info['layers_converted']} convolutions")
    if info["layers_ignored"]:
        print(f"  ignored {len(info['layers_ignored'])} layers without a place in the network "
              f"(e.g. {', '.join(info['layers_ignored'][:3])})")
    for row in info.get("check", []):
        print(f"  OpenCV parity {row['stage']:<14} max |diff| {row['max_abs_diff']:.2e} = "
              f"{row['relative']:.1e} of the map range")
    print(f"  wrote {Path(args.out) / MODEL_FILE} and {CONFIG_FILE}; {LICENCE}")
    return 0


COMMAND = Command(
    name="convert-caffe",
    help="convert a released CPM Caffe model (prototxt + caffemodel) into a run folder",
    add_arguments=_arguments,
    run=_run,
    description="""\
Convert a Convolutional Pose Machine released by its authors (Caffe) into a
cpm-nb run folder (model.keras + cpm_config.json), without Caffe: the
prototxt is checked layer by layer against cpm-nb's network (or, for the
original architecture, the network is built from it), the weights are read
from the caffemodel by layer name (training-only layers are ignored), kernels
are turned into Keras layout and the image convolutions into RGB order. The run's
cpm_config.json records the release's preprocessing (BGR->RGB, x/256-0.5, pad
128, 368 box, centre map sigma 21, joint order) and test-time search, which
`cpm-nb predict` applies.

Bring the files yourself: the MPII model of convolutional-pose-machines-release
(model/_trained_MPI/pose_deploy_resize.prototxt and pose_iter_320000.caffemodel,
the network of the release's Python demo). The release's other pose models (MPII 630000,
MPII+LSP, LSP: pose_deploy_centerMap.prototxt; FLIC: pose_deploy.prototxt) use
the original 9x9/11x11 architecture: their network is built layer by layer
from the prototxt (Caffe layer names, ceil-mode pooling, every image branch
reversed to RGB, stage outputs = the convolutions no ReLU follows). predict
takes the 14-joint models; FLIC's 'head' is not an MPII joint, so predict
refuses a FLIC run. Converted weights keep the release's licence
(non-commercial use, no redistribution).

examples:
  cpm-nb convert-caffe --prototxt pose_deploy_resize.prototxt \\
                       --caffemodel pose_iter_320000.caffemodel --out runs/cpm-release
  cpm-nb convert-caffe --prototxt P --caffemodel W --out runs/cpm-release --check --json
  cpm-nb predict photo.jpg --model runs/cpm-release --box 120 40 330 600 --out poses/

scoring it on the MPII validation set (after `cpm-nb prepare mpii --root data/mpii`):
  python -c "from cpm_nb.caffe import convert as caffe; caffe.mpii_validation('runs/cpm-release', \\
             'scores', root='data/mpii')"
  cpm-nb evaluate-mpii --annotations scores/gt_valid.mat --predictions scores/pred.mat
""",
)
