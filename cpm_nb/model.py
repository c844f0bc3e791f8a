"""The Convolutional Pose Machine: configurations, the Keras builder, cost and inference.

The network (Wei et al., CVPR 2016, VGG-trunk version of the released code) is

* a **trunk** shared by all stages: the first ten convolutions of VGG-19
  (``conv1_1`` ... ``conv4_2``, 3x3, ReLU, three 2x2 max-pools ``pool1_stage1`` ...
  ``pool3_stage1``) followed by ``conv4_3_CPM`` ... ``conv4_7_CPM`` (3x3, 256 and
  finally 128 channels).  Its output, the *image features*, lives at stride 8;
* **stage 1**: ``conv5_1_CPM`` (1x1, 512, ReLU) -> ``conv5_2_CPM`` (1x1, one map
  per joint (+ background), linear): belief maps from local image evidence only;
* **stages t = 2..T**: ``concat_stage{t}`` = [beliefs of stage t-1, image features
  (, pooled centre map)] -> ``Mconv1_stage{t}`` ... ``Mconv5_stage{t}`` (7x7, 128,
  ReLU) -> ``Mconv6_stage{t}`` (1x1, 128, ReLU) -> ``Mconv7_stage{t}`` (1x1, maps,
  linear).  Each 7x7 layer at stride 8 widens the receptive field by 48 input
  pixels, so later stages see the context (other joints) they need.

Layer names are those of the released Caffe model, so the layer table compares one
to one.  ReLUs are fused into the convolutions (Caffe has separate ``relu*``
layers without parameters); all convolutions use "same" padding (Caffe pads 1
for 3x3 and 3 for 7x7).

**Inputs.**  ``image``: raw RGB in 0..255 as float32 (uint8 cast is fine),
``[B, S, S, 3]``; the first layer (``normalize``) applies CPM's ``x/256 - 0.5``.
Configurations with a centre map (``cpm-mpii-release``) take a second input,
``center_map`` ``[B, S, S, 1]``: a Gaussian (peak 1, sigma 21 px at S = 368) at
the person's centre, see :func:`center_map`.  The Caffe deploy file feeds one
4-channel ``data`` blob (image + centre map) and splits it with a Slice layer at
channel 3 into exactly these two tensors; two named Keras inputs say the same
without a custom layer (and the centre map is *not* normalised, as in Caffe).
``pool_center_lower`` average-pools it with kernel 9 and stride 8.  Caffe pools
in "ceil" mode: ceil((368 - 9) / 8) + 1 = 46 windows, the last one clipped at
the border and averaged over its 8 valid pixels.  Keras ``padding="same"`` gives
the same 46x46 grid (one padded row/column at the bottom/right, excluded from
the average on both the TensorFlow and the JAX backend), whereas ``"valid"``
would give 45x45.

**Outputs.**  A list with one belief-map tensor per stage, ``[B, S/8, S/8, maps]``,
named after the layer that makes it: ``conv5_2_CPM``, ``Mconv7_stage2``, ...
(:attr:`CPMConfig.output_names`), so training can attach one loss per stage
(intermediate supervision).

**Porting the released weights** (:mod:`cpm_nb.caffe`, ``cpm-nb convert-caffe``):
the Caffe model expects BGR channel order, so ``conv1_1``'s input-channel axis is
reversed; Caffe kernels are ``[out, in, kh, kw]`` and Keras kernels ``[kh, kw, in, out]``.

Importing this module is cheap (no TensorFlow): configurations, layer tables,
parameter/FLOP counts and receptive fields are computed analytically; Keras is
imported when a model is built.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import time
from dataclasses import dataclass

import numpy as np

from cpm_nb import config as _config
from cpm_nb.cli import CliError, Command, add_json_option
from cpm_nb.receptive_field import FieldRow, Layer, receptive_fields

# Channel widths of the source article's network (width multiplier 1.0).
TRUNK = (  # (name, kind, kernel, channels); pools have no channels of their own
    ("conv1_1", "conv", 3, 64), ("conv1_2", "conv", 3, 64), ("pool1_stage1", "maxpool", 2, 0),
    ("conv2_1", "conv", 3, 128), ("conv2_2", "conv", 3, 128), ("pool2_stage1", "maxpool", 2, 0),
    ("conv3_1", "conv", 3, 256), ("conv3_2", "conv", 3, 256), ("conv3_3", "conv", 3, 256),
    ("conv3_4", "conv", 3, 256), ("pool3_stage1", "maxpool", 2, 0),
    ("conv4_1", "conv", 3, 512), ("conv4_2", "conv", 3, 512),
    ("conv4_3_CPM", "conv", 3, 256), ("conv4_4_CPM", "conv", 3, 256),
    ("conv4_5_CPM", "conv", 3, 256), ("conv4_6_CPM", "conv", 3, 256),
    ("conv4_7_CPM", "conv", 3, 128),
)  # fmt: skip
FULL_TRUNK = (2, 2, 4, 7)  # 3x3 convolutions per trunk block, as in TRUNK
STAGE1_WIDTH = 512  # conv5_1_CPM
STAGE_WIDTH = 128  # Mconv1..Mconv6 of stages >= 2
CENTER_POOL = (9, 8)  # pool_center_lower: kernel, stride
RELEASE_PARAMS = 29_852_058  # parameters of the released CPM MPII model (pose_deploy_resize)
PAPER_STAGE1_FIELD = 160  # "the receptive field of stage 1 is about 160 px" (the paper)


# --- configurations ---------------------------------------------------------------


@dataclass(frozen=True)
class CPMConfig:
    """Everything that fixes the architecture of one CPM network.

    ``width`` multiplies every hidden channel count (rounded to a multiple of 8, at
    least ``min_channels``); the belief-map layers keep ``num_maps`` channels.
    """

    name: str = "custom"
    input_size: int = 368  # side of the square input crop, px (multiple of 8)
    stages: int = 6
    width: float = 1.0
    num_joints: int = 16
    background: bool = False  # one extra "no joint here" map
    center_map: bool = False  # a Gaussian centre-map input, pooled into every stage >= 2
    center_sigma: float = 21.0  # centre-map sigma, input px
    stage_kernel: int = 7  # kernel of Mconv1..Mconv5 (the original CPM used 11 and 9x9 convs)
    min_channels: int = 8
    # 3x3 convolutions kept in each of the trunk's four blocks (before pool1, pool2, pool3,
    # after pool3); the full VGG trunk has (2, 2, 4, 7).  See trunk_layers().
    trunk: tuple[int, int, int, int] = FULL_TRUNK

    def __post_init__(self):
        if self.input_size <= 0 or self.input_size % _config.OUTPUT_STRIDE:
            raise ValueError(f"input_size must be a positive multiple of "
                             f"{_config.OUTPUT_STRIDE}, got {self.input_size}")
        if self.stages < 1:
            raise ValueError(f"stages must be >= 1, got {self.stages}")
        if self.width <= 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.num_joints < 1:
            raise ValueError(f"num_joints must be >= 1, got {self.num_joints}")
        if self.stage_kernel < 1 or self.stage_kernel % 2 == 0:
            raise ValueError(f"stage_kernel must be odd and >= 1, got {self.stage_kernel}")
        trunk = tuple(self.trunk)
        if len(trunk) != 4 or any(not 1 <= n <= m for n, m in zip(trunk, FULL_TRUNK)):
            raise ValueError(f"trunk must give 4 convolution counts, each from 1 to the full "
                             f"trunk's {FULL_TRUNK}, got {self.trunk}")
        object.__setattr__(self, "trunk", trunk)  # a list from JSON becomes a tuple

    @property
    def map_size(self) -> int:
        """Side of the belief maps (input_size / 8)."""
        return self.input_size // _config.OUTPUT_STRIDE

    @property
    def num_maps(self) -> int:
        """Belief maps per stage: joints (+ background)."""
        return self.num_joints + int(self.background)

    @property
    def output_names(self) -> list[str]:
        """Names of the per-stage outputs (the layers that produce them), stage 1 first."""
        return ["conv5_2_CPM"] + [f"Mconv7_stage{t}" for t in range(2, self.stages + 1)]

    @property
    def input_names(self) -> list[str]:
        return ["image", "center_map"] if self.center_map else ["image"]

    def channels(self, base: int) -> int:
        """Hidden channel count for a layer that has ``base`` channels at width 1."""
        if self.width == 1.0:
            return base
        return max(self.min_channels, int(base * self.width / 8 + 0.5) * 8)

    def replace(self, **changes) -> CPMConfig:
        return dataclasses.replace(self, **changes)


NAMED_CONFIGS: dict[str, CPMConfig] = {
    # The network of the source article: 16 MPII joints, no background, no centre map.
    "source-article": CPMConfig(name="source-article"),
    # The released CPM MPII model (_trained_MPI/pose_deploy_resize.prototxt with
    # pose_iter_320000.caffemodel; the release's pose_deploy_centerMap.prototxt is the older
    # 9x9/11x11 architecture): 14 joints (head top, neck, R/L shoulder, elbow, wrist, hip,
    # knee, ankle: MPII without pelvis and thorax) + background = 15 maps, and the centre map.
    "cpm-mpii-release": CPMConfig(name="cpm-mpii-release", num_joints=14, background=True,
                                  center_map=True, center_sigma=21.0),
    # The stage experiment at CPU scale (cpm_nb.experiments): a 128-px crop with the
    # paper's proportions.  Stage 1 sees 62 px = 0.48 of the crop (paper: 160/368 = 0.43);
    # each later stage adds 5 x 2 x 8 = 80 px = 0.63 crops (paper: 7x7 convolutions,
    # 240/368 = 0.65).  Same structure and layer names, a shallower trunk and 3x3 stages.
    "stage-experiment": CPMConfig(name="stage-experiment", input_size=128, stages=6,
                                  width=0.5, trunk=(1, 1, 2, 2), stage_kernel=3),
}


def from_profile(profile: str | _config.Profile | None = None, base: str | CPMConfig =
                 "source-article", **changes) -> CPMConfig:
    """The ``base`` configuration scaled to a run profile (default: the active one).

    Takes the profile's ``input_size``, ``stages`` and ``width``; keeps the structure
    and the layer names.  A centre-map sigma scales with the input size.  Extra
    keyword arguments override fields, e.g. ``background=True``.
    """
    if profile is None:
        profile = _config.get_profile()
    elif isinstance(profile, str):
        profile = _config.resolve_profile(profile)
    base_config = get_config(base) if isinstance(base, str) else base
    scale = profile.input_size / base_config.input_size
    fields = dict(name=f"{base_config.name}@{profile.name}", input_size=profile.input_size,
                  stages=profile.stages, width=profile.width,
                  center_sigma=base_config.center_sigma * scale)
    fields.update(changes)
    return base_config.replace(**fields)


def config_names() -> list[str]:
    """Names :func:`get_config` accepts: the named configurations, then the profiles."""
    return list(NAMED_CONFIGS) + _config.profile_names()


def get_config(config: str | CPMConfig | None = None) -> CPMConfig:
    """A configuration from a name (named configuration or profile name) or itself.

    ``None`` gives the active profile's model (:func:`from_profile`).
    """
    if config is None:
        return from_profile()
    if isinstance(config, CPMConfig):
        return config
    if config in NAMED_CONFIGS:
        return NAMED_CONFIGS[config]
    if config in _config.PROFILES:
        return from_profile(config)
    raise ValueError(f"unknown CPM configuration {config!r}; valid: {', '.join(config_names())}")


# --- the architecture as a table ----------------------------------------------------


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the network, with its output shape and cost (per image)."""

    name: str
    kind: str  # input | rescale | conv | maxpool | avgpool | concat
    block: str  # input | center | trunk | stage1 | stage2 | ...
    inputs: tuple[str, ...]
    kernel: int = 1
    stride: int = 1
    in_channels: int = 0
    channels: int = 0  # output channels
    size: int = 0  # output side, px of the layer's own grid
    activation: str = ""  # "relu" or "" (linear)
    params: int = 0
    flops: int = 0  # 2 x multiply-accumulates (convolutions only)


def architecture(config: str | CPMConfig | None = None) -> list[LayerSpec]:
    """The network as an ordered list of layers: the single source :func:`build_cpm` follows.

    Parameters and FLOPs are exact for convolutions (kernel + bias; FLOPs = 2 x MACs).
    Bias adds, ReLU, pooling, concatenation and the input scaling are not counted:
    TensorFlow's graph profiler, which counts them, finds under 1 % more (0.45 % for
    the ``fast`` model, less for wider ones; checked in the tests).
    """
    cfg = get_config(config)
    shapes: dict[str, tuple[int, int]] = {}  # name -> (channels, size)
    rows: list[LayerSpec] = []

    def add(name, kind, block, inputs, kernel=1, stride=1, channels=0, activation=""):
        in_ch = sum(shapes[i][0] for i in inputs) if inputs else 0
        in_size = shapes[inputs[0]][1] if inputs else cfg.input_size
        if kind == "input":
            size = cfg.input_size
        elif kind in ("maxpool", "avgpool"):
            size = -(-in_size // stride)  # "same" padding = Caffe's ceil mode
        else:
            size = in_size
        if kind in ("maxpool", "avgpool", "rescale"):
            channels = in_ch
        elif kind == "concat":
            channels = in_ch
            sizes = {shapes[i][1] for i in inputs}
            assert len(sizes) == 1, f"{name}: inputs of different sizes {sizes}"
        params = flops = 0
        if kind == "conv":
            params = kernel * kernel * in_ch * channels + channels
            flops = 2 * kernel * kernel * in_ch * channels * size * size
        shapes[name] = (channels, size)
        rows.append(LayerSpec(name, kind, block, tuple(inputs), kernel, stride, in_ch, channels,
                              size, activation, params, flops))
        return name

    image = add("image", "input", "input", [], channels=3)
    rows[-1] = dataclasses.replace(rows[-1], in_channels=3)
    last = add("normalize", "rescale", "input", [image])
    pooled_center = None
    if cfg.center_map:
        add("center_map", "input", "input", [], channels=1)
        rows[-1] = dataclasses.replace(rows[-1], in_channels=1)
        k, s = CENTER_POOL
        pooled_center = add("pool_center_lower", "avgpool", "center", ["center_map"], k, s)
    for name, kind, kernel, width in trunk_layers(cfg):
        if kind == "conv":
            last = add(name, "conv", "trunk", [last], kernel, 1, cfg.channels(width), "relu")
        else:
            last = add(name, kind, "trunk", [last], kernel, kernel)
    features = last
    last = add("conv5_1_CPM", "conv", "stage1", [features], 1, 1, cfg.channels(STAGE1_WIDTH),
               "relu")
    beliefs = add("conv5_2_CPM", "conv", "stage1", [last], 1, 1, cfg.num_maps)
    k = cfg.stage_kernel
    for t in range(2, cfg.stages + 1):
        block = f"stage{t}"
        inputs = [beliefs, features] + ([pooled_center] if pooled_center else [])
        last = add(f"concat_stage{t}", "concat", block, inputs)
        for i in range(1, 6):
            last = add(f"Mconv{i}_stage{t}", "conv", block, [last], k, 1,
                       cfg.channels(STAGE_WIDTH), "relu")
        last = add(f"Mconv6_stage{t}", "conv", block, [last], 1, 1, cfg.channels(STAGE_WIDTH),
                   "relu")
        beliefs = add(f"Mconv7_stage{t}", "conv", block, [last], 1, 1, cfg.num_maps)
    return rows


def trunk_layers(cfg: CPMConfig) -> list[tuple[str, str, int, int]]:
    """The rows of :data:`TRUNK` that ``cfg.trunk`` keeps: in each block the first n - 1
    convolutions and the block's last one, so the features keep their name and width
    (``conv4_7_CPM``, 128 channels at width 1) whatever the depth."""
    blocks, current = [], []
    for row in TRUNK:
        if row[1] == "conv":
            current.append(row)
        else:
            blocks.append((current, row))
            current = []
    blocks.append((current, None))
    kept = []
    for (convs, pool), n in zip(blocks, cfg.trunk):
        kept += convs[:n - 1] + convs[-1:]
        if pool is not None:
            kept.append(pool)
    return kept


def count_params(config: str | CPMConfig | None = None) -> int:
    """Trainable parameters of the network (analytic; equals Keras' ``count_params``)."""
    return sum(r.params for r in architecture(config))


def flops_per_image(config: str | CPMConfig | None = None) -> int:
    """Forward-pass FLOPs for one image (2 x multiply-accumulates of all convolutions)."""
    return sum(r.flops for r in architecture(config))


def block_summary(config: str | CPMConfig | None = None) -> list[dict]:
    """Parameters and FLOPs per block (trunk, stage1, stage2, ...), with their shares."""
    rows = architecture(config)
    total_p = sum(r.params for r in rows) or 1
    total_f = sum(r.flops for r in rows) or 1
    out: dict[str, dict] = {}
    for r in rows:
        if r.block in ("input", "center"):
            continue
        b = out.setdefault(r.block, {"block": r.block, "convs": 0, "params": 0, "flops": 0})
        b["convs"] += r.kind == "conv"
        b["params"] += r.params
        b["flops"] += r.flops
    for b in out.values():
        b["params_share"] = b["params"] / total_p
        b["flops_share"] = b["flops"] / total_f
    return list(out.values())


def format_layer_table(config: str | CPMConfig | None = None) -> str:
    """The layer table as aligned text: name, kind, kernel/stride, shape, params, MFLOPs."""
    rows = architecture(config)
    lines = [f"{'layer':<18} {'kind':<8} {'k/s':>5} {'in':>5} {'out':>5} {'size':>5} "
             f"{'act':<5} {'params':>11} {'MFLOPs':>10}"]
    for r in rows:
        ks = f"{r.kernel}/{r.stride}" if r.kind in ("conv", "maxpool", "avgpool") else ""
        lines.append(f"{r.name:<18} {r.kind:<8} {ks:>5} {r.in_channels:>5} {r.channels:>5} "
                     f"{r.size:>5} {r.activation or '-':<5} {r.params:>11,} "
                     f"{r.flops / 1e6:>10,.1f}")
    lines.append(f"{'total':<18} {'':<8} {'':>5} {'':>5} {'':>5} {'':>5} {'':<5} "
                 f"{sum(r.params for r in rows):>11,} {sum(r.flops for r in rows) / 1e6:>10,.1f}")
    return "\n".join(lines)


# --- receptive field ------------------------------------------------------------------


def receptive_field_chain(config: str | CPMConfig | None = None,
                          stage: int | None = None) -> list[Layer]:
    """The convolutions and pools on the longest path from the image to stage ``stage``.

    Stage t >= 2 sees the beliefs of stage t-1 (whose field already contains the
    trunk's), so the longest path runs trunk -> stage 1 -> stage 2 -> ... -> stage t.
    The pooled centre map (kernel 9, stride 8) is a much shorter path.
    """
    cfg = get_config(config)
    stage = cfg.stages if stage is None else stage
    if not 1 <= stage <= cfg.stages:
        raise ValueError(f"stage must be in 1..{cfg.stages}, got {stage}")
    keep = {"trunk"} | {f"stage{t}" for t in range(1, stage + 1)}
    return [Layer(r.name, r.kernel, r.stride) for r in architecture(cfg)
            if r.block in keep and r.kind in ("conv", "maxpool")]


def receptive_field_rows(config: str | CPMConfig | None = None) -> list[FieldRow]:
    """Receptive field and jump after every layer of the longest path (for plots)."""
    return receptive_fields(receptive_field_chain(config))


def stage_receptive_fields(config: str | CPMConfig | None = None) -> list[int]:
    """Receptive field (input px) of one belief-map cell of each stage, stage 1 first."""
    cfg = get_config(config)
    rows = {r.name: r.receptive_field for r in receptive_field_rows(cfg)}
    return [rows[name] for name in cfg.output_names]


def measure_receptive_field(config: str | CPMConfig | None = None, stage: int = 1,
                            seed: int = 0) -> int:
    """Measure stage ``stage``'s receptive field with a gradient (TensorFlow backend).

    Builds a thin copy of the network (width 1/8; the field does not depend on the
    width) on a crop large enough to hold the computed field, sets every kernel
    positive and ``conv1_1``'s bias to 1 (so no ReLU cuts the signal and nothing
    cancels), and returns the side of the box of input pixels whose gradient on the
    centre belief cell is non-zero.  Max-pooling passes the gradient to one pixel per
    window only, so the measurement may fall a few pixels short of the computed field.
    """
    from cpm_nb.runtime import import_keras

    keras = import_keras()
    import tensorflow as tf

    cfg = get_config(config)
    field = stage_receptive_fields(cfg.replace(stages=stage))[-1]
    size = -(-(field + 24) // 8) * 8
    cfg = cfg.replace(name="rf-probe", input_size=size, stages=stage, width=0.125,
                      center_map=False)
    net = build_cpm(cfg, seed=seed)
    for layer in net.layers:
        if isinstance(layer, keras.layers.Conv2D):
            shape = tuple(layer.kernel.shape)
            layer.kernel.assign(np.full(shape, 1.0 / np.prod(shape[:3]), np.float32))
            layer.bias.assign(np.full(layer.bias.shape, float(layer.name == "conv1_1"),
                                      np.float32))
    rng = np.random.default_rng(seed)
    x = tf.Variable(rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32))
    c = cfg.map_size // 2
    with tf.GradientTape() as tape:
        out = net(x)
        out = out[-1] if isinstance(out, (list, tuple)) else out
        value = tf.reduce_sum(out[0, c, c, :])
    grad = np.abs(tape.gradient(value, x).numpy()[0]).sum(-1)
    rows, cols = np.flatnonzero(grad.sum(1)), np.flatnonzero(grad.sum(0))
    return int(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1)


def describe(config: str | CPMConfig | None = None) -> dict:
    """The facts of one configuration: sizes, parameters, FLOPs, receptive fields."""
    cfg = get_config(config)
    fields = stage_receptive_fields(cfg)
    return {
        "config": dataclasses.asdict(cfg),
        "inputs": {n: [cfg.input_size, cfg.input_size, 3 if n == "image" else 1]
                   for n in cfg.input_names},
        "outputs": {n: [cfg.map_size, cfg.map_size, cfg.num_maps] for n in cfg.output_names},
        "params": count_params(cfg),
        "flops_per_image": flops_per_image(cfg),
        "blocks": block_summary(cfg),
        "receptive_field_per_stage": fields,
        "receptive_field_growth_per_stage": [b - a for a, b in zip([0, *fields], fields)],
        "receptive_field_over_crop": [round(f / cfg.input_size, 3) for f in fields],
    }


# --- centre map ------------------------------------------------------------------------


def center_map(size: int, sigma: float = 21.0, center: tuple[float, float] | None = None,
               dtype=np.float32) -> np.ndarray:
    """A ``[size, size]`` Gaussian (peak 1, not normalised) at ``center`` = (x, y).

    Coordinates are 0-based pixel centres; the default centre is the middle of the
    crop, ((size - 1) / 2, (size - 1) / 2).  (The released MATLAB code puts the peak
    at pixel 184 of 368, 1-based, i.e. half a pixel off the geometric centre.)
    """
    cx, cy = ((size - 1) / 2, (size - 1) / 2) if center is None else center
    y, x = np.mgrid[0:size, 0:size]
    d2 = (x - cx) ** 2 + (y - cy) ** 2
    return np.exp(-d2 / (2.0 * sigma**2)).astype(dtype)


def center_maps(batch: int, config: str | CPMConfig | None = None) -> np.ndarray:
    """``[batch, S, S, 1]`` centre maps at the crop centre for ``config``'s input."""
    cfg = get_config(config)
    one = center_map(cfg.input_size, cfg.center_sigma)
    return np.broadcast_to(one[None, :, :, None], (batch, *one.shape, 1)).copy()


# --- the Keras model ---------------------------------------------------------------------


def build_cpm(config: str | CPMConfig | None = None, seed: int | None = None,
              kernel_initializer: str = "he_normal", weight_decay: float = 0.0):
    """Build the CPM as a Keras functional model (Keras layers only: any backend).

    ``config``: a :class:`CPMConfig`, the name of a named configuration
    (``source-article``, ``cpm-mpii-release``) or of a profile (``fast``, ``cpu``,
    ``gpu``); ``None`` = the active profile.  Weights: kernels from
    ``kernel_initializer`` (a Keras initializer name, default He-normal), seeded per
    layer from ``seed`` (default: the profile's seed); zero biases.  ``weight_decay > 0``
    adds the L2 loss ``weight_decay / 2 * ||W||^2`` of every kernel to ``model.losses``
    (Caffe's ``weight_decay``, see :mod:`cpm_nb.loss`).  The model has
    ``model.cpm_config``; inputs/outputs as described in the module docstring.
    """
    from cpm_nb.runtime import import_keras

    keras = import_keras()
    cfg = get_config(config)
    seed = _config.get_profile().seed if seed is None else seed
    layers = keras.layers
    regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
    tensors: dict = {}
    conv_index = 0
    for spec in architecture(cfg):
        ins = [tensors[i] for i in spec.inputs]
        if spec.kind == "input":
            out = keras.Input((cfg.input_size, cfg.input_size, spec.channels), name=spec.name)
        elif spec.kind == "rescale":
            out = layers.Rescaling(1 / 256, offset=-0.5, name=spec.name)(ins[0])
        elif spec.kind == "conv":
            init = keras.initializers.get(kernel_initializer)
            init_config = init.get_config()
            if "seed" in init_config:  # one seed per layer, distinct across model seeds
                init = type(init).from_config({**init_config, "seed": seed * 1000 + conv_index})
            conv_index += 1
            out = layers.Conv2D(spec.channels, spec.kernel, padding="same",
                                activation=spec.activation or None, kernel_initializer=init,
                                kernel_regularizer=regularizer,
                                name=spec.name)(ins[0])
        elif spec.kind == "maxpool":
            out = layers.MaxPooling2D(spec.kernel, spec.stride, padding="same",
                                      name=spec.name)(ins[0])
        elif spec.kind == "avgpool":
            out = layers.AveragePooling2D(spec.kernel, spec.stride, padding="same",
                                          name=spec.name)(ins[0])
        elif spec.kind == "concat":
            out = layers.Concatenate(axis=-1, name=spec.name)(ins)
        else:  # pragma: no cover - architecture() only emits the kinds above
            raise ValueError(spec.kind)
        tensors[spec.name] = out
    inputs = [tensors[n] for n in cfg.input_names]
    outputs = [tensors[n] for n in cfg.output_names]
    model = keras.Model(inputs if len(inputs) > 1 else inputs[0], outputs,
                        name=re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.name))
    model.cpm_config = cfg
    return model


def config_of(model) -> CPMConfig:
    """The :class:`CPMConfig` of a model from :func:`build_cpm` (inferred when reloaded)."""
    cfg = getattr(model, "cpm_config", None)
    if isinstance(cfg, CPMConfig):
        return cfg
    names = [t.name.split(":")[0] for t in model.inputs]
    shape = model.inputs[0].shape
    outs = model.outputs
    return CPMConfig(name=model.name, input_size=int(shape[1]), stages=len(outs),
                     num_joints=int(outs[0].shape[-1]), center_map="center_map" in names,
                     center_sigma=21.0 * int(shape[1]) / 368)


def model_inputs(images, config: str | CPMConfig | None = None):
    """What the model takes for a batch of RGB ``images``: the images, plus centre maps
    at the crop centre when the configuration has a centre-map input (NumPy)."""
    cfg = get_config(config)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (cfg.input_size, cfg.input_size, 3):
        raise ValueError(f"expected RGB images [B, {cfg.input_size}, {cfg.input_size}, 3], "
                         f"got {images.shape}")
    if not cfg.center_map:
        return images
    return [images, center_maps(images.shape[0], cfg)]


def make_predict_fn(model, jit_compile: bool | None = None, config: CPMConfig | None = None):
    """A compiled inference function ``images -> list of per-stage belief maps`` (NumPy).

    ``images``: ``[B, S, S, 3]`` RGB 0..255 (uint8 or float).  Centre maps, when the
    model takes them, are added at the crop centre.  Returns one float32 array
    ``[B, S/8, S/8, maps]`` per stage, stage 1 first.

    Compilation follows the Keras backend: TensorFlow -> ``tf.function`` (a graph,
    traced once for any batch size); with XLA (``jit_compile=True``, the default when a
    GPU is visible; compiles once per batch size).  On a shared 2-core CPU
    (``python -m cpm_nb.bench model``) XLA was not consistently faster than the plain
    graph at 368 px and slower for the small profile models, so the CPU default is the
    plain graph, as in Keras;
    JAX -> ``jax.jit`` of ``model.stateless_call`` (one compilation per batch size);
    other backends -> ``model.predict_on_batch``.  The function's ``.compiled``
    attribute says which.
    """
    from cpm_nb.runtime import import_keras, keras_backend

    import_keras()
    cfg = config or config_of(model)
    backend = keras_backend()
    n_inputs = len(model.inputs)

    if backend == "tensorflow":
        import tensorflow as tf

        if jit_compile is None:
            jit_compile = bool(tf.config.list_physical_devices("GPU"))
        specs = [tf.TensorSpec([None, cfg.input_size, cfg.input_size, 3], tf.float32)]
        if n_inputs == 2:
            specs.append(tf.TensorSpec([None, cfg.input_size, cfg.input_size, 1], tf.float32))

        @tf.function(input_signature=specs, jit_compile=jit_compile)
        def forward(*xs):
            return model(list(xs) if len(xs) > 1 else xs[0], training=False)

        def run(x):
            return forward(*(x if isinstance(x, list) else [x]))

        compiled = "tf.function + XLA" if jit_compile else "tf.function"
    elif backend == "jax":
        import jax

        @jax.jit
        def forward(trainable, non_trainable, x):
            out, _ = model.stateless_call(trainable, non_trainable, x, training=False)
            return out

        def run(x):
            return forward([v.value for v in model.trainable_variables],
                           [v.value for v in model.non_trainable_variables], x)

        compiled = "jax.jit"
    else:
        run = model.predict_on_batch
        compiled = "predict_on_batch"

    def predict(images):
        out = run(model_inputs(images, cfg))
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in out]

    predict.compiled = compiled
    predict.config = cfg
    predict.__doc__ = make_predict_fn.__doc__
    return predict


# --- intermediate supervision: gradient at the trunk ------------------------------------


def conv_gradient_magnitudes(model, images, targets, intermediate: bool = True) -> dict[str, float]:
    """Mean |gradient| of each convolution kernel for one batch (TensorFlow or JAX backend).

    The loss is the sum of all stage losses (``intermediate=True``, intermediate
    supervision as in CPM) or only the last stage's loss.  Returns ``{layer: mean
    |dL/dW|}`` in layer order (trunk first).
    """
    from cpm_nb.runtime import import_keras, keras_backend

    keras = import_keras()
    ops = keras.ops
    cfg = config_of(model)
    x = model_inputs(images, cfg)
    targets = ops.convert_to_tensor(np.asarray(targets, np.float32))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]

    def total(outputs):
        from cpm_nb.loss import map_loss

        losses = [ops.mean(map_loss(o, targets)) for o in outputs]
        return sum(losses) if intermediate else losses[-1]

    if keras_backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = total(model(x, training=True))
        grads = tape.gradient(loss, [c.kernel for c in convs])
    elif keras_backend() == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss_fn(tv):
            out, _ = model.stateless_call(tv, non_trainable, x, training=True)
            return total(out)

        all_grads = jax.grad(loss_fn)(trainable)
        index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        grads = [all_grads[index[id(c.kernel)]] for c in convs]
    else:
        raise ValueError(f"gradient magnitudes need the TensorFlow or JAX backend, not "
                         f"{keras_backend()!r}: set KERAS_BACKEND=tensorflow or jax")
    return {c.name: float(np.mean(np.abs(np.asarray(g)))) for c, g in zip(convs, grads)}


# --- cpm-nb model (CLI) ------------------------------------------------------------------


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="NAME",
                        help="a named configuration (" + ", ".join(NAMED_CONFIGS) +
                        ") or a profile name (" + ", ".join(_config.profile_names()) +
                        "); default: the active profile's model")
    parser.add_argument("--layers", action="store_true", help="also print the layer table")
    parser.add_argument("--check", action="store_true",
                        help="build the Keras model and check its parameter count and output "
                             "shapes against the analytic table (imports TensorFlow)")
    add_json_option(parser, "the facts")


def _model_run(args: argparse.Namespace) -> int:
    from cpm_nb.cli import print_json

    try:
        cfg = get_config(args.config)
    except ValueError as err:
        raise CliError(str(err)) from None
    info = describe(cfg)
    if args.check:
        model = build_cpm(cfg)
        shapes = [list(o.shape[1:]) for o in model.outputs]
        info["check"] = {"keras_params": int(model.count_params()),
                         "params_match": int(model.count_params()) == info["params"],
                         "output_shapes_match": shapes == list(info["outputs"].values())}
    if args.json:
        print_json(info, args.json)
        return 0
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
    if args.check:
        ch = info["check"]
        print(f"  Keras check: {ch['keras_params']:,} params (match: {ch['params_match']}), "
              f"output shapes match: {ch['output_shapes_match']}")
    if args.layers:
        print()
        print(format_layer_table(cfg))
    return 0


MODEL = Command(
    name="model",
    help="describe a CPM configuration: parameters, FLOPs, receptive field per stage, layers",
    add_arguments=_model_arguments,
    run=_model_run,
    description="""\
Describe a CPM network without building it (analytic counts; --check builds it in Keras).

examples:
  cpm-nb model                              the active profile's scaled model
  cpm-nb model --config source-article --layers
  cpm-nb model --config cpm-mpii-release --check     29,852,058 parameters, as released
  cpm-nb --profile fast model --json-out out.json""",
)


# --- benchmark: python -m cpm_nb.bench model -----------------------------------------------


def bench_model(args) -> dict:
    """Forward-pass images/s of the paper-size model (source-article, 368 px, 6 stages)
    at batch 1 and 8: eager calls (the baseline) versus compiled ones, and the FLOP/s.

    TensorFlow backend: eager ``model(x)``, ``tf.function`` (graph) and ``tf.function``
    with XLA; JAX: eager versus ``jax.jit``.  The first call of each variant (tracing,
    compilation) is reported separately and not timed; the timed calls of the variants
    are interleaved, and the CPU time per wall second ("cores") shows how much of the
    machine the run really had while other processes shared it.
    """
    import os

    from cpm_nb import bench
    from cpm_nb.runtime import import_keras, keras_backend

    keras = import_keras()
    cfg = get_config(getattr(args, "config", None) or "source-article")  # tests pass a small one
    flops = flops_per_image(cfg)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    model = build_cpm(cfg, seed=0)
    build_s = time.perf_counter() - t0
    quick = getattr(args, "quick", False)
    rng = np.random.default_rng(0)
    variants = {"eager": None}
    if keras_backend() == "tensorflow":
        variants["tf.function"] = make_predict_fn(model, jit_compile=False)
        variants["tf.function+XLA"] = make_predict_fn(model, jit_compile=True)
    else:
        variants[make_predict_fn(model).compiled] = make_predict_fn(model)
    default = make_predict_fn(model).compiled
    results: dict = {"config": cfg.name, "input_size": cfg.input_size, "stages": cfg.stages,
                     "params": count_params(cfg), "flops_per_image": flops,
                     "backend": keras_backend(), "make_predict_fn_default": default,
                     "quick": quick, "load_average_1min_before": load, "build_s": build_s,
                     "batches": {}}
    rows = [("model", f"{cfg.name}: {cfg.input_size} px, {cfg.stages} stages, "
                      f"{results['params']:,} params, {flops / 1e9:.1f} GFLOPs/image"),
            ("machine", f"{os.cpu_count()} CPUs; 1-min load average {load:.2f} before the "
                        "run (other processes share the cores)")]
    for batch in (1, 8):
        images = rng.integers(0, 256, (batch, cfg.input_size, cfg.input_size, 3)).astype(
            np.float32)
        x = keras.ops.convert_to_tensor(images)
        repeat = 1 if quick else (3 if batch == 1 else 2)
        calls, first, samples = {}, {}, {}
        for name, fn in variants.items():
            if fn is None:
                def call(x=x):
                    return [np.asarray(o) for o in model(x, training=False)]
            else:
                def call(fn=fn, images=images):
                    return fn(images)
            t0 = time.perf_counter()
            call()  # first call: tracing / compilation (+ one forward pass)
            first[name] = time.perf_counter() - t0
            calls[name], samples[name] = call, []
        # Interleave the variants (round robin), so that a change in the load from other
        # processes affects all of them alike; CPU time / wall time = cores we really got.
        for _ in range(repeat):
            for name, call in calls.items():
                cpu0 = time.process_time()
                t = bench.timeit(call, items=batch, warmup=0, repeat=1, min_time=0.0)
                samples[name].append((t["median_s"], time.process_time() - cpu0))
        per_batch = {}
        for name, runs in samples.items():
            walls = sorted(w for w, _ in runs)
            median = walls[len(walls) // 2]
            per_batch[name] = {
                "calls": len(runs), "best_s": walls[0], "median_s": median,
                "per_s": batch / median, "gflops_per_s": batch / median * flops / 1e9,
                "first_call_s": first[name],
                "cores_used": sum(c for _, c in runs) / sum(w for w, _ in runs)}
            t = per_batch[name]
            t["gflops_per_s_per_core"] = t["gflops_per_s"] / max(t["cores_used"], 1e-9)
        results["batches"][str(batch)] = per_batch
        eager = per_batch["eager"]["per_s"]
        for name, t in per_batch.items():
            ratio = "(baseline)" if name == "eager" else f"{t['per_s'] / eager:.2f}x eager"
            rows.append((f"batch {batch}  {name}",
                         f"{t['per_s']:6.2f} images/s {t['gflops_per_s']:7.1f} GFLOP/s  "
                         f"{ratio:<11} median {t['median_s']:.2f} s/batch over {t['calls']}, "
                         f"first call {t['first_call_s']:.1f} s, {t['cores_used']:.1f} cores "
                         f"({t['gflops_per_s_per_core']:.0f} GFLOP/s per core)"))
    results["load_average_1min_after"] = os.getloadavg()[0]
    rows.append(("make_predict_fn", f"uses {default} by default on this machine"))
    bench.print_table("model: CPM forward pass, compiled vs eager (baseline)", rows)
    return results
