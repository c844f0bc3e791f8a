"""``cpm-nb evaluate``: score a trained run on the validation people."""

from __future__ import annotations

from cpm_nb.cli.options import CliError, Command, add_json_option, print_json


def _arguments(parser) -> None:
    parser.add_argument("--model", required=True, metavar="M",
                        help="a run folder holding model.keras and cpm_config.json, or a "
                             "shipped preset: preset:cpu (`cpm-nb presets` lists them)")
    parser.add_argument("--data", choices=("synthetic", "mpii"), default=None,
                        help="evaluation data (default: what the model was trained on)")
    parser.add_argument("--data-dir", metavar="DIR", help="prepared folder with a val split")
    parser.add_argument("--split", default="val", choices=("val", "train"),
                        help="split to score (default: val)")
    parser.add_argument("--max-examples", type=int, metavar="N", help="score the first N people")
    parser.add_argument("--input-path", choices=("auto", "tf", "numpy"), default="auto",
                        help="read the data with tf.data or NumPy/PIL (default: tf.data where "
                             "TensorFlow is installed)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_option(parser, "the scores")


def _check_sizes(cfg, trained) -> None:
    """Before rendering or reading any data: the data's crops are the model's input size
    (a converted 368-px model is not scored on a 64-px synthetic set after minutes of
    rendering)."""
    size = getattr(getattr(trained.model, "cpm_config", None), "input_size", None)
    spec = cfg.synthetic
    if size and cfg.data == "synthetic" and not cfg.data_dir and spec is not None and \
            spec.input_size != size:
        raise CliError(f"the model takes {size}-px crops but the '{spec.name}' synthetic set "
                       f"has {spec.input_size} px; evaluate it with --data-dir DIR (data "
                       f"prepared at {size} px) or use a model of {spec.input_size} px")


def _run(args) -> int:
    import sys
    from pathlib import Path

    from cpm_nb.core import errors
    from cpm_nb.core.config import resolve_profile
    from cpm_nb.evaluation.evaluate import evaluate, format_scores
    from cpm_nb.training import loop as train
    from cpm_nb.training import presets, runs
    from cpm_nb.training.config import TrainConfig, train_config

    if args.max_examples is not None and args.max_examples < 1:
        raise CliError(f"--max-examples {args.max_examples} is out of range: must be >= 1")
    try:
        trained = runs.load_run(presets.resolve(args.model))
        training = trained.meta.get("training")
        cfg = (TrainConfig.from_json(training) if training
               else train_config(resolve_profile("cpu")))
        if args.data:
            cfg = cfg.replace(data=args.data, data_dir=args.data_dir)
        elif args.data_dir:
            cfg = cfg.replace(data_dir=args.data_dir)
        _check_sizes(cfg, trained)
        scores = evaluate(trained.model, train.data_dir(cfg), split=args.split,
                          max_examples=args.max_examples, input_path=args.input_path,
                          progress=not args.no_progress)
    except (errors.ModelError, errors.DataError, ValueError, TypeError, KeyError) as err:
        raise CliError(" ".join(str(err).split())) from None
    title = (f"{scores['n_examples']} people ({cfg.data}, split {args.split}); model "
             f"{Path(args.model).name}: {trained.meta.get('stages')} stages, "
             f"{trained.meta.get('input_size')} px")
    print(format_scores(scores, title), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        print_json(scores, args.json)
    return 0


COMMAND = Command(
    name="evaluate",
    help="score a trained model: PCKh table, the article's 25-px metric, per stage, "
         "hard subsets",
    add_arguments=_arguments,
    run=_run,
    description="""\
Predict on the unaugmented validation people, decode the belief maps, map the joints
back to original-image pixels and score them with the official MPII PCKh (the keys
of `cpm-nb evaluate-mpii --json`: pckh, mean, mean_at_0.1, per_joint), plus the
source article's 25-px metric, PCKh@0.5 per stage and on the hard subsets
(occluded joints, another person's joints in the crop, crossed limbs).  Works on the TensorFlow
and the JAX backend (KERAS_BACKEND=jax).

examples:
  cpm-nb evaluate --model preset:cpu                  the shipped cpu model
  cpm-nb evaluate --model runs/cpu
  cpm-nb evaluate --model runs/cpu --json-out scores.json
  cpm-nb evaluate --model /content/drive/MyDrive/cpm_nb/gpu --data mpii \\
                  --data-dir /content/mpii/tfrecords-368""",
)
