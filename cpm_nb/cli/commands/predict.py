"""``cpm-nb predict``: estimate the pose in image files with a trained CPM.

Parses the options, checks them (and every output path) before any work, loads the
model with :func:`cpm_nb.inference.predict.load_predictor`, runs
:meth:`cpm_nb.inference.predict.Predictor.predict_many` and writes, per image, an overlay PNG
(:func:`cpm_nb.course.viz.overlay`) and a JSON file -- each atomically.  An image that
cannot be read is one line on stderr and exit status 1; the others go on.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from cpm_nb.cli.options import (
    CliError,
    Command,
    add_json_option,
    finite_float,
    float_in_range,
    int_in_range,
    positive_float,
    print_json,
)
from cpm_nb.core import files
from cpm_nb.course.viz import overlay
from cpm_nb.inference.predict import (
    DEFAULT_BATCH,
    MAX_BATCH,
    PIXEL_CONVENTION,
    load_predictor,
    person_from_box,
    scale_factors,
)
from cpm_nb.io.images import ImageError


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (JPEG, PNG, ...; grayscale and CMYK are converted)")
    parser.add_argument("--model", required=True, metavar="M",
                        help="a run folder of `cpm-nb train` (model.keras + cpm_config.json), "
                             "a .keras file, or a shipped preset: preset:cpu (`cpm-nb presets`)")
    where = parser.add_argument_group("where the person is (default: the image centre, the "
                                      "person as tall as the image); 1-based pixels")
    where.add_argument("--center", nargs=2, type=finite_float, metavar=("X", "Y"),
                       help="person centre (MPII objpos)")
    where.add_argument("--scale", type=positive_float, metavar="S",
                       help="person scale, a number > 0: 200*S px ~ the person's height "
                            "(MPII scale)")
    where.add_argument("--box", nargs=4, type=finite_float, metavar=("X1", "Y1", "X2", "Y2"),
                       help="person box; centre = box centre, scale = longer side / 200")
    parser.add_argument("--scales", nargs="+", type=positive_float, metavar="F",
                        help="average the maps over these crop scale factors (1.0 is always "
                             "included), e.g. --scales 0.7 0.85 1 1.15 1.3 (the paper: "
                             "0.7 .. 1.3; default: 1.0 alone, or the release's 0.7 .. 1.3 for "
                             "a model converted with cpm-nb convert-caffe)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for <name>_pose.png (overlay) and <name>_pose.json")
    parser.add_argument("--min-confidence", type=float_in_range(0, 1), default=0.0,
                        metavar="C", help="hide joints whose peak belief is below C in the "
                        "overlay, 0 to 1 (default 0: draw all)")
    parser.add_argument("--batch-size", type=int_in_range(1, MAX_BATCH), default=DEFAULT_BATCH,
                        help=f"images per forward pass, 1 to {MAX_BATCH} "
                             f"(default {DEFAULT_BATCH})")
    add_json_option(parser, "all results in one document",
                    "; on stdout it replaces the line per image")


def _check_arguments(args) -> None:
    if args.box is not None and (args.center is not None or args.scale is not None):
        raise CliError("give either --box or --center/--scale, not both")
    if args.box is not None:
        try:
            person_from_box(args.box)
        except ValueError as err:
            raise CliError(f"--box: {err}") from None
    if args.scales:
        try:
            scale_factors(args.scales)
        except ValueError as err:
            raise CliError(f"--scales: {err}") from None
    files.check_output_path(args.out, "dir", "--out")
    inputs = {Path(i).resolve() for i in args.images}
    outputs = [Path(args.out) / f"{n}.{ext}" for n in _out_names(args.images)
               for ext in ("png", "json")]
    if args.json not in (None, "-"):
        outputs.append(Path(args.json))
    for path in outputs:
        if path.resolve() in inputs:
            raise CliError(f"{path} is both an input image and an output; choose another "
                           "--out or --json-out")


def _out_names(images: list[str]) -> list[str]:
    """``<stem>_pose`` per image, made unique when two files share a stem."""
    names, seen = [], {}
    for path in images:
        stem = Path(path).stem or "image"
        k = seen.get(stem, 0)
        seen[stem] = k + 1
        names.append(f"{stem}_pose" if k == 0 else f"{stem}_{k + 1}_pose")
    return names


def _run(args: argparse.Namespace) -> int:
    _check_arguments(args)
    predictor = load_predictor(args.model)  # a ModelError is one line (cpm_nb.cli.app)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    quiet = args.json == "-"
    person = dict(center=args.center, scale=args.scale, box=args.box,
                  scales=tuple(args.scales) if args.scales else None)
    names = _out_names(args.images)
    results, failed = [None] * len(args.images), 0
    start = time.perf_counter()
    for i, pred in predictor.predict_many(args.images, batch_size=args.batch_size,
                                          keep_image=True, **person):
        image = args.images[i]
        if isinstance(pred, ImageError):
            failed += 1
            message = " ".join(str(pred).split())
            if image not in message:
                message = f"{image}: {message}"
            print(f"cpm-nb predict: error: {message}", file=sys.stderr, flush=True)
            results[i] = {"image": image, "error": message}
            continue
        record = pred.as_json()
        record["image"] = image
        png, js = out / f"{names[i]}.png", out / f"{names[i]}.json"
        with files.atomic_output(png) as tmp:
            overlay(pred.image, pred, args.min_confidence).save(tmp, format="PNG")
        record["overlay"] = str(png)
        record["model"] = predictor.source
        files.atomic_write_json(js, record)
        results[i] = record
        if not quiet:
            conf = float(np.mean(pred.confidence))
            print(f"{image}: {png} + {js.name} (mean joint confidence {conf:.2f})")
    seconds = time.perf_counter() - start
    done = len(args.images) - failed
    if args.json:
        print_json({"model": predictor.source, "input_size": predictor.input_size,
                    "stages": predictor.stages, "pixel_convention": PIXEL_CONVENTION,
                    "results": results, "failed": failed}, args.json)
    if not quiet:
        print(f"{done} of {len(args.images)} image(s) done in {seconds:.1f} s"
              + (f"; {failed} failed (see the errors above)" if failed else ""))
    return 1 if failed else 0


COMMAND = Command(
    name="predict",
    help="estimate the pose in image files: overlay PNGs and joints in original pixels (JSON)",
    add_arguments=_arguments,
    run=_run,
    description="""\
Run a trained CPM on image files. For each IMAGE, write DIR/<name>_pose.png
(the skeleton on the image; the dashed square is what the network saw) and
DIR/<name>_pose.json (the 16 MPII joints: x, y in original-image pixels,
1-based as in MPII -- the top-left pixel's centre is (1, 1) -- and the
confidence, the peak of the joint's belief map, about 0..1).

CPM estimates one person, centred in its input: say where the person is with
--center X Y --scale S (MPII objpos and scale: 200*S px ~ the person's height)
or --box X1 Y1 X2 Y2; by default the person is at the image centre and as tall
as the image. The same placement applies to every IMAGE.

A model trained on the synthetic set (the CI / laptop profiles) does poorly on
real photos; train on MPII on a GPU (`cpm-nb train --data mpii ...`, e.g. on
Colab, notebook 05) and pass that run folder to --model.

An image that cannot be read (missing, truncated, corrupt, not an image, or a
decompression bomb of more than 89 million pixels) is reported on one line and
skipped; the others are still processed and the exit status is 1. 16-bit,
palette and transparent images are converted (16-bit scaled to 8 bits). A
missing or incompatible model, or an --out / --json-out that cannot be written,
stops with status 2 before any work. Every output file is written atomically.

examples:
  cpm-nb predict photo.jpg --model preset:cpu --out poses/     the shipped cpu model
  cpm-nb predict photo.jpg --model runs/cpu-2st-synthetic-<hash> --out poses/
  cpm-nb predict a.jpg b.png --model my_model.keras --box 120 40 330 600 --out poses/
  cpm-nb predict img.jpg --model RUN --center 594 257 --scale 3.02 --scales 0.8 1 1.2 \\
                 --out poses/ --json-out poses/all.json
  cpm-nb predict --model RUN --out poses/ --json a.jpg b.jpg > all.json
""",
)
