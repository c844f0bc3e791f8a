"""Training CPM with intermediate supervision: the loop, checkpoints, evaluation, the cache.

The loss
--------
Every stage ``t`` gets its own target: the Gaussian belief maps of the joints,
rendered in-graph by :func:`cpm_nb.heatmaps.render` from the batch's joints (no
label maps are stored).  The *data loss* is the sum over stages of the mean
squared error between each stage's maps and the targets (intermediate
supervision: the gradient reaches the trunk from every stage, not only from the
last).  The objective the optimizer minimises is::

    objective = loss_scale * sum_t MSE_t  +  weight_decay / 2 * sum ||W||^2

``loss_scale = M * M * J / 2`` (M the map side, J the joints) turns each MSE into
Caffe's ``EuclideanLoss`` (half the summed squared error per image), the loss of
the released CPM training; with it the paper's learning rate and weight decay
apply unchanged, and the L2 term (kernels only, as Caffe's ``weight_decay`` on
``decay_mult: 1`` blobs) keeps its relative weight.

Optimizers per profile (:data:`TRAINING`)
-----------------------------------------
* ``gpu`` -- the paper / released solver: SGD with momentum 0.9, base lr 8e-5,
  step decay (x0.333 every 13,275 iterations), weight decay 5e-4, batch 16.
* ``cpu`` and ``fast`` -- Adam (lr 1e-3, x0.1 for the last fifth of the steps),
  weight decay 5e-4.  SGD at the paper's rate needs ~10^5 iterations; Adam's
  per-parameter step sizes make the small networks converge in a few thousand
  iterations, which is what a laptop budget allows.

The loop
--------
TensorFlow-specific (``tf.data`` feeding, a ``tf.function`` train step, a
``tf.GradientTape``); the model, the targets and the loss are Keras layers and
``keras.ops`` (they also run on JAX: see :mod:`cpm_nb.model`).  When a GPU is
visible the step is XLA-compiled (``jit_compile=True``) and the model runs in
mixed precision (``mixed_float16`` with a loss-scale optimizer; maps are cast to
float32 before the loss); with several GPUs the step runs under
``tf.distribute.MirroredStrategy``.  On the CPU all three are off.

Data order is a pure function of ``(seed, step)``: example ``p = step * B + i``
of the run is record ``index_shuffle(p mod N, seed=(seed, p div N))`` (a fresh
permutation every epoch), augmented with stateless random draws keyed by
``(seed, p)``.  A run resumed at step ``k`` therefore sees exactly the batches an
uninterrupted run sees from step ``k`` on.  (For record sets too big to hold in
memory, :data:`MAX_RECORD_BYTES`, the shards are streamed by
:func:`cpm_nb.pipeline.make_dataset` with a seed derived from the start step: a
resumed run then sees a fresh shuffle.)

Checkpoints
-----------
``OUT/checkpoint.npz`` every ``checkpoint_every`` steps: model weights, optimizer
variables (step counter, moments, loss scale), the step, the configuration hash
and the history.  It is written to a temporary file in the same folder, flushed,
``fsync``-ed and moved over the old one with ``os.replace`` (atomic on POSIX and
on Google Drive's FUSE mount), so a run killed at any moment leaves either the
old or the new checkpoint, never half of one.  A NaN/Inf loss stops the run
(:class:`TrainingDiverged`) without writing a checkpoint: the last good one stays.

Outputs of a run in ``OUT``: ``checkpoint.npz``, ``history.json``, ``logs/``
(TensorBoard), and at the end ``model.keras`` (native Keras format, built-in
layers only: ``keras.saving.load_model(path)`` works with ``safe_mode=True``) and
``cpm_config.json`` (architecture, joints, input size, normalisation, training
configuration, data, steps, final metrics).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cpm_nb import config as _config
from cpm_nb import skeleton
from cpm_nb.cli import CliError, Command, add_json_option

TRAIN_VERSION = 1  # bump when a change to the loop invalidates cached runs
CHECKPOINT = "checkpoint.npz"
HISTORY = "history.json"
MODEL_FILE = "model.keras"
CONFIG_FILE = "cpm_config.json"
RUNS_ENV = "CPM_NB_RUNS"
MAX_RECORD_BYTES = 1 << 30  # hold training records in memory up to 1 GiB
COLAB_DRIVE = Path("/content/drive/MyDrive")

# Training settings per profile (everything not a size: sizes live in cpm_nb.config).
TRAINING: dict[str, dict] = {
    "fast": dict(optimizer="adam", lr_decay_steps=0, lr_decay_factor=0.1, weight_decay=5e-4,
                 checkpoint_every=10, eval_every=0, eval_examples=0),
    "cpu": dict(optimizer="adam", lr_decay_steps=-1, lr_decay_factor=0.1, weight_decay=5e-4,
                checkpoint_every=100, eval_every=500, eval_examples=0),
    "gpu": dict(optimizer="sgd", lr_decay_steps=13275, lr_decay_factor=0.333, weight_decay=5e-4,
                checkpoint_every=1000, eval_every=5000, eval_examples=0),
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint was kept."""


class ConfigMismatch(ValueError):
    """A checkpoint written by a run with a different configuration."""


# --- configuration ------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and hence its cache key).

    ``lr_decay_steps``: step decay every that many steps (0: constant; -1: once, at
    80 % of ``steps``).  ``mixed_precision`` / ``xla`` / ``distribute``: ``None``
    = on when a GPU is visible (``distribute``: when several are).
    """

    profile: str
    data: str = "synthetic"  # synthetic | mpii
    data_dir: str | None = None  # TFRecord folder of `cpm-nb prepare mpii` (data="mpii")
    input_size: int = 128
    stages: int = 3
    width: float = 0.25
    sigma: float = 5.0
    n_train: int = 0  # synthetic set size (images)
    n_val: int = 0
    batch_size: int = 16
    steps: int = 1000
    seed: int = 0
    optimizer: str = "adam"  # adam | sgd
    learning_rate: float = 1e-3
    momentum: float = 0.9
    lr_decay_steps: int = 0
    lr_decay_factor: float = 0.1
    weight_decay: float = 5e-4
    augment: bool = True
    checkpoint_every: int = 100
    eval_every: int = 0  # periodic validation PCKh (0: only at the end)
    eval_examples: int = 0  # validation people used by the periodic check (0: all)
    mixed_precision: bool | None = None
    xla: bool | None = None
    distribute: bool | None = None

    def __post_init__(self):
        if self.data not in ("synthetic", "mpii"):
            raise ValueError(f"data must be 'synthetic' or 'mpii', got {self.data!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.steps < 1 or self.batch_size < 1 or self.stages < 1:
            raise ValueError("steps, batch_size and stages must be >= 1")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")

    @property
    def map_size(self) -> int:
        return self.input_size // _config.OUTPUT_STRIDE

    @property
    def loss_scale(self) -> float:
        """Caffe's EuclideanLoss per stage = loss_scale x MSE (half the summed squares)."""
        return 0.5 * self.map_size**2 * skeleton.NUM_JOINTS

    @property
    def decay_steps(self) -> int:
        if self.lr_decay_steps < 0:
            return max(1, int(0.8 * self.steps))
        return self.lr_decay_steps

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # Fields that do not change the trained weights (bookkeeping only).
    _NOT_HASHED = ("checkpoint_every", "eval_every", "eval_examples")

    def key(self) -> str:
        """A hash of every field that changes the result (and of the loop's version)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in self._NOT_HASHED}
        fields["train_version"] = TRAIN_VERSION
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def run_name(self) -> str:
        return f"{self.profile}-{self.stages}st-{self.data}-{self.key()}"

    def profile_object(self) -> _config.Profile:
        """The profile these sizes describe (what the data and model helpers take)."""
        base = _config.resolve_profile(self.profile)
        return base.replace(input_size=self.input_size, stages=self.stages, width=self.width,
                            sigma=self.sigma, n_train=self.n_train, n_val=self.n_val,
                            batch_size=self.batch_size, train_steps=self.steps,
                            learning_rate=self.learning_rate, seed=self.seed)

    def model_config(self):
        from cpm_nb import model as M

        return M.from_profile(self.profile_object())


def train_config(profile: str | _config.Profile | None = None, **overrides) -> TrainConfig:
    """The training configuration of a profile (default: the active one), with overrides.

    Sizes come from the profile (:mod:`cpm_nb.config`), the optimizer settings from
    :data:`TRAINING`.  ``overrides`` are :class:`TrainConfig` fields; ``None`` values
    are ignored (so CLI options can be passed through).
    """
    if profile is None:
        profile = _config.get_profile()
    elif isinstance(profile, str):
        profile = _config.resolve_profile(profile)
    base = dict(profile=profile.name, input_size=profile.input_size, stages=profile.stages,
                width=profile.width, sigma=profile.sigma, n_train=profile.n_train,
                n_val=profile.n_val, batch_size=profile.batch_size, steps=profile.train_steps,
                seed=profile.seed, learning_rate=profile.learning_rate)
    base.update(TRAINING.get(profile.name, TRAINING["cpu"]))
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise TypeError(f"unknown training settings: {', '.join(sorted(unknown))}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**base)


def default_runs_dir() -> Path:
    """Where cached runs live: ``$CPM_NB_RUNS``; on Colab with Drive mounted
    ``MyDrive/cpm_nb/runs`` (survives a disconnect); else ``runs/`` of the checkout;
    else ``~/.cache/cpm_nb/runs``."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser()
    if COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / "cpm_nb" / "runs"
    from cpm_nb.viz import repo_root

    root = repo_root()
    return root / "runs" if root is not None else Path.home() / ".cache" / "cpm_nb" / "runs"


# --- data ---------------------------------------------------------------------------------


def data_dir(cfg: TrainConfig) -> Path:
    """The TFRecord folder of the run's data (the synthetic set is made on demand)."""
    from cpm_nb import pipeline

    if cfg.data == "mpii":
        if not cfg.data_dir:
            raise CliError("--data mpii needs --data-dir: the TFRecord folder written by "
                           "`cpm-nb prepare mpii --root DIR` (DIR/tfrecords-<size>)")
        folder = Path(cfg.data_dir).expanduser()
        if not (folder / pipeline.META_FILE).is_file():
            raise CliError(f"{folder} holds no {pipeline.META_FILE}: run `cpm-nb prepare mpii` "
                           "first")
        return folder
    if cfg.data_dir:
        return Path(cfg.data_dir).expanduser()
    folder, _ = pipeline.prepare_synthetic(cfg.profile_object())
    return folder


def _tf():
    from cpm_nb.runtime import import_keras

    import_keras()
    import tensorflow as tf

    return tf


def _record_files(folder: Path, split: str) -> list[str]:
    files = sorted(str(p) for p in Path(folder).glob(f"{split}-*.tfrecord"))
    if not files:
        raise FileNotFoundError(f"no {split}-*.tfrecord shards in {folder}")
    return files


def train_dataset(folder, batch_size: int, seed: int = 0, start_step: int = 0,
                  augment: bool = True):
    """Training batches ``(images, joints, visibility)`` from step ``start_step`` on.

    Batch ``s`` is a pure function of ``(seed, s)`` (see the module docstring), so a
    resumed run continues the exact sequence.  Infinite; deterministic.
    """
    from cpm_nb import pipeline, preprocess

    tf = _tf()
    folder = Path(folder)
    meta = pipeline.read_meta(folder)
    input_size, context = int(meta["input_size"]), float(meta["context"])
    files = _record_files(folder, "train")
    if sum(os.path.getsize(f) for f in files) > MAX_RECORD_BYTES:
        stream_seed = int(np.random.default_rng([seed, start_step]).integers(2**31))
        ds = pipeline.make_dataset(folder, "train", batch_size=batch_size, augment=augment,
                                   deterministic=True, seed=stream_seed)
        return ds.map(lambda *b: b[:3])
    records = list(tf.data.TFRecordDataset(files).as_numpy_iterator())
    n = len(records)
    table = tf.constant(records)
    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "joints": tf.io.FixedLenFeature([32], tf.float32),
            "visibility": tf.io.FixedLenFeature([16], tf.int64)}
    seed64 = tf.constant(seed, tf.int64)

    def load(p):
        epoch, k = p // n, p % n
        idx = tf.random.experimental.index_shuffle(k, tf.stack([seed64, epoch]),
                                                   tf.constant(n - 1, tf.int64))
        ex = tf.io.parse_single_example(tf.gather(table, idx), spec)
        image = tf.io.decode_jpeg(ex["image"], channels=3)
        joints = tf.reshape(ex["joints"], [1, 16, 2])
        vis = tf.cast(tf.reshape(ex["visibility"], [1, 16]), tf.int32)
        if augment:
            rot, sf, flip = preprocess.tf_sample_augmentation(tf.stack([seed64, p]), 1)
        else:
            rot, sf, flip = tf.zeros([1]), tf.ones([1]), tf.zeros([1], tf.bool)
        fwd, inv = preprocess.tf_augment_matrices(rot, sf, flip, input_size, context)
        crop = preprocess.tf_warp(image[None], inv, input_size)[0]
        crop.set_shape([input_size, input_size, 3])
        joints, vis = preprocess.tf_transform_joints(joints, vis, fwd, flip)
        return crop, joints[0], vis[0]

    ds = tf.data.Dataset.range(start_step * batch_size, 2**62)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


# --- evaluation ---------------------------------------------------------------------------


def predict_fn(model):
    """:func:`cpm_nb.model.make_predict_fn` of ``model``, made once and kept on the model
    (a fresh ``tf.function`` per call would be traced again every time)."""
    from cpm_nb import model as M

    fn = getattr(model, "_cpm_nb_predict", None)
    if fn is None:
        fn = M.make_predict_fn(model)
        model._cpm_nb_predict = fn
    return fn


def _pckh_mean(pred, gt, headboxes, valid) -> float | None:
    from cpm_nb import metrics

    if not valid.any():
        return None
    value = metrics.pckh(pred, gt, headboxes, valid).mean
    return None if not math.isfinite(value) else float(value)


def evaluate(model, folder, split: str = "val", batch_size: int = 32,
             max_examples: int | None = None, predict=None) -> dict:
    """Score ``model`` on the unaugmented ``split`` of a TFRecord folder.

    Predictions of every stage are decoded (:func:`cpm_nb.heatmaps.decode`), mapped
    back to original-image pixels with the example's crop matrix
    (:func:`cpm_nb.heatmaps.to_original`) and scored there.  Returns the
    ``evaluate-mpii`` keys of the last stage (``pckh`` table, ``mean``,
    ``mean_at_0.1``, ``per_joint``), the source article's 25-px metric
    (``article_25px``), ``per_stage`` PCKh@0.5, and ``hard``: PCKh@0.5 on occluded
    joints, visible joints, people with other people in the image (distractors)
    and people alone.
    """
    from cpm_nb import heatmaps, metrics, pipeline
    from cpm_nb import model as M

    cfg = M.config_of(model)
    predict = predict or predict_fn(model)
    ds = pipeline.make_dataset(folder, split, batch_size=batch_size, augment=False,
                               shuffle=False, repeat=False, deterministic=True, with_meta=True)
    preds = [[] for _ in range(cfg.stages)]
    gts, boxes, vis_all, others = [], [], [], []
    seen = 0
    for images, _joints, vis, meta in ds.as_numpy_iterator():
        if max_examples:
            keep = min(len(images), max_examples - seen)
            images, vis = images[:keep], vis[:keep]
            meta = {k: v[:keep] for k, v in meta.items()}
        outs = predict(images)
        for s, maps in enumerate(outs):
            joints_in, _ = heatmaps.decode(maps[..., : cfg.num_joints])
            preds[s].append(heatmaps.to_original(joints_in, meta["crop_matrix"]))
        gts.append(meta["orig_joints"])
        boxes.append(meta["head_box"].reshape(-1, 2, 2))
        vis_all.append(vis)
        others.append(meta["n_others"])
        seen += len(images)
        if max_examples and seen >= max_examples:
            break
    gt = np.concatenate(gts).astype(np.float64)
    headboxes = np.concatenate(boxes).astype(np.float64)
    vis = np.concatenate(vis_all)
    n_others = np.concatenate(others)
    preds = [np.concatenate(p) for p in preds]
    valid = vis > 0
    final = preds[-1]
    result = metrics.pckh(final, gt, headboxes, valid)
    out = result.as_json()
    out.pop("curve", None)
    article = metrics.fixed_radius(final, gt, valid, metrics.ARTICLE_RADIUS)
    out["article_25px"] = _num(article.total)
    out["per_stage"] = [_pckh_mean(p, gt, headboxes, valid) for p in preds]
    distract = (n_others > 0)[:, None]
    subsets = {
        "occluded_joints": valid & (vis == 1),
        "visible_joints": valid & (vis == 2),
        "with_distractors": valid & distract,
        "alone": valid & ~distract,
    }
    out["hard"] = {name: _pckh_mean(final, gt, headboxes, mask) for name, mask in subsets.items()}
    out["hard_counts"] = {name: int(mask.sum()) for name, mask in subsets.items()}
    out["hard_per_stage"] = {name: [_pckh_mean(p, gt, headboxes, mask) for p in preds]
                             for name, mask in subsets.items()
                             if name in ("occluded_joints", "with_distractors")}
    out["n_examples"] = int(len(gt))
    out["split"] = split
    return out


def _num(v):
    return None if v is None or not math.isfinite(v) else float(v)


# --- checkpoints --------------------------------------------------------------------------


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            _write_all(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    with _suppress():  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _write_all(f, data: bytes) -> None:
    f.write(data)


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def atomic_write_json(path, data) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=1) + "\n").encode())


def save_checkpoint(path, model, optimizer, state: dict) -> None:
    """Weights, optimizer variables and ``state`` (JSON-able) as one npz, atomically."""
    import io

    arrays = {f"w{i:04d}": np.asarray(v) for i, v in enumerate(model.get_weights())}
    arrays.update({f"o{i:04d}": np.asarray(v) for i, v in enumerate(_opt_values(optimizer))})
    bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
    if bad:
        raise TrainingDiverged(f"refusing to checkpoint non-finite values ({len(bad)} arrays)")
    arrays["state"] = np.frombuffer(json.dumps(state).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _opt_values(optimizer) -> list:
    return [v.numpy() if hasattr(v, "numpy") else np.asarray(v) for v in optimizer.variables]


def read_checkpoint(path) -> tuple[list, list, dict]:
    """(weights, optimizer values, state) of a checkpoint file."""
    with np.load(path) as z:
        weights = [z[k] for k in sorted(k for k in z.files if k.startswith("w"))]
        opt = [z[k] for k in sorted(k for k in z.files if k.startswith("o"))]
        state = json.loads(bytes(z["state"]).decode())
    return weights, opt, state


def restore_checkpoint(path, model, optimizer) -> dict:
    weights, opt, state = read_checkpoint(path)
    model.set_weights(weights)
    variables = optimizer.variables
    if len(variables) != len(opt):
        raise ConfigMismatch(f"{path}: {len(opt)} optimizer variables, the optimizer has "
                             f"{len(variables)}")
    for var, value in zip(variables, opt):
        var.assign(value)
    return state


# --- the loop -----------------------------------------------------------------------------


def _gpus() -> list:
    tf = _tf()
    return tf.config.list_physical_devices("GPU")


def _make_optimizer(cfg: TrainConfig, mixed: bool):
    from cpm_nb.runtime import import_keras

    keras = import_keras()
    lr = cfg.learning_rate
    if cfg.decay_steps > 0:
        lr = keras.optimizers.schedules.ExponentialDecay(
            cfg.learning_rate, cfg.decay_steps, cfg.lr_decay_factor, staircase=True)
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(lr, momentum=cfg.momentum)
    else:
        opt = keras.optimizers.Adam(lr)
    if mixed:
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def current_lr(optimizer) -> float:
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    return float(np.asarray(lr))


class Devices(NamedTuple):
    gpus: int
    mixed_precision: bool
    xla: bool
    distribute: bool


def devices_for(cfg: TrainConfig) -> Devices:
    n = len(_gpus())

    def pick(value, default):
        return default if value is None else bool(value)

    return Devices(n, pick(cfg.mixed_precision, n > 0), pick(cfg.xla, n > 0),
                   pick(cfg.distribute, n > 1))


def build_model_and_optimizer(cfg: TrainConfig, dev: Devices):
    """The CPM of ``cfg`` (seeded) and its optimizer, built under the strategy's scope."""
    from cpm_nb import model as M
    from cpm_nb.runtime import import_keras

    keras = import_keras()
    tf = _tf()
    strategy = tf.distribute.MirroredStrategy() if dev.distribute else tf.distribute.get_strategy()
    previous = keras.config.dtype_policy()
    with strategy.scope():
        if dev.mixed_precision:
            keras.config.set_dtype_policy("mixed_float16")
        try:
            model = M.build_cpm(cfg.model_config(), seed=cfg.seed)
        finally:
            keras.config.set_dtype_policy(previous)
        optimizer = _make_optimizer(cfg, dev.mixed_precision)
        optimizer.build(model.trainable_variables)
    return model, optimizer, strategy


def make_train_step(model, optimizer, cfg: TrainConfig, strategy, dev: Devices):
    """The compiled step ``(images, joints, vis) -> [objective, data loss, MSE per stage]``."""
    from cpm_nb import heatmaps
    from cpm_nb.runtime import import_keras

    keras = import_keras()
    ops = keras.ops
    tf = _tf()
    kernels = [v for v in model.trainable_variables if "kernel" in v.path]
    replicas = strategy.num_replicas_in_sync
    scale = cfg.loss_scale

    def replica_step(images, joints, vis):
        targets = heatmaps.render(joints, vis, cfg.input_size, cfg.sigma)
        with tf.GradientTape() as tape:
            outputs = model(ops.cast(images, "float32"), training=True)
            mse = [ops.mean(ops.square(ops.cast(o, "float32") - targets)) for o in outputs]
            data = ops.sum(ops.stack(mse))
            l2 = ops.sum(ops.stack([ops.sum(ops.square(ops.cast(k, "float32")))
                                    for k in kernels]))
            objective = scale * data + 0.5 * cfg.weight_decay * l2
            scaled = objective / replicas
            if dev.mixed_precision:
                scaled = optimizer.scale_loss(scaled)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return ops.stack([objective, data, *mse])

    @tf.function(jit_compile=dev.xla, reduce_retracing=True)
    def step(images, joints, vis):
        per_replica = strategy.run(replica_step, args=(images, joints, vis))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    return step


def _scalar(tag: str, value: float) -> None:
    """A TensorBoard scalar (to the default writer, at its default step).

    ``tf.summary.scalar`` needs the ``tensorboard`` package; the core op with the
    scalar plugin's metadata writes the same event without it (viewing the logs
    needs ``pip install tensorboard``)."""
    tf = _tf()
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    tf.summary.write(tag, tf.constant(float(value), tf.float32),
                     metadata=meta.SerializeToString())


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    model: object
    out: Path
    step: int
    history: dict
    metrics: dict = field(default_factory=dict)
    wall_s: float = 0.0
    resumed_from: int = 0


def _empty_history(cfg: TrainConfig) -> dict:
    return {"step": [], "loss": [], "data_loss": [], "stage_mse": [], "lr": [],
            "val_step": [], "val_pckh": [], "val_per_stage": [], "wall_s": 0.0}


def _progress(total: int, initial: int, enabled: bool | None, desc: str):
    from cpm_nb.runtime import static_mode

    if enabled is None:
        enabled = not static_mode()
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)


class RunLocked(RuntimeError):
    """Another process is training into the same run folder."""


@contextlib.contextmanager
def run_lock(out, wait: bool = False):
    """Hold ``out/.lock`` (an advisory ``flock``) while training into ``out``: two processes
    never train the same run folder at once.  ``wait=False`` raises :class:`RunLocked` when
    another process holds it.  (No-op where ``fcntl`` is missing, i.e. on Windows.)"""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    Path(out).mkdir(parents=True, exist_ok=True)
    with open(Path(out) / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RunLocked(f"{out} is being trained by another process; wait for it to "
                            "finish (load_or_train waits by itself)") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def train(cfg: TrainConfig, out=None, resume: bool = True, progress: bool | None = None,
          verbose: bool = True, stop_after: int | None = None,
          checkpoint_on_stop: bool = True) -> TrainResult:
    """Train ``cfg`` into ``out`` (default: the cache folder of :func:`run_dir`).

    ``resume``: continue from ``out/checkpoint.npz`` when it exists (its configuration
    must match: :class:`ConfigMismatch` otherwise); ``False`` starts afresh.
    ``stop_after``: stop after that many steps of this call, with a checkpoint unless
    ``checkpoint_on_stop=False`` (which simulates a kill: only the cadence's checkpoints).
    Raises :class:`TrainingDiverged` on a NaN/Inf loss (the last good checkpoint stays),
    :class:`RunLocked` when another process is training into ``out``.
    """
    out = Path(out) if out is not None else run_dir(cfg)
    with run_lock(out):
        return _train(cfg, out, resume, progress, verbose, stop_after, checkpoint_on_stop)


def _train(cfg: TrainConfig, out: Path, resume: bool, progress: bool | None, verbose: bool,
           stop_after: int | None, checkpoint_on_stop: bool) -> TrainResult:
    from cpm_nb.runtime import import_keras, seed_everything

    keras = import_keras()
    tf = _tf()
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    dev = devices_for(cfg)
    folder = data_dir(cfg)
    model, optimizer, strategy = build_model_and_optimizer(cfg, dev)
    ckpt = out / CHECKPOINT
    for stale in out.glob(".*.tmp*"):  # left by a run killed while writing
        stale.unlink()
    history = _empty_history(cfg)
    start = 0
    if resume and ckpt.is_file():
        _, _, state = read_checkpoint(ckpt)
        if state.get("key") != cfg.key():
            raise ConfigMismatch(
                f"{ckpt} was written by a run with another configuration (key "
                f"{state.get('key')}, this run {cfg.key()}); use another --out or drop --resume")
        state = restore_checkpoint(ckpt, model, optimizer)
        start, history = int(state["step"]), state["history"]
        # (a loss-scale optimizer skips the updates whose float16 gradients overflowed, so
        # its counter may lag behind the step: only checked in full precision)
        if not dev.mixed_precision and int(np.asarray(optimizer.iterations)) != start:
            raise ConfigMismatch(f"{ckpt}: optimizer step {int(optimizer.iterations)} != "
                                 f"checkpoint step {start}")
    elif not resume:
        for stale in (ckpt, out / MODEL_FILE, out / CONFIG_FILE):
            if stale.exists():
                stale.unlink()
    (out / "train_config.json").write_text(json.dumps(
        {**dataclasses.asdict(cfg), "key": cfg.key()}, indent=1) + "\n")
    step_fn = make_train_step(model, optimizer, cfg, strategy, dev)
    ds = train_dataset(folder, cfg.batch_size, cfg.seed, start, cfg.augment)
    if dev.distribute:
        ds = strategy.experimental_distribute_dataset(ds)
    writer = tf.summary.create_file_writer(str(out / "logs"))
    log_every = max(1, cfg.steps // 500)
    end = cfg.steps if stop_after is None else min(cfg.steps, start + stop_after)
    bar = _progress(cfg.steps, start, progress, f"training {cfg.profile} ({cfg.stages} stages)")
    if verbose and start and bar is None:
        print(f"resuming {out} at step {start}", flush=True)
    t0 = time.perf_counter()
    wall0 = float(history.get("wall_s", 0.0))
    step = start
    last_val = history["val_pckh"][-1] if history["val_pckh"] else None
    acc = np.zeros(2 + cfg.stages)
    n_acc = 0

    def state_now():
        history["wall_s"] = wall0 + time.perf_counter() - t0
        return {"step": step, "key": cfg.key(), "config": dataclasses.asdict(cfg),
                "history": history, "seed": cfg.seed, "data_position": step * cfg.batch_size}

    def periodic_eval():
        nonlocal last_val
        scores = evaluate(model, folder, batch_size=max(cfg.batch_size, 32),
                          max_examples=cfg.eval_examples or None)
        last_val = scores["mean"]
        history["val_step"].append(step)
        history["val_pckh"].append(last_val)
        history["val_per_stage"].append(scores["per_stage"])
        with writer.as_default(step=step):
            _scalar("val/pckh@0.5", last_val or 0.0)
            for s, v in enumerate(scores["per_stage"], 1):
                _scalar(f"val/pckh@0.5_stage{s}", v or 0.0)
        return scores

    try:
        iterator = iter(ds)
        while step < end:
            images, joints, vis = next(iterator)
            values = np.asarray(step_fn(images, joints, vis), dtype=np.float64)
            if not np.all(np.isfinite(values)):
                good = read_checkpoint(ckpt)[2]["step"] if ckpt.is_file() else None
                kept = (f"the last good checkpoint (step {good}) is kept in {ckpt}"
                        if good is not None else "no checkpoint had been written yet")
                raise TrainingDiverged(
                    f"loss became {'NaN' if np.isnan(values).any() else 'infinite'} at step "
                    f"{step + 1} (stage MSEs {np.round(values[2:], 5).tolist()}); {kept}. "
                    "Lower the learning rate or check the data, then resume with --resume.")
            step += 1
            acc += values
            n_acc += 1
            if step % log_every == 0 or step == end:
                mean = acc / n_acc
                lr = current_lr(optimizer)
                history["step"].append(step)
                history["loss"].append(float(mean[0]))
                history["data_loss"].append(float(mean[1]))
                history["stage_mse"].append([float(v) for v in mean[2:]])
                history["lr"].append(lr)
                with writer.as_default(step=step):
                    _scalar("train/objective", mean[0])
                    _scalar("train/data_loss", mean[1])
                    for s, v in enumerate(mean[2:], 1):
                        _scalar(f"train/mse_stage{s}", v)
                    _scalar("train/learning_rate", lr)
                acc[:] = 0
                n_acc = 0
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                periodic_eval()
            if step % cfg.checkpoint_every == 0 or (
                    step == end and (checkpoint_on_stop or step >= cfg.steps)):
                save_checkpoint(ckpt, model, optimizer, state_now())
                atomic_write_json(out / HISTORY, history)
            if bar is not None:
                post = {"loss": f"{values[1]:.4f}"}
                if last_val is not None:
                    post["val PCKh@0.5"] = f"{last_val:.1f}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        writer.flush()
    result = TrainResult(model, out, step, history, wall_s=wall0 + time.perf_counter() - t0,
                         resumed_from=start)
    if step >= cfg.steps:
        scores = periodic_eval()
        history["wall_s"] = result.wall_s
        save_checkpoint(ckpt, model, optimizer, state_now())
        atomic_write_json(out / HISTORY, history)
        result.metrics = scores
        export(out, model, cfg, scores, history)
        if verbose:
            print(f"trained {cfg.run_name}: {step} steps in {result.wall_s:.0f} s, validation "
                  f"PCKh@0.5 {scores['mean']:.1f} % (per stage: "
                  f"{', '.join(f'{v:.1f}' for v in scores['per_stage'] if v is not None)})",
                  flush=True)
    del keras
    return result


def export(out, model, cfg: TrainConfig, scores: dict, history: dict) -> dict:
    """Write ``model.keras`` and ``cpm_config.json`` (atomically) for inference."""
    from cpm_nb import model as M
    from cpm_nb.runtime import versions

    out = Path(out)
    mcfg = M.config_of(model)
    meta = {
        "format": "cpm-nb-model",
        "version": 1,
        "model_file": MODEL_FILE,
        "cpm_config": dataclasses.asdict(mcfg),
        "joints": list(skeleton.JOINT_NAMES),
        "joint_short_names": list(skeleton.SHORT_NAMES),
        "input_size": mcfg.input_size,
        "map_size": mcfg.map_size,
        "stride": _config.OUTPUT_STRIDE,
        "stages": mcfg.stages,
        "outputs": mcfg.output_names,
        "input": "RGB uint8/float32 0..255, [B, S, S, 3], person centred, 200*scale px = "
                 f"{1.171 * 200 / 368:.3f} x S (see cpm_nb.preprocess)",
        "normalisation": "inside the model: layer 'normalize' computes x / 256 - 0.5",
        "sigma": cfg.sigma,
        "training": {**dataclasses.asdict(cfg), "key": cfg.key(), "loss_scale": cfg.loss_scale},
        "profile": cfg.profile,
        "data": cfg.data,
        "steps": cfg.steps,
        "wall_s": round(float(history.get("wall_s", 0.0)), 1),
        "metrics": scores,
        "versions": versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = out / f".{MODEL_FILE}.tmp.keras"
    model.save(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out / MODEL_FILE)
    atomic_write_json(out / CONFIG_FILE, meta)
    return meta


# --- cache ----------------------------------------------------------------------------------


class Trained(NamedTuple):
    """A trained model, its ``cpm_config.json`` metadata and its run folder."""

    model: object
    meta: dict
    run_dir: Path


def run_dir(cfg: TrainConfig, cache_dir=None) -> Path:
    return Path(cache_dir or default_runs_dir()) / cfg.run_name


def load_model(folder):
    """Load ``folder/model.keras`` (safe mode) and its metadata as :class:`Trained`."""
    from cpm_nb.runtime import import_keras

    keras = import_keras()
    folder = Path(folder)
    if not (folder / MODEL_FILE).is_file():
        raise FileNotFoundError(f"no {MODEL_FILE} in {folder}: train first (`cpm-nb train`)")
    model = keras.saving.load_model(folder / MODEL_FILE, safe_mode=True)
    meta = json.loads((folder / CONFIG_FILE).read_text())
    return Trained(model, meta, folder)


def cached(cfg: TrainConfig, cache_dir=None) -> Path | None:
    """The run folder of a finished run of ``cfg`` in the cache, if there is one."""
    folder = run_dir(cfg, cache_dir)
    try:
        meta = json.loads((folder / CONFIG_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if meta.get("training", {}).get("key") == cfg.key() and (folder / MODEL_FILE).is_file():
        return folder
    return None


def load_or_train(profile: str | _config.Profile | None = None, cache_dir=None,
                  progress: bool | None = None, verbose: bool = True, **overrides) -> Trained:
    """The trained model of ``profile`` (default: the active one), trained at most once.

    The run lives in ``<cache_dir>/<profile>-<stages>st-<data>-<config hash>/``
    (:func:`default_runs_dir`); while the configuration matches, later calls load it
    (a second) instead of training.  An interrupted run is resumed from its checkpoint.
    ``overrides``: :class:`TrainConfig` fields, e.g. ``stages=6``.
    Returns :class:`Trained` ``(model, meta, run_dir)``.
    """
    cfg = train_config(profile, **overrides)
    folder = cached(cfg, cache_dir)
    if folder is None:
        folder = run_dir(cfg, cache_dir)
        try:
            train(cfg, folder, resume=True, progress=progress, verbose=verbose)
        except RunLocked:
            if verbose:
                print(f"another process is training {folder.name}: waiting for it", flush=True)
            with run_lock(folder, wait=True):
                pass
            if cached(cfg, cache_dir) is None:  # it stopped early: resume its checkpoint
                train(cfg, folder, resume=True, progress=progress, verbose=verbose)
    elif verbose:
        print(f"loaded the cached run {folder.name} (delete the folder to retrain)")
    return load_model(folder)


# --- the source article's experiment: 2 versus 6 stages on the same budget ---------------------

# Steps of each run of the experiment (same data, batch, input size and steps for both).
EXPERIMENT_STEPS = {"fast": 20, "cpu": 1000, "gpu": 30000}
EXPERIMENT_STAGES = (2, 6)


def stage_experiment(profile: str | _config.Profile | None = None, stages=EXPERIMENT_STAGES,
                     steps: int | None = None, cache_dir=None, progress: bool | None = None,
                     verbose: bool = True) -> dict:
    """Train the profile's network with each number of ``stages`` on the same budget
    (cached like :func:`load_or_train`) and return ``{stages: Trained}``."""
    profile = _config.get_profile() if profile is None else profile
    name = profile if isinstance(profile, str) else profile.name
    steps = steps or EXPERIMENT_STEPS.get(name, 1000)
    return {n: load_or_train(profile, cache_dir=cache_dir, progress=progress, verbose=verbose,
                             stages=n, steps=steps, eval_every=max(steps // 4, 1))
            for n in stages}


def experiment_table(runs: dict) -> list[dict]:
    """One row per run: PCKh@0.5 overall, on the hard subsets, per stage, wall time."""
    rows = []
    for n, trained in runs.items():
        m = trained.meta["metrics"]
        rows.append({"stages": n, "params": int(trained.model.count_params()),
                     "steps": trained.meta["steps"], "pckh": m["mean"],
                     "occluded_joints": m["hard"]["occluded_joints"],
                     "with_distractors": m["hard"]["with_distractors"],
                     "article_25px": m["article_25px"], "per_stage": m["per_stage"],
                     "train_s": trained.meta["wall_s"]})
    return rows


def format_experiment(rows: list[dict]) -> str:
    head = (f"{'stages':>6} {'params':>10} {'steps':>6} {'PCKh@0.5':>9} {'occluded':>9} "
            f"{'distract.':>9} {'25 px':>7} {'train s':>8}  per-stage PCKh@0.5")
    lines = [head]
    for r in rows:
        lines.append(f"{r['stages']:>6} {r['params']:>10,} {r['steps']:>6} {_fmt(r['pckh']):>9} "
                     f"{_fmt(r['occluded_joints']):>9} {_fmt(r['with_distractors']):>9} "
                     f"{_fmt(r['article_25px']):>7} {r['train_s']:>8.0f}  "
                     + " -> ".join(_fmt(v) for v in r["per_stage"]))
    return "\n".join(lines)


# --- plots -----------------------------------------------------------------------------------


def plot_history(history: dict, axes, title: str = "") -> None:
    """Learning curves on two axes: MSE per stage (log scale) and validation PCKh@0.5."""
    steps = np.asarray(history["step"])
    mse = np.asarray(history["stage_mse"])
    ax = axes[0]
    for s in range(mse.shape[1]):
        ax.plot(steps, mse[:, s], label=f"stage {s + 1}", lw=1.2)
    ax.set(yscale="log", xlabel="training step", ylabel="MSE to the target maps",
           title=f"Training loss per stage{title}")
    ax.legend(fontsize=8)
    ax = axes[1]
    if history["val_step"]:
        per = np.asarray([[np.nan if v is None else v for v in row]
                          for row in history["val_per_stage"]])
        for s in range(per.shape[1]):
            ax.plot(history["val_step"], per[:, s], "o-", ms=3, lw=1,
                    label=f"stage {s + 1}")
        ax.legend(fontsize=8)
    ax.set(xlabel="training step", ylabel="PCKh@0.5 (%)", ylim=(0, 100),
           xlim=(0, steps[-1] * 1.03), title=f"Validation PCKh@0.5{title}")


def validation_examples(folder, n: int = 4) -> tuple:
    """The first ``n`` unaugmented validation crops: (images, joints, visibility)."""
    from cpm_nb import pipeline

    ds = pipeline.make_dataset(folder, "val", batch_size=n, augment=False, shuffle=False,
                               repeat=False, deterministic=True)
    return next(ds.as_numpy_iterator())


def show_predictions(model, images, joints, visibility, axes, stage: int = -1) -> None:
    """Crops with the predicted skeleton (solid) and the ground truth (faint)."""
    from cpm_nb import heatmaps
    from cpm_nb import model as M
    from cpm_nb.viz import draw_skeleton

    cfg = M.config_of(model)
    maps = predict_fn(model)(images)[stage][..., : cfg.num_joints]
    pred, _ = heatmaps.decode(maps)
    for ax, im, p, j, v in zip(axes, images, pred, joints, visibility):
        ax.imshow(im)
        draw_skeleton(ax, j, v > 0, linewidth=1, markersize=2, alpha=0.35)
        draw_skeleton(ax, p, v > 0, linewidth=1.5, markersize=3)
        ax.set(xticks=[], yticks=[])


# --- CLI ------------------------------------------------------------------------------------


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", choices=("synthetic", "mpii"), default="synthetic",
                        help="training data (default: the embedded synthetic set)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="TFRecord folder (data mpii: the output of `cpm-nb prepare mpii`)")
    parser.add_argument("--out", metavar="DIR",
                        help="run folder: checkpoints, logs, model.keras (default: the cache "
                             "folder that load_or_train uses, see $CPM_NB_RUNS)")
    parser.add_argument("--stages", type=int, help="CPM stages (default: the profile's)")
    parser.add_argument("--steps", type=int, help="training steps (default: the profile's)")
    parser.add_argument("--batch-size", type=int, help="batch size (default: the profile's)")
    parser.add_argument("--lr", type=float, dest="learning_rate", help="base learning rate")
    parser.add_argument("--optimizer", choices=("adam", "sgd"))
    parser.add_argument("--seed", type=int)
    parser.add_argument("--checkpoint-every", type=int, metavar="N",
                        help="write a checkpoint every N steps")
    parser.add_argument("--eval-every", type=int, metavar="N",
                        help="validation PCKh every N steps (0: at the end only)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoint.npz (same configuration required); "
                             "without it an existing checkpoint in OUT is an error")
    parser.add_argument("--stop-after", type=int, metavar="N",
                        help="stop after N steps of this call (with a checkpoint)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_option(parser, "the final metrics")


def _train_run(args: argparse.Namespace) -> int:
    try:
        cfg = train_config(None, data=args.data, data_dir=args.data_dir, stages=args.stages,
                           steps=args.steps, batch_size=args.batch_size,
                           learning_rate=args.learning_rate, optimizer=args.optimizer,
                           seed=args.seed, checkpoint_every=args.checkpoint_every,
                           eval_every=args.eval_every)
    except ValueError as err:
        raise CliError(str(err)) from None
    out = Path(args.out) if args.out else run_dir(cfg)
    if (out / CHECKPOINT).is_file() and not args.resume:
        raise CliError(f"{out / CHECKPOINT} exists: add --resume to continue that run, or "
                       "choose another --out")
    try:
        result = train(cfg, out, resume=args.resume, progress=not args.no_progress,
                       stop_after=args.stop_after)
    except (TrainingDiverged, ConfigMismatch, RunLocked) as err:
        raise CliError(str(err)) from None
    if args.json and result.metrics:
        from cpm_nb.cli import print_json

        print_json(result.metrics, args.json)
    elif not result.metrics:
        print(f"stopped at step {result.step} of {cfg.steps}; continue with --resume")
    return 0


TRAIN = Command(
    name="train",
    help="train a CPM (intermediate supervision) with resumable checkpoints",
    add_arguments=_train_arguments,
    run=_train_run,
    description="""\
Train a Convolutional Pose Machine with a loss on every stage.  Sizes come from the
profile (--profile / $CPM_NB_PROFILE); checkpoints are written atomically every
--checkpoint-every steps to OUT/checkpoint.npz, so a run that was killed (Colab
disconnect, Ctrl-C, SIGKILL) continues with --resume from its last checkpoint, with
the same step counter, optimizer state, learning-rate schedule and data order.
At the end: OUT/model.keras, OUT/cpm_config.json, OUT/history.json, OUT/logs/
(TensorBoard: tensorboard --logdir OUT/logs).

examples:
  cpm-nb --profile fast train --out /tmp/cpm-fast          seconds: the loss falls
  cpm-nb --profile cpu train --out runs/cpu                minutes on a laptop CPU
  cpm-nb --profile cpu train --out runs/cpu --resume       continue after an interruption
  cpm-nb --profile cpu train --stages 6 --steps 500 --out runs/cpu6
  cpm-nb --profile gpu train --data mpii --data-dir /content/mpii/tfrecords-368 \\
         --out /content/drive/MyDrive/cpm_nb/gpu --resume  the paper configuration on Colab""",
)


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="a run folder holding model.keras and cpm_config.json")
    parser.add_argument("--data", choices=("synthetic", "mpii"), default=None,
                        help="evaluation data (default: what the model was trained on)")
    parser.add_argument("--data-dir", metavar="DIR", help="TFRecord folder with a val split")
    parser.add_argument("--split", default="val", help="TFRecord split (default: val)")
    parser.add_argument("--max-examples", type=int, metavar="N", help="score the first N people")
    add_json_option(parser, "the scores")


def _evaluate_run(args: argparse.Namespace) -> int:
    from cpm_nb import metrics

    try:
        trained = load_model(args.model)
    except FileNotFoundError as err:
        raise CliError(str(err)) from None
    training = dict(trained.meta.get("training", {}))
    training.pop("key", None)
    training.pop("loss_scale", None)
    cfg = TrainConfig(**training) if training else train_config()
    if args.data:
        cfg = cfg.replace(data=args.data, data_dir=args.data_dir)
    elif args.data_dir:
        cfg = cfg.replace(data_dir=args.data_dir)
    scores = evaluate(trained.model, data_dir(cfg), split=args.split,
                      max_examples=args.max_examples)
    if args.json != "-":
        print(f"{scores['n_examples']} people ({cfg.data}, split {args.split}); model "
              f"{Path(args.model).name}: {trained.meta.get('stages')} stages, "
              f"{trained.meta.get('input_size')} px")
        table = metrics.PCKhResult  # the table layout of evaluate-mpii
        rows = [*scores["pckh"].items(), ("Mean", scores["mean"]),
                ("Mean@0.1", scores["mean_at_0.1"])]
        print(f"{'':<10}" + "".join(f"{k:>10}" for k, _ in rows))
        print(f"{'PCKh@0.5':<10}" + "".join(f"{_fmt(v):>10}" for _, v in rows))
        print(f"article 25-px metric: {_fmt(scores['article_25px'])} %   per stage PCKh@0.5: "
              + ", ".join(_fmt(v) for v in scores["per_stage"]))
        print("hard subsets PCKh@0.5: " + ", ".join(
            f"{k} {_fmt(v)} ({scores['hard_counts'][k]} joints)"
            for k, v in scores["hard"].items()))
        del table
    if args.json:
        from cpm_nb.cli import print_json

        print_json(scores, args.json)
        if args.json != "-":
            print(f"wrote {args.json}")
    return 0


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.2f}"


EVALUATE = Command(
    name="evaluate",
    help="score a trained model: PCKh table, the article's 25-px metric, per stage, hard subsets",
    add_arguments=_evaluate_arguments,
    run=_evaluate_run,
    description="""\
Predict on the unaugmented validation people, decode the belief maps, map the joints
back to original-image pixels and score them with the official MPII PCKh (the keys
of `cpm-nb evaluate-mpii --json`: pckh, mean, mean_at_0.1, per_joint), plus the
source article's 25-px metric, PCKh@0.5 per stage and on the hard subsets
(occluded joints, people with distractors in the image).

examples:
  cpm-nb evaluate --model runs/cpu
  cpm-nb evaluate --model runs/cpu --json scores.json
  cpm-nb evaluate --model /content/drive/MyDrive/cpm_nb/gpu --data mpii \\
                  --data-dir /content/mpii/tfrecords-368""",
)


# --- benchmark: python -m cpm_nb.bench train -------------------------------------------------


def _random_batch(cfg: TrainConfig, seed: int):
    """A batch of random images and joints of ``cfg``'s sizes (for timing only)."""
    tf = _tf()
    rng = np.random.default_rng(seed)
    s, b = cfg.input_size, cfg.batch_size
    return (tf.constant(rng.integers(0, 256, (b, s, s, 3), dtype=np.uint8)),
            tf.constant(rng.uniform(0, s - 1, (b, 16, 2)).astype(np.float32)),
            tf.constant(np.full((b, 16), 2, np.int32)))


# Dense peak TFLOP/s (datasheets): (float16 tensor cores, float32 without TF32), by name part.
GPU_PEAK_TFLOPS = {"H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5),
                   "L4": (121.0, 30.3), "V100": (125.0, 15.7), "T4": (65.0, 8.1)}


def gpu_peak(name: str) -> tuple[float, float] | None:
    """(float16, float32) peak TFLOP/s of a GPU model named in ``name``, if known."""
    for key, peak in GPU_PEAK_TFLOPS.items():
        if key.lower() in name.lower():
            return peak
    return None


def bench_train(args) -> dict:
    """Training examples/s per profile (fast, cpu, and gpu when a GPU is visible).

    Ours: the compiled train step fed by the tf.data pipeline (what :func:`train`
    runs).  Baseline, same run: the same model and loss in eager mode (no
    ``tf.function``), fed with the same batches.  On a GPU the paper configuration
    is also timed with and without mixed precision / XLA, with the FLOP/s reached
    (3 x forward FLOPs per example for forward + backward).
    """
    from cpm_nb import bench
    from cpm_nb import model as M

    _tf()
    quick = getattr(args, "quick", False)
    load = os.getloadavg()[0]
    gpus = _gpus()
    n_gpus = len(gpus)
    gpu_name = ""
    if gpus:
        tf = _tf()
        gpu_name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "")
    peak = gpu_peak(gpu_name) if gpu_name else None
    profiles = ["fast", "cpu"] + (["gpu"] if n_gpus else [])
    results: dict = {"gpus": n_gpus, "gpu_name": gpu_name, "gpu_peak_tflops": peak,
                     "load_average_1min_before": load, "quick": quick, "profiles": {}}
    rows = [("machine", f"{os.cpu_count()} CPUs, {n_gpus} GPUs; 1-min load average "
                        f"{load:.2f} before the run (shared cores)")]
    steps = 3 if quick else 10
    for name in profiles:
        cfg = train_config(name)
        variants = {"compiled": {}, "eager (baseline)": {"eager": True}}
        if n_gpus and name == "gpu":
            variants = {"fp32": dict(mixed_precision=False, xla=False),
                        "mixed": dict(mixed_precision=True, xla=False),
                        "XLA": dict(mixed_precision=False, xla=True),
                        "mixed+XLA": dict(mixed_precision=True, xla=True)}
        # the gpu profile's synthetic set (20,000 368-px images) is not generated for a
        # benchmark: its steps are timed on random batches, which cost the same
        folder = data_dir(cfg) if name != "gpu" else None
        flops = 3 * M.flops_per_image(cfg.model_config())
        per = {}
        for label, opts in variants.items():
            eager = opts.pop("eager", False)
            c = cfg.replace(**opts)
            dev = devices_for(c)
            model, optimizer, strategy = build_model_and_optimizer(c, dev)
            fn = make_train_step(model, optimizer, c, strategy, dev)
            if eager:
                fn = fn.python_function
            if folder is not None:
                batches = iter(train_dataset(folder, c.batch_size, c.seed, 0, c.augment))
                data = [next(batches) for _ in range(2)]
            else:
                data = [_random_batch(c, k) for k in range(2)]
            k = [0]

            def call(fn=fn, data=data, k=k):
                k[0] += 1
                return np.asarray(fn(*data[k[0] % 2]))

            t0 = time.perf_counter()
            call()
            first = time.perf_counter() - t0
            n = 2 if eager and name != "fast" else steps
            timing = bench.timeit(call, items=c.batch_size, warmup=1, repeat=n, min_time=0.0)
            timing["first_call_s"] = first
            timing["tflops_per_s"] = timing["per_s"] * flops / 1e12
            if peak and name == "gpu":
                timing["fraction_of_peak"] = timing["tflops_per_s"] / peak[
                    0 if dev.mixed_precision else 1]
            per[label] = timing
        if folder is not None:
            ds = iter(train_dataset(folder, cfg.batch_size, cfg.seed, 0, cfg.augment))
            pipe = bench.timeit(lambda ds=ds: next(ds), items=cfg.batch_size, warmup=2,
                                repeat=steps, min_time=0.0)
            per["input pipeline only"] = pipe
        results["profiles"][name] = {"config": dataclasses.asdict(cfg), "variants": per,
                                     "flops_per_example": flops}
        base = per.get("eager (baseline)", per.get("fp32"))
        for label, t in per.items():
            ratio = "(baseline)" if t is base else f"{t['per_s'] / base['per_s']:.2f}x"
            if label == "input pipeline only":
                ratio = "(feeds)"
            rows.append((f"{name:<4} {label}", f"{t['per_s']:8.1f} examples/s  {ratio:<10}"
                         + (f" {t.get('tflops_per_s', 0) * 1e3:8.1f} GFLOP/s"
                            if "tflops_per_s" in t else "")
                         + (f" = {t['fraction_of_peak']:.1%} of {gpu_name}'s peak"
                            if "fraction_of_peak" in t else "")))
    if not n_gpus:
        rows.append(("gpu", "no GPU visible: mixed precision / XLA not measured"))
    results["load_average_1min_after"] = os.getloadavg()[0]
    bench.print_table("train: examples/s of the compiled step vs eager (baseline)", rows)
    return results


if __name__ == "__main__":  # pragma: no cover
    sys.exit(0)
