"""``cpm-nb evaluate-mpii``: the official MPII PCKh of a predictions ``.mat`` file.

Reading and checking the files is :mod:`cpm_nb.evaluation.mpii_mat`, the scoring
:func:`cpm_nb.evaluation.metrics.pckh`; problems with the files arrive as
:class:`cpm_nb.core.errors.DataError` and are printed as one line (exit status 2).
"""

from __future__ import annotations

import argparse

from cpm_nb.cli.options import Command, add_json_option, float_in_range, print_json
from cpm_nb.evaluation.metrics import PCKH_EXCLUDED, PCKH_THRESHOLD
from cpm_nb.evaluation.mpii_mat import evaluate_mpii


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--annotations", required=True, metavar="GT.mat",
                        help="ground truth in the gt_valid.mat layout: pos_gt_src 16x2xN, "
                             "jnt_missing 16xN, headboxes_src 2x2xN, dataset_joints")
    parser.add_argument("--predictions", required=True, metavar="PRED.mat",
                        help="'preds' Nx16x2 (16x2xN accepted), same 1-based pixels and "
                             "person order as the annotations; a file with only "
                             "'pos_pred_src' 16x2xN (detections_our_format.mat) is read too")
    parser.add_argument("--threshold", type=float_in_range(0, 1, lo_open=True),
                        default=PCKH_THRESHOLD,
                        help="PCKh threshold, a fraction of the head size in (0, 1] "
                             "(default 0.5)")
    add_json_option(parser, "the results", "; it replaces the table")


def _run(args: argparse.Namespace) -> int:
    result, name = evaluate_mpii(args.annotations, args.predictions, args.threshold)
    if args.json != "-":
        print(f"{result.n_people} people; predictions from variable '{name}'; "
              f"{int(result.counts[[j for j in range(16) if j not in PCKH_EXCLUDED]].sum())} "
              f"joints counted (pelvis and thorax excluded)")
        print(result.format_table())
    if args.json:
        print_json(result.as_json(), args.json)
        if args.json != "-":
            print(f"wrote {args.json}")
    return 0


COMMAND = Command(
    name="evaluate-mpii",
    help="official MPII PCKh of a predictions .mat against gt_valid.mat-style annotations",
    add_arguments=_arguments,
    run=_run,
    description="""\
Score predictions with PCKh exactly as the official MPII MATLAB toolkit:
head size = 0.6 x head-box diagonal, a joint is correct iff its distance
<= threshold x head size, missing joints are excluded, and the Mean pools all
counted joints except pelvis and thorax.  Prints the table Head (upper neck and
head top), Shoulder, Elbow, Wrist, Hip, Knee, Ankle, Mean and Mean@0.1 (the
total at exactly 0.10); --json / --json-out add per-joint values and the 0..0.5
curve.  A joint type with no annotated joint is shown as n/a (null in JSON).

Ground truth for which PCKh is undefined is an error naming the people (1-based):
a zero-size or non-finite head box, or a NaN annotated joint, of a person with
annotated joints.  (The MATLAB toolkit would divide by the zero head size and
silently count that person's joints as wrong.)

examples:
  cpm-nb evaluate-mpii --annotations gt_valid.mat --predictions pred.mat
  cpm-nb evaluate-mpii --annotations gt_valid.mat --predictions pred.mat --json-out s.json
  # the reference file carries Tompson et al.'s predictions as pos_pred_src:
  cpm-nb evaluate-mpii --annotations detections_our_format.mat \\
                       --predictions detections_our_format.mat
""",
)
