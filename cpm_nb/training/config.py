"""What a training run is: its configuration, optimizer, schedule, precision and devices.

A :class:`TrainConfig` holds the model's :class:`~cpm_nb.model.architecture.CPMConfig`,
the synthetic set it trains on (:class:`~cpm_nb.data.synthetic_set.SyntheticSpec`) and
every training setting; its :meth:`~TrainConfig.key` (a hash of everything that changes
the trained weights) names the run's cache folder.  :func:`train_config` builds one from a
resolved profile (:mod:`cpm_nb.core.config`: sizes) and :data:`TRAINING` (the optimizer and
schedule of each profile): it is where configuration flows down from, once.

Optimizers and schedules per profile
------------------------------------
* ``gpu`` on real MPII -- the released solver: SGD with momentum 0.9, base lr 8e-5, step
  decay x0.333 every 136,106 iterations (the release's genProto.py), weight decay 5e-4,
  batch 16, 320,000 iterations, the trunk initialised from ImageNet VGG-19 as in the
  paper.  On the synthetic set (:data:`GPU_SYNTHETIC`): Adam at 1e-3 x sqrt(batch / 16)
  after a 300-step warm-up, x0.1 at 90 % of :data:`SYNTHETIC_GPU_STEPS` (about 30 minutes
  on a Colab T4), from random weights.
* ``cpu`` -- Adam, lr 3e-3 after a 100-step linear warm-up, x0.1 for the last fifth of
  6,000 steps, weight decay 5e-4, on the stage experiment's network with 2 stages:
  PCKh@0.5 >= 90 on the synthetic validation set in under 10 minutes on 2 CPU cores with
  bf16 (README, "Results").
* ``fast`` -- Adam with a short warm-up and a cosine decay: a smoke run.

Precision and devices (``precision=None``, ``xla=None``, ``distribute=None``: automatic)
-------------------------------------------------------------------------------------
* on a CUDA GPU of compute capability >= 8.0 (A100, L4, H100) ``mixed_bfloat16``,
  on older GPUs (T4, V100) ``mixed_float16`` (Keras wraps the optimizer in a
  ``LossScaleOptimizer``); on a CPU with bf16 instructions (AMX-BF16 or AVX512-BF16,
  TensorFlow backend) ``mixed_bfloat16``, on other CPUs ``float32`` (bf16 without them is
  emulated: slower than float32);
* XLA (``jit_compile``) on a GPU; on JAX every step is compiled anyway;
* several GPUs: ``tf.distribute.MirroredStrategy`` on TensorFlow,
  ``keras.distribution.DataParallel`` on JAX.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import sys
from dataclasses import dataclass
from typing import NamedTuple

from cpm_nb.core import config as _config
from cpm_nb.core.errors import ConfigError
from cpm_nb.data.synthetic_set import SyntheticSpec
from cpm_nb.model import architecture

TRAIN_VERSION = 2  # bump when a change to the loop invalidates cached runs
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("constant", "step", "cosine")
SUPERVISION = ("all", "last")
INITS = ("random", "imagenet")

# The gpu profile's schedule on the synthetic set.  Measured on an H100 (shared/device
# README): the 368-px 6-stage net trains at ~650 images/s in bf16; a Colab T4 has
# 65 fp16 TFLOP/s of tensor-core peak against ~790 bf16 on the H100, so at the same
# utilisation ~55 images/s, or ~3.4 steps/s at batch 16: 6,000 steps ~ 30 minutes.
SYNTHETIC_GPU_STEPS = 6000
RELEASE_STEP_SIZE = 136_106  # the released solver's lr step (its genProto.py)

# Training settings per profile (everything that is not a size: sizes live in config.py).
TRAINING: dict[str, dict] = {
    "fast": dict(optimizer="adam", schedule="cosine", warmup_steps=2, weight_decay=5e-4,
                 checkpoint_every=10, eval_every=0),
    "cpu": dict(optimizer="adam", schedule="step", warmup_steps=100, decay_at=0.8,
                lr_decay_factor=0.1, weight_decay=5e-4, checkpoint_every=100, eval_every=1000),
    # real MPII: the released model's solver (SGD, momentum 0.9, base lr 8e-5 from the
    # profile, x0.333 every 136,106 iterations: the release's genProto.py; it trained
    # 320,000 iterations, pose_iter_320000.caffemodel) from an ImageNet VGG-19 trunk
    "gpu": dict(optimizer="sgd", schedule="step", lr_decay_steps=RELEASE_STEP_SIZE,
                lr_decay_factor=0.333, weight_decay=5e-4, checkpoint_every=1000,
                eval_every=10000, init="imagenet"),
}
# The gpu profile on the synthetic set: the paper's SGD at 8e-5 from random weights barely
# moves in a synthetic budget (the cpu network: 27.3 PCKh@0.5 after 600 steps against 54.1
# with Adam), so it trains like the cpu profile -- Adam after a warm-up, x0.1 late -- with
# the learning rate scaled to the batch (sqrt(batch / 16) x 1e-3) and no decay before 90 %.
GPU_SYNTHETIC = dict(optimizer="adam", schedule="step", warmup_steps=300, decay_at=0.9,
                     lr_decay_factor=0.1, weight_decay=5e-4, checkpoint_every=500,
                     eval_every=1000, init="random")
GPU_SYNTHETIC_LR = 1e-3  # Adam's peak at batch 16


# What every run had before the synthetic set was a field of its own: these values are
# hashed only when a set differs from them, so the runs of earlier versions keep their keys.
LEGACY_SYNTHETIC = {"seed": 0, "generator_version": 2}


class ConfigMismatch(ConfigError):
    """A checkpoint, model or data set made for another configuration."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and hence its cache key).

    ``model``: the network.  ``synthetic``: the synthetic set of the run's profile (what
    ``data="synthetic"`` trains on, and what a run trained on MPII is evaluated on with
    ``--data synthetic``); ``data_dir``, when given, is a prepared folder used instead.
    ``schedule``: ``constant``; ``step`` (x``lr_decay_factor``
    every ``lr_decay_steps``); ``cosine`` (to 1 % of the peak at the last step), each
    after ``warmup_steps`` of linear warm-up.  ``checkpoint_every``: steps between
    checkpoints, which is also the interval of the history and the logs; ``eval_every``
    (a multiple of it, 0 = only at the end): validation PCKh during training.
    """

    model: architecture.CPMConfig
    profile: str = "custom"
    data: str = "synthetic"  # synthetic | mpii
    data_dir: str | None = None  # prepared TFRecord folder (required for data="mpii")
    synthetic: SyntheticSpec | None = None  # the profile's synthetic set
    sigma: float = 5.0  # target Gaussian, input px
    batch_size: int = 16
    steps: int = 1000
    seed: int = 0
    optimizer: str = "adam"  # adam | sgd
    learning_rate: float = 1e-3
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    lr_decay_steps: int = 0
    lr_decay_factor: float = 0.1
    weight_decay: float = 5e-4
    augment: bool = True
    # all: every stage's loss (the paper's intermediate supervision); last: the last stage's
    # only (the earlier heads train nothing: an attribution ablation, cpm_nb.training.ablations)
    supervision: str = "all"
    checkpoint_every: int = 100
    eval_every: int = 0
    eval_examples: int = 0  # validation people of the periodic check (0: all)
    init: str = "random"  # random | imagenet: the trunk from VGG-19 (cpm_nb.model.imagenet)
    precision: str | None = None  # None: automatic (see the module docstring)
    xla: bool | None = None
    distribute: bool | None = None

    def __post_init__(self):
        def need(ok, message):
            if not ok:
                raise ConfigError(message)

        need(self.data in ("synthetic", "mpii"), f"data must be synthetic or mpii, not "
                                                 f"{self.data!r}")
        need(self.optimizer in ("adam", "sgd"), f"optimizer must be adam or sgd, not "
                                                f"{self.optimizer!r}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}")
        need(self.supervision in SUPERVISION,
             f"supervision must be one of {', '.join(SUPERVISION)}, not {self.supervision!r}")
        need(self.init in INITS, f"init must be one of {', '.join(INITS)}, not {self.init!r}")
        need(self.precision in (None, *PRECISIONS),
             f"precision must be one of {', '.join(PRECISIONS)} (or None: automatic)")
        for name in ("steps", "batch_size", "checkpoint_every", "seed", "warmup_steps",
                     "eval_every", "eval_examples", "lr_decay_steps"):
            value = getattr(self, name)
            need(isinstance(value, numbers.Integral) and not isinstance(value, bool),
                 f"{name} must be an integer, got {value!r}")
        for name in ("momentum", "lr_decay_factor", "weight_decay"):  # NaN fails `>= 0`
            need(getattr(self, name) >= 0 and math.isfinite(getattr(self, name)),
                 f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        for name in ("steps", "batch_size", "checkpoint_every"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "eval_examples", "lr_decay_steps"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        need(self.learning_rate > 0 and math.isfinite(self.learning_rate),
             f"learning rate must be a positive number, got {self.learning_rate}")
        need(self.sigma > 0 and math.isfinite(self.sigma), f"sigma must be a finite number "
             f"> 0, got {self.sigma}")
        need(self.eval_every % self.checkpoint_every == 0,
             f"eval_every ({self.eval_every}) must be a multiple of checkpoint_every "
             f"({self.checkpoint_every})")
        need(self.data != "synthetic" or self.synthetic is not None or self.data_dir,
             "synthetic training needs its set (synthetic=SyntheticSpec(...)) or a prepared "
             "folder (data_dir)")
        need(self.synthetic is None or self.synthetic.input_size == self.input_size,
             f"the synthetic set's crops ({self.synthetic and self.synthetic.input_size} px) "
             f"must be the model's input ({self.input_size} px)")

    @property
    def input_size(self) -> int:
        return self.model.input_size

    @property
    def stages(self) -> int:
        return self.model.stages

    @property
    def map_size(self) -> int:
        return self.model.map_size

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    # Fields that do not change the trained weights (bookkeeping only).
    _NOT_HASHED = ("eval_every", "eval_examples", "distribute")

    def key(self) -> str:
        """A hash of every field that changes the result (and of the loop's version)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items()
                  if k not in self._NOT_HASHED and k != "synthetic"}
        # fields added after runs were first cached enter the key only when they differ
        # from the default every earlier run had, so those runs keep their keys
        for name in architecture.VARIANT_DEFAULTS:
            if name not in self.model.variant_fields():
                del fields["model"][name]
        if fields["supervision"] == "all":
            del fields["supervision"]
        if fields["init"] == "random":  # the default, which runs hashed before it was a field
            del fields["init"]
        if fields["precision"] == "float32":  # pinned float32 is what automatic was on a
            fields["precision"] = None  # CPU when runs were first cached (kept their keys)
        fields.update(self._synthetic_key())
        fields["train_version"] = TRAIN_VERSION
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def _synthetic_key(self) -> dict:
        """The synthetic set's part of the key, in the fields runs hashed before the set was
        a field of its own (its sizes; its name was the profile's, its seed and generator
        version :data:`LEGACY_SYNTHETIC`), plus what differs from that."""
        spec = self.synthetic
        if spec is None:
            return {"n_train": 0, "n_val": 0}
        out = {"n_train": spec.n_train, "n_val": spec.n_val}
        if spec.name != self.profile:
            out["data_name"] = spec.name
        for field, legacy in LEGACY_SYNTHETIC.items():
            if getattr(spec, field) != legacy:
                out[f"data_{field}"] = getattr(spec, field)
        return out

    @property
    def run_name(self) -> str:
        return f"{self.profile}-{self.stages}st-{self.data}-{self.key()}"

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "key": self.key()}

    @classmethod
    def from_json(cls, data: dict) -> TrainConfig:
        """The inverse of :meth:`to_json` (unknown keys are ignored).  A configuration written
        before the synthetic set was a field of its own (``n_train`` and ``n_val`` at the top)
        gets the set it used: the profile's name, the model's crop size, seed 0."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["model"] = architecture.CPMConfig.from_dict(values["model"])
        spec = values.get("synthetic")
        if isinstance(spec, dict):
            values["synthetic"] = SyntheticSpec(**spec)
        elif "synthetic" not in data and data.get("n_train"):
            values["synthetic"] = SyntheticSpec(
                name=values.get("profile", "custom"), input_size=values["model"].input_size,
                n_train=data["n_train"], n_val=data["n_val"])
        return cls(**values)


MODEL_OVERRIDES = ("input_size", "stages", "width")
SYNTHETIC_OVERRIDES = {"n_train": "n_train", "n_val": "n_val", "data_seed": "seed"}


def train_config(profile: _config.Profile, **overrides) -> TrainConfig:
    """The training configuration of ``profile`` (a resolved
    :class:`~cpm_nb.core.config.Profile`) with ``overrides``.

    Sizes come from the profile (:mod:`cpm_nb.core.config`), the optimizer settings from
    :data:`TRAINING`, the synthetic set is the profile's (its seed: runs with other training
    seeds see the same people).  ``overrides`` are :class:`TrainConfig` fields, the model's
    ``input_size``, ``stages`` and ``width``, or the synthetic set's ``n_train``, ``n_val``
    and ``data_seed``; ``None`` values are ignored (so CLI options pass straight through).
    """
    if not isinstance(profile, _config.Profile):
        raise ConfigError(f"train_config needs a resolved run profile, not {profile!r}: pass "
                          "cpm_nb.core.config.get_profile() (the active one) or "
                          "resolve_profile(name)")
    if profile.name not in TRAINING:
        raise ConfigError(f"no training settings for the profile {profile.name!r} (known: "
                          f"{', '.join(TRAINING)}); give a profile of those, with other sizes "
                          "if need be (profile.replace(...))")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    model_changes = {k: overrides.pop(k) for k in MODEL_OVERRIDES if k in overrides}
    data_changes = {field: overrides.pop(k) for k, field in SYNTHETIC_OVERRIDES.items()
                    if k in overrides}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise TypeError(f"unknown training settings: {', '.join(sorted(unknown))}")
    model = overrides.pop("model", None)
    model = (model.replace(**model_changes) if model
             else architecture.from_profile(profile, **model_changes))
    synthetic = SyntheticSpec.from_profile(profile, input_size=model.input_size, **data_changes)
    base = dict(profile=profile.name, model=model, synthetic=synthetic, sigma=profile.sigma,
                batch_size=profile.batch_size, steps=profile.train_steps, seed=profile.seed,
                learning_rate=profile.learning_rate)
    base.update(TRAINING[profile.name])
    if profile.name == "gpu" and overrides.get("data", "synthetic") == "synthetic":
        batch = overrides.get("batch_size", profile.batch_size)
        base.update(GPU_SYNTHETIC, steps=SYNTHETIC_GPU_STEPS,
                    learning_rate=GPU_SYNTHETIC_LR * math.sqrt(batch / 16))
    base.update(overrides)
    decay_at = base.pop("decay_at", None)  # one step decay at this fraction of the steps
    if decay_at and "lr_decay_steps" not in overrides:
        base["lr_decay_steps"] = max(1, int(decay_at * base["steps"]))
    return TrainConfig(**base)


# --- optimizer and schedule ------------------------------------------------------------------


def learning_rate_schedule(cfg: TrainConfig):
    """The Keras learning-rate schedule of ``cfg`` (a float for ``constant`` without warm-up)."""
    from cpm_nb.core.runtime import import_keras
    from cpm_nb.training.schedules import WarmUp

    keras = import_keras()
    schedules = keras.optimizers.schedules
    lr, warm = cfg.learning_rate, cfg.warmup_steps
    if cfg.schedule == "cosine":
        return schedules.CosineDecay(lr * 0.01 if warm else lr, max(1, cfg.steps - warm),
                                     alpha=0.01, warmup_target=lr if warm else None,
                                     warmup_steps=warm)
    if cfg.schedule == "step" and cfg.lr_decay_steps:
        step = schedules.ExponentialDecay(lr, cfg.lr_decay_steps, cfg.lr_decay_factor,
                                          staircase=True)
        return WarmUp(step, warm, lr) if warm else step
    return WarmUp(lr, warm, lr) if warm else lr


def make_optimizer(cfg: TrainConfig):
    """Adam or SGD with momentum on the schedule of ``cfg`` (weight decay is an L2 loss on
    the kernels, not an optimizer setting: see :mod:`cpm_nb.training.loss`)."""
    from cpm_nb.core.runtime import import_keras

    keras = import_keras()
    lr = learning_rate_schedule(cfg)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=cfg.momentum)
    return keras.optimizers.Adam(lr)


def current_lr(optimizer) -> float:
    """The learning rate the optimizer will use at its next step."""
    import numpy as np

    inner = getattr(optimizer, "inner_optimizer", optimizer)
    lr = inner.learning_rate
    return float(np.asarray(lr))


# --- devices and precision -----------------------------------------------------------------


class Accelerator(NamedTuple):
    name: str
    compute_capability: tuple[int, int] | None


def accelerators() -> list[Accelerator]:
    """The GPUs the Keras backend computes on (empty on a CPU-only machine)."""
    from cpm_nb.core.runtime import keras_backend

    backend = keras_backend()
    if backend == "jax":
        import jax

        found = []
        for d in jax.devices():
            if d.platform != "gpu":
                continue
            cc = getattr(d, "compute_capability", None)
            cc = tuple(int(x) for x in str(cc).split(".")[:2]) if cc else None
            found.append(Accelerator(d.device_kind, cc))
        return found
    if backend == "tensorflow":
        from cpm_nb.core.runtime import import_keras

        import_keras()
        import tensorflow as tf

        found = []
        for gpu in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(gpu)
            found.append(Accelerator(details.get("device_name", "GPU"),
                                     details.get("compute_capability")))
        return found
    if backend == "torch" and "torch" in sys.modules:  # pragma: no cover
        import torch

        return [Accelerator(torch.cuda.get_device_name(i), torch.cuda.get_device_capability(i))
                for i in range(torch.cuda.device_count())]
    return []


class Devices(NamedTuple):
    """What a run computes on and how: GPUs, the dtype policy, XLA, data parallelism."""

    gpus: int
    precision: str
    xla: bool
    distribute: bool
    gpu_name: str = ""


def auto_precision(gpus: list[Accelerator]) -> str:
    """``mixed_bfloat16`` on GPUs of compute capability >= 8.0 and on CPUs with bf16
    instructions (TensorFlow backend: 1.6-1.9x faster here, the same accuracy), otherwise
    ``mixed_float16`` on a GPU and ``float32`` on a CPU."""
    from cpm_nb.core.runtime import cpu_has_bf16, keras_backend

    if not gpus:
        bf16 = keras_backend() == "tensorflow" and cpu_has_bf16()
        return "mixed_bfloat16" if bf16 else "float32"
    cc = gpus[0].compute_capability
    return "mixed_bfloat16" if cc and tuple(cc) >= (8, 0) else "mixed_float16"


def devices_for(cfg: TrainConfig) -> Devices:
    """Resolve the automatic settings of ``cfg`` on this machine."""
    gpus = accelerators()
    n = len(gpus)

    def pick(value, default):
        return default if value is None else value

    return Devices(n, pick(cfg.precision, auto_precision(gpus)), bool(pick(cfg.xla, n > 0)),
                   bool(pick(cfg.distribute, n > 1)), gpus[0].name if gpus else "")


# --- the wall-time estimate printed before training -------------------------------------------

# Measured on this project's machines (2 CPU cores, AMD EPYC with AVX512-BF16; README
# "Benchmarks" and "Results"): training FLOPs per second of `fit` with its data path (3x the
# forward FLOPs per image), per precision, the fixed start-up of a run (importing TensorFlow,
# tracing the step, the data check, the export) and the rendering of a synthetic image with
# its record.  On a GPU: a Colab T4 estimate (55 images/s of the paper network in float16,
# about 29 TFLOP/s; the shared device README's H100 trains it at 650 images/s in bf16).
TRAIN_FLOPS_PER_S = {"cpu": {"float32": 120e9, "mixed_bfloat16": 210e9},
                     "gpu": {"float32": 10e12, "mixed_float16": 29e12, "mixed_bfloat16": 29e12}}
STARTUP_S = {"cpu": 15.0, "gpu": 30.0}
STEP_OVERHEAD_S = 0.004  # the Keras loop's own cost per step (what tiny networks pay)
RENDER_S_PER_IMAGE = 0.008  # a synthetic image and its TFRecord crop (first run only)


def estimate_seconds(cfg: TrainConfig, dev: Devices | None = None,
                     data_ready: bool | None = None) -> dict:
    """The expected wall time of training ``cfg`` here, by part: start-up, the synthetic data
    when it is not prepared yet, the steps, the validations; ``total``."""
    dev = dev or devices_for(cfg)
    kind = "gpu" if dev.gpus else "cpu"
    rates = TRAIN_FLOPS_PER_S[kind]
    rate = rates.get(dev.precision, rates["float32"]) * max(1, dev.gpus)
    train_flops = 3 * architecture.flops_per_image(cfg.model)
    steps = cfg.steps * (cfg.batch_size * train_flops / rate + STEP_OVERHEAD_S)
    if data_ready is None:
        data_ready = cfg.data != "synthetic" or _synthetic_ready(cfg)
    spec = cfg.synthetic
    data = 0.0 if data_ready or spec is None else (spec.n_train + spec.n_val) * \
        RENDER_S_PER_IMAGE * (cfg.input_size / 128) ** 2
    n_val = spec.n_val * 1.35 if spec is not None else 500  # about 1.35 people an image
    validations = 1 + (cfg.steps - 1) // cfg.eval_every if cfg.eval_every else 1
    per_validation = 1.0 + n_val * train_flops / 3 / (rate * 2)  # forward only, larger batches
    out = {"startup": STARTUP_S[kind], "data": data, "steps": steps,
           "validations": validations * per_validation}
    out["total"] = sum(out.values())
    return out


def _synthetic_ready(cfg: TrainConfig) -> bool:
    from cpm_nb.data.shards import META_FILE

    return cfg.synthetic is not None and (cfg.synthetic.tfrecord_dir / META_FILE).is_file()


def estimate_message(cfg: TrainConfig, dev: Devices | None = None) -> str:
    """One line: the run, its steps and the wall time expected on this machine, with the part
    spent before the first step."""
    dev = dev or devices_for(cfg)
    parts = estimate_seconds(cfg, dev)
    where = (f"{dev.gpus} GPU(s) ({dev.gpu_name}; rate of a Colab T4)" if dev.gpus
             else "this CPU")
    extra = f", including {_duration(parts['data'])} to render the synthetic set" \
        if parts["data"] else ""
    return (f"training {cfg.run_name}: {cfg.steps:,} steps of {cfg.batch_size} images in "
            f"{dev.precision}, about {_duration(parts['total'])} on {where}{extra}; "
            f"checkpoints every {cfg.checkpoint_every} steps (if interrupted, continue with "
            "--resume, or call load_or_train again)")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
