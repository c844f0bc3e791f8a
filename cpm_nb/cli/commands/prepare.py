"""``cpm-nb prepare synthetic|mpii``: make the TFRecord shards training reads.

Resolves the profile (``synthetic``: the set to render; ``mpii``: the default crop
size), checks the output folders before any work, calls
:func:`cpm_nb.data.synthetic_set.prepare_synthetic` or :func:`cpm_nb.data.prepare.prepare_mpii` with
explicit values and prints the summary (or its JSON).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cpm_nb.cli.options import (
    CliError,
    Command,
    add_json_option,
    int_in_range,
    nonnegative_int,
    positive_int,
    print_json,
)
from cpm_nb.core import files
from cpm_nb.data import prepare
from cpm_nb.data.prepare import ANNOTATION_FILE, DOWNLOADS


def _arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    syn = sub.add_parser("synthetic", help="render the synthetic set for the profile and "
                         "write its TFRecords (seconds)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description=SYNTHETIC_DESCRIPTION)
    syn.add_argument("--seed", type=nonnegative_int, help="dataset seed, an integer >= 0 "
                     "(default: the profile's)")
    syn.add_argument("--force", action="store_true", help="re-render even when cached")
    mp = sub.add_parser("mpii", help="download (when missing), extract and convert real MPII",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description=MPII_DESCRIPTION)
    mp.add_argument("--root", required=True, help="folder for the downloads, images/ and shards")
    mp.add_argument("--input-size", type=int_in_range(16, 2048, multiple_of=8),
                    help="crop side in px, 16 to 2048, a multiple of 8 (default: the "
                    "profile's input_size)")
    mp.add_argument("--out", help="TFRecord folder (default: ROOT/tfrecords-SIZE)")
    mp.add_argument("--annotations", help=f"an existing {ANNOTATION_FILE} (skips its download)")
    mp.add_argument("--images", help="an existing folder of MPII images (skips the 12.9 GB "
                    "download)")
    mp.add_argument("--split-file", help="an existing detections.mat defining the validation "
                    "set (RELEASE_img_index, RELEASE_person_index)")
    mp.add_argument("--no-download", action="store_true",
                    help="fail instead of downloading a missing file")
    mp.add_argument("--max-people", type=positive_int, metavar="N",
                    help="convert at most N >= 1 people per split (a quick try)")
    for key, d in DOWNLOADS.items():
        mp.add_argument(f"--{key}-url", help=f"mirror of {d.name} (default: {d.url})")
    mp.add_argument("--images-md5", help=f"expected md5 of the image archive "
                    f"(default: {DOWNLOADS['images'].md5})")
    for p in (syn, mp):
        add_json_option(p, "the summary")
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def _synthetic(args: argparse.Namespace) -> dict:
    from cpm_nb.core.config import get_profile
    from cpm_nb.data.synthetic_set import SyntheticSpec, prepare_synthetic

    profile = get_profile()
    spec = SyntheticSpec.from_profile(profile, seed=profile.seed if args.seed is None
                                      else args.seed)
    prepared = prepare_synthetic(spec, force=args.force, progress=not args.quiet, verify=True)
    return prepare.synthetic_summary(spec, prepared)


def _mpii(args: argparse.Namespace) -> dict:
    from cpm_nb.core.config import get_profile

    root = files.check_output_path(args.root, "dir", "--root")
    out = files.check_output_path(args.out, "dir", "--out") if args.out else None
    input_size = args.input_size or get_profile().input_size
    sources = prepare.MpiiSources(
        annotations=_path(args.annotations), split_file=_path(args.split_file),
        images=_path(args.images), download=not args.no_download,
        urls={key: getattr(args, f"{key}_url") for key in DOWNLOADS
              if getattr(args, f"{key}_url")},
        md5s={"images": args.images_md5} if args.images_md5 else {})
    try:
        return prepare.prepare_mpii(root, input_size, out, sources, max_people=args.max_people,
                                    progress=not args.quiet)
    except prepare.NotDownloadedError as err:
        raise CliError(f"{err} (--no-download was given)") from None


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _run(args: argparse.Namespace) -> int:
    result = _synthetic(args) if args.source == "synthetic" else _mpii(args)
    if args.json != "-":
        print(prepare.format_summary(result))
    if args.json:
        print_json(result, args.json)
    return 0


SYNTHETIC_DESCRIPTION = """\
Render the embedded synthetic dataset for the active profile (profile.n_train +
profile.n_val images of 1-3 articulated people, deterministic by seed) and write
its TFRecords. Everything goes to data/synthetic/<profile>-seed<seed>/ of the
cpm-nb checkout the package is installed from, else $CPM_NB_DATA/synthetic/...,
else the user cache ($XDG_CACHE_HOME or ~/.cache, /cpm_nb/synthetic/...).  A second
run finds it cached and verifies its shards (damaged ones are written again).
Everything is written under temporary names and swapped in when complete; two
processes preparing the same set at once wait for each other.

examples:
  cpm-nb prepare synthetic                       the active profile
  cpm-nb prepare synthetic --profile cpu --json  3,300 images in ~20 s, summary as JSON
  cpm-nb prepare synthetic --seed 1 --force      another sample, re-rendered
"""

MPII_DESCRIPTION = """\
Download (when missing), extract and convert real MPII Human Pose into TFRecords.

Under --root it keeps the downloads, their extracted contents (images/ and the
annotation .mat) and the shards (tfrecords-SIZE/).  Downloads resume after an
interruption (re-run the same command) and the image archive is checked against
its published md5.  Each split's shards and meta.json are replaced only when the
whole split succeeded; an image that is missing, unreadable, truncated, too large
or named outside the image folder is skipped and counted in the summary.  Validation is the standard 2,958-person set of Tompson et
al. (detections.mat); every other annotated training person is train.

examples:
  cpm-nb prepare mpii --root /content/mpii            everything (about 13 GB)
  cpm-nb prepare mpii --root data/mpii --images ~/mpii/images --split-file detections.mat
  cpm-nb --profile gpu prepare mpii --root data/mpii --max-people 500   a quick try
"""

COMMAND = Command(
    name="prepare",
    help="make training data: the synthetic set, or download and convert real MPII",
    description=(
        "Make the TFRecord shards the training pipeline reads, ending with a summary of\n"
        "the examples kept and skipped (per reason).\n\n"
        "examples:\n"
        "  cpm-nb prepare synthetic                 synthetic set for the active profile\n"
        "  cpm-nb --profile cpu prepare synthetic --json-out summary.json\n"
        "  cpm-nb prepare mpii --root /content/mpii   real MPII (downloads ~13 GB)\n"
        "  cpm-nb prepare mpii --help               all MPII options"
    ),
    add_arguments=_arguments,
    run=_run,
)
