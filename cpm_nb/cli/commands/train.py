"""``cpm-nb train``: train a CPM into a run folder, resumable after an interruption.

The command resolves the active profile, builds the run's
:class:`~cpm_nb.training.config.TrainConfig` from it and the options, checks what is a
matter of flags (``--data mpii`` without ``--data-dir``, a checkpoint in ``--out``
without ``--resume`` and the reverse), then calls :func:`cpm_nb.training.loop.train`.  The
library's errors (:class:`cpm_nb.core.errors.CpmError`) reach :func:`cpm_nb.cli.app.main`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cpm_nb.cli.options import (
    CliError,
    Command,
    add_json_option,
    int_in_range,
    nonnegative_int,
    positive_float,
    positive_int,
    print_json,
)

MAX_STAGES = 12  # the paper's deepest network has 6; more is a typo, not an experiment


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", choices=("synthetic", "mpii"), default="synthetic",
                        help="training data (default: the embedded synthetic set)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="prepared folder (data mpii: the output of `cpm-nb prepare mpii`)")
    parser.add_argument("--out", metavar="DIR",
                        help="run folder: checkpoints, logs, model.keras (default: the cache "
                             "folder that load_or_train uses, see $CPM_NB_RUNS)")
    parser.add_argument("--stages", type=int_in_range(1, MAX_STAGES), help=f"CPM stages, 1..{MAX_STAGES} "
                        "(default: the profile's)")
    parser.add_argument("--steps", type=positive_int, help="training steps (default: the "
                        "profile's)")
    parser.add_argument("--batch-size", type=positive_int, help="batch size (default: the "
                        "profile's)")
    parser.add_argument("--lr", type=positive_float, dest="learning_rate",
                        help="peak learning rate")
    parser.add_argument("--optimizer", choices=("adam", "sgd"))
    parser.add_argument("--seed", type=nonnegative_int)
    parser.add_argument("--checkpoint-every", type=positive_int, metavar="N",
                        help="steps between checkpoints (and history points)")
    parser.add_argument("--eval-every", type=nonnegative_int, metavar="N",
                        help="validation PCKh every N steps, a multiple of --checkpoint-every "
                             "(0: at the end only)")
    parser.add_argument("--precision", choices=("float32", "mixed_float16", "mixed_bfloat16"),
                        help="dtype policy (default: mixed on a GPU; mixed_bfloat16 on a CPU "
                             "with AMX-BF16 or AVX512-BF16, else float32)")
    parser.add_argument("--input-path", choices=("auto", "tf", "numpy"), default="auto",
                        help="batches from tf.data, or NumPy/PIL without TensorFlow "
                             "(default: tf.data where TensorFlow is installed)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.npz (same configuration required); "
                             "without it an existing checkpoint in OUT is an error")
    parser.add_argument("--retrain", action="store_true",
                        help="train from scratch even when a shipped preset or a finished run "
                             "in the cache holds this configuration (without --out: the cache "
                             "folder's run is replaced when the new one is complete)")
    parser.add_argument("--force", action="store_true",
                        help="train into an --out that holds a model.keras it did not train "
                             "(a converted run), replacing that model")
    parser.add_argument("--stop-after", type=positive_int, metavar="N",
                        help="stop after N steps of this call (with a checkpoint)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_option(parser, "the final metrics")


def _config_of(args: argparse.Namespace):
    """The run's configuration: the active profile with the options given."""
    from cpm_nb.core import config
    from cpm_nb.training.config import train_config

    try:
        return train_config(config.get_profile(), data=args.data, data_dir=args.data_dir,
                            stages=args.stages, steps=args.steps, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, optimizer=args.optimizer,
                            seed=args.seed, checkpoint_every=args.checkpoint_every,
                            eval_every=args.eval_every, precision=args.precision)
    except ValueError as err:
        raise CliError(str(err)) from None


def _check_out(args: argparse.Namespace, out: Path) -> None:
    """The output folder and the --resume flag agree with what is in it."""
    from cpm_nb.core import files
    from cpm_nb.training import runs

    files.check_output_path(out, "dir", "--out")
    checkpoint = out / runs.CHECKPOINT
    if args.retrain and args.resume:
        raise CliError("--retrain starts from scratch and --resume continues a checkpoint: "
                       "give one of them")
    if checkpoint.is_file() and not args.resume and not args.retrain:
        raise CliError(f"{checkpoint} exists: add --resume to continue that run, or "
                       "choose another --out")
    if (out / runs.MODEL_FILE).is_file() and not checkpoint.is_file() and not args.force:
        raise CliError(f"{out} already holds a {runs.MODEL_FILE} that was not trained there "
                       "(a converted or copied model); choose another --out or pass --force "
                       "to replace it")
    if args.resume and not checkpoint.is_file():
        raise CliError(f"nothing to resume: no {runs.CHECKPOINT} in {out} (drop --resume to "
                       "start a new run there)")


def _already_trained(cfg, args: argparse.Namespace) -> bool:
    """Without --out: a shipped preset or a finished cached run of this very configuration
    is reported (what it is, where, its score) instead of training it again."""
    from cpm_nb.training import presets, runs

    name = presets.find(cfg.key())
    folder = presets.folder(name) if name else runs.cached(cfg)
    if folder is None:
        return False
    meta = runs.read_metadata(folder / runs.CONFIG_FILE)
    what = presets.summary(name) if name else f"the cached run {folder}"
    print(f"{what}: this configuration is trained already (--model "
          f"{presets.PREFIX + name if name else folder}); add --retrain to train it yourself",
          file=sys.stderr)
    if args.json:
        print_json({**meta.get("metrics", {}), "run": str(folder), "preset": name}, args.json)
    return True


def _run(args: argparse.Namespace) -> int:
    from cpm_nb.training import runs
    from cpm_nb.training.config import estimate_message
    from cpm_nb.training.loop import train

    cfg = _config_of(args)
    if cfg.data == "mpii" and not cfg.data_dir:
        raise CliError("--data mpii needs --data-dir: the folder written by `cpm-nb prepare "
                       "mpii` (ROOT/tfrecords-<size>)")
    if not args.out and not args.retrain and _already_trained(cfg, args):
        return 0
    out = Path(args.out) if args.out else runs.run_dir(cfg)
    _check_out(args, out)
    print(estimate_message(cfg), file=sys.stderr, flush=True)
    result = train(cfg, out, resume=bool(args.resume), progress=not args.no_progress,
                   stop_after=args.stop_after, input_path=args.input_path)
    if result.metrics:
        print(f"run folder: {out} (pass it to --model)",
              file=sys.stderr if args.json == "-" else sys.stdout, flush=True)
    if args.json and result.metrics:
        print_json({**result.metrics, "run": str(out)}, args.json)
    elif not result.metrics:
        print(f"stopped at step {result.step} of {cfg.steps}; continue with --resume",
              file=sys.stderr)
    return 0


COMMAND = Command(
    name="train",
    help="train a CPM (intermediate supervision) with resumable checkpoints",
    add_arguments=_arguments,
    run=_run,
    description="""\
Train a Convolutional Pose Machine with keras.Model.fit and a loss on every stage, on
the TensorFlow (default) or JAX backend (KERAS_BACKEND=jax).  Sizes come from the
profile (--profile / $CPM_NB_PROFILE); checkpoints are written atomically every
--checkpoint-every steps to OUT/checkpoint.npz, so a run that was killed (Colab
disconnect, Ctrl-C, SIGKILL) continues with --resume from its last checkpoint, with
the same step counter, optimizer state, learning-rate schedule and data order.
At the end: OUT/model.keras, OUT/cpm_config.json, OUT/history.json, OUT/logs/
(TensorBoard: tensorboard --logdir OUT/logs).

examples:
  cpm-nb --profile fast train --out /tmp/cpm-fast          seconds: the loss falls
  cpm-nb --profile cpu train                 the cpu preset is this run: says so (no training)
  cpm-nb --profile cpu train --retrain       train it yourself (~9 minutes on 2 cores, bf16)
  cpm-nb --profile cpu train --out runs/cpu                ~10 minutes on 2 CPU cores
  cpm-nb --profile cpu train --out runs/cpu --resume       continue after an interruption
  KERAS_BACKEND=jax cpm-nb --profile fast train --out /tmp/jax   the same on JAX
  cpm-nb --profile gpu train --data mpii --data-dir /content/mpii/tfrecords-368 \\
         --out /content/drive/MyDrive/cpm_nb/gpu --resume  the paper configuration on Colab""",
)
