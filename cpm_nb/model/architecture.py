"""The CPM architecture without Keras: configurations, the layer table, costs, receptive fields.

:class:`CPMConfig` fixes one network (input side, stages, width, joints, centre map,
trunk depth); :data:`NAMED_CONFIGS` holds the source article's, the released MPII
model's and the stage experiment's.  :func:`architecture` lists the layers that
:func:`cpm_nb.model.cpm.build_cpm` builds, in order, with exact parameter and FLOP counts,
from which the block summary, the text layer table and the receptive field of every
stage follow analytically.  Importing this module is cheap (no TensorFlow).

Every function takes the configuration explicitly (a :class:`CPMConfig`, or the name of a
named configuration or of a profile, resolved by :func:`get_config`): the caller, not the
library, picks the active profile (:func:`from_profile` takes a resolved
:class:`~cpm_nb.core.config.Profile`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from cpm_nb.core import config as _config
from cpm_nb.core.errors import ConfigError
from cpm_nb.model.receptive_field import FieldRow, Layer, receptive_fields

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


def _require_integer(value, name: str) -> None:
    """An integer field is an integer (3, not 3.0, 9.5, True or "3")."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{name} must be an integer, got {value!r}")


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
    # 3x3 convolutions in each of the trunk's four blocks (before pool1, pool2, pool3,
    # after pool3); the block's other convolutions become 1x1, which keeps the depth but
    # not the receptive field.  The full VGG trunk has (2, 2, 4, 7).  See trunk_layers().
    trunk: tuple[int, int, int, int] = FULL_TRUNK
    # Attribution variants (cpm_nb.training.ablations); the defaults are the CPM above and
    # are left out of a training run's key (:meth:`variant_fields`).
    # stage1_convs k x k convolutions (stage_kernel) open stage 1, on the features: a 1-stage
    # net with a later stage's receptive field; stage1_channels their width (0: a later
    # stage's, channels(STAGE_WIDTH)), an exact count to match a parameter budget.
    stage1_convs: int = 0
    stage1_channels: int = 0
    stage_beliefs: bool = True  # False: stages >= 2 see the features (and centre) only
    center_stage1: bool = False  # the pooled centre map enters stage 1 too (needs center_map)

    def __post_init__(self):
        for name in ("input_size", "stages", "num_joints", "stage_kernel", "min_channels"):
            _require_integer(getattr(self, name), name)
        for name in ("width", "center_sigma"):  # `not (x > 0)`: NaN fails too
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got "
                                  f"{getattr(self, name)}")
        if self.input_size <= 0 or self.input_size % _config.OUTPUT_STRIDE:
            raise ConfigError(f"input_size must be a positive multiple of "
                             f"{_config.OUTPUT_STRIDE}, got {self.input_size}")
        if self.stages < 1:
            raise ConfigError(f"stages must be >= 1, got {self.stages}")
        if self.width <= 0:
            raise ConfigError(f"width must be > 0, got {self.width}")
        if self.num_joints < 1:
            raise ConfigError(f"num_joints must be >= 1, got {self.num_joints}")
        if self.stage_kernel < 1 or self.stage_kernel % 2 == 0:
            raise ConfigError(f"stage_kernel must be odd and >= 1, got {self.stage_kernel}")
        if self.stage1_convs < 0 or self.stage1_channels < 0:
            raise ConfigError(f"stage1_convs and stage1_channels must be >= 0, got "
                             f"{self.stage1_convs} and {self.stage1_channels}")
        if self.center_stage1 and not self.center_map:
            raise ConfigError("center_stage1 feeds the centre map to stage 1: it needs "
                             "center_map=True")
        trunk = tuple(self.trunk)
        if len(trunk) != 4 or any(not 1 <= n <= m for n, m in zip(trunk, FULL_TRUNK)):
            raise ConfigError(f"trunk must give 4 convolution counts, each from 1 to the full "
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

    def variant_fields(self) -> dict:
        """The attribution fields that differ from the plain CPM (what a run key adds)."""
        return {k: getattr(self, k) for k, default in VARIANT_DEFAULTS.items()
                if getattr(self, k) != default}

    def to_dict(self) -> dict:
        """The fields as JSON values (what ``cpm_config.json`` and a saved model hold); the
        attribution fields only where they differ from the plain CPM, so the files of every
        earlier run and preset still describe their models exactly."""
        out = {**dataclasses.asdict(self), "trunk": list(self.trunk)}
        for name in VARIANT_DEFAULTS:
            if name not in self.variant_fields():
                del out[name]
        return out

    @classmethod
    def from_dict(cls, values: dict) -> CPMConfig:
        """The inverse of :meth:`to_dict`; keys this version does not know are ignored (a
        file written by a newer version still loads)."""
        if not isinstance(values, dict):
            raise ConfigError(f"a CPM configuration is a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in known})
        except TypeError as err:
            raise ConfigError(f"not a CPM configuration: {err}") from None


VARIANT_DEFAULTS = {"stage1_convs": 0, "stage1_channels": 0, "stage_beliefs": True,
                    "center_stage1": False}


NAMED_CONFIGS: dict[str, CPMConfig] = {
    # The network of the source article: 16 MPII joints, no background, no centre map.
    "source-article": CPMConfig(name="source-article"),
    # The released CPM MPII model (_trained_MPI/pose_deploy_resize.prototxt with
    # pose_iter_320000.caffemodel; the release's pose_deploy_centerMap.prototxt is the older
    # 9x9/11x11 architecture): 14 joints (head top, neck, R/L shoulder, elbow, wrist, hip,
    # knee, ankle: MPII without pelvis and thorax) + background = 15 maps, and the centre map.
    "cpm-mpii-release": CPMConfig(name="cpm-mpii-release", num_joints=14, background=True,
                                  center_map=True, center_sigma=21.0),
    # The stage experiment at CPU scale (cpm_nb.training.experiments): a 128-px crop with the
    # paper's proportions.  Stage 1 sees 62 px = 0.48 of the crop (paper: 160/368 = 0.43);
    # each later stage adds 5 x 2 x 8 = 80 px = 0.63 crops (paper: 7x7 convolutions,
    # 240/368 = 0.65).  Same structure and layer names, a shallower trunk and 3x3 stages.
    "stage-experiment": CPMConfig(name="stage-experiment", input_size=128, stages=6,
                                  width=0.25, trunk=(1, 1, 2, 2), stage_kernel=3),
}


def from_profile(profile: _config.Profile, base: str | CPMConfig | None = None,
                 **changes) -> CPMConfig:
    """The ``base`` configuration (default: the profile's own ``architecture``) scaled to a
    run profile (a resolved
    :class:`~cpm_nb.core.config.Profile`: the active one is
    :func:`cpm_nb.core.config.get_profile`, one by name
    :func:`cpm_nb.core.config.resolve_profile`).

    Takes the profile's ``input_size``, ``stages`` and ``width``; keeps the structure
    and the layer names.  A centre-map sigma scales with the input size.  Extra
    keyword arguments override fields, e.g. ``background=True``.
    """
    if not isinstance(profile, _config.Profile):
        raise ConfigError(f"from_profile needs a resolved run profile, not {profile!r}: pass "
                          "cpm_nb.core.config.get_profile() (the active one) or "
                          "resolve_profile(name) with a name of "
                          f"{', '.join(_config.profile_names())}")
    base = profile.architecture if base is None else base
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


def get_config(config: str | CPMConfig) -> CPMConfig:
    """A configuration from a name (named configuration or profile name) or itself.

    For the active profile's model use ``from_profile(cpm_nb.core.config.get_profile())``.
    """
    if config is None:
        raise ConfigError("no CPM configuration given; pass a CPMConfig or one of "
                          f"{', '.join(config_names())} (the active profile's model: "
                          "from_profile(cpm_nb.core.config.get_profile()))")
    if isinstance(config, CPMConfig):
        return config
    if config in NAMED_CONFIGS:
        return NAMED_CONFIGS[config]
    if config in _config.PROFILES:
        return from_profile(_config.resolve_profile(config))
    raise ConfigError(f"unknown CPM configuration {config!r}; valid: {', '.join(config_names())}")


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


def architecture(config: str | CPMConfig) -> list[LayerSpec]:
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
    k = cfg.stage_kernel
    last = features
    if cfg.center_stage1:
        last = add("concat_stage1", "concat", "stage1", [features, pooled_center])
    for i in range(1, cfg.stage1_convs + 1):
        last = add(f"Dconv{i}_stage1", "conv", "stage1", [last], k, 1,
                   cfg.stage1_channels or cfg.channels(STAGE_WIDTH), "relu")
    last = add("conv5_1_CPM", "conv", "stage1", [last], 1, 1, cfg.channels(STAGE1_WIDTH),
               "relu")
    beliefs = add("conv5_2_CPM", "conv", "stage1", [last], 1, 1, cfg.num_maps)
    for t in range(2, cfg.stages + 1):
        block = f"stage{t}"
        inputs = ([beliefs] if cfg.stage_beliefs else []) + [features] + (
            [pooled_center] if pooled_center else [])
        last = (add(f"concat_stage{t}", "concat", block, inputs) if len(inputs) > 1
                else inputs[0])
        for i in range(1, 6):
            last = add(f"Mconv{i}_stage{t}", "conv", block, [last], k, 1,
                       cfg.channels(STAGE_WIDTH), "relu")
        last = add(f"Mconv6_stage{t}", "conv", block, [last], 1, 1, cfg.channels(STAGE_WIDTH),
                   "relu")
        beliefs = add(f"Mconv7_stage{t}", "conv", block, [last], 1, 1, cfg.num_maps)
    return rows


def trunk_layers(cfg: CPMConfig) -> list[tuple[str, str, int, int]]:
    """The rows of :data:`TRUNK` with ``cfg.trunk`` applied: in each block the first n - 1
    convolutions and the last one stay 3x3, the others become 1x1.  Every layer, name and
    width stays; only the receptive field shrinks (a 1x1 convolution adds none).  A
    trunk of 3x3 layers alone, as shallow as the field requires, learns far slower:
    stage 1 of (1, 1, 2, 2) without the 1x1 layers reached 2 % PCKh@0.5 in 400 steps
    where the full trunk reached 59 % (cpu profile, 2 CPU cores)."""
    blocks, current = [], []
    for row in TRUNK:
        if row[1] == "conv":
            current.append(row)
        else:
            blocks.append((current, row))
            current = []
    blocks.append((current, None))
    rows = []
    for (convs, pool), n in zip(blocks, cfg.trunk):
        wide = {r[0] for r in convs[:n - 1] + convs[-1:]}
        rows += [r if r[0] in wide else (r[0], r[1], 1, r[3]) for r in convs]
        if pool is not None:
            rows.append(pool)
    return rows


def count_params(config: str | CPMConfig) -> int:
    """Trainable parameters of the network (analytic; equals Keras' ``count_params``)."""
    return sum(r.params for r in architecture(config))


def flops_per_image(config: str | CPMConfig) -> int:
    """Forward-pass FLOPs for one image (2 x multiply-accumulates of all convolutions)."""
    return sum(r.flops for r in architecture(config))


def block_summary(config: str | CPMConfig) -> list[dict]:
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


def format_layer_table(config: str | CPMConfig) -> str:
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


def receptive_field_chain(config: str | CPMConfig,
                          stage: int | None = None) -> list[Layer]:
    """The convolutions and pools on the longest path from the image to stage ``stage``.

    Stage t >= 2 sees the beliefs of stage t-1 (whose field already contains the
    trunk's), so the longest path runs trunk -> stage 1 -> stage 2 -> ... -> stage t;
    without the beliefs (``stage_beliefs=False``) it runs trunk -> stage t.
    The pooled centre map (kernel 9, stride 8) is a much shorter path.
    """
    cfg = get_config(config)
    stage = cfg.stages if stage is None else stage
    if not 1 <= stage <= cfg.stages:
        raise ConfigError(f"stage must be in 1..{cfg.stages} for {cfg.name!r}, got {stage}")
    first = 1 if cfg.stage_beliefs or stage == 1 else stage  # without beliefs: trunk -> t
    keep = {"trunk"} | {f"stage{t}" for t in range(first, stage + 1)}
    return [Layer(r.name, r.kernel, r.stride) for r in architecture(cfg)
            if r.block in keep and r.kind in ("conv", "maxpool")]


def receptive_field_rows(config: str | CPMConfig) -> list[FieldRow]:
    """Receptive field and jump after every layer of the longest path (for plots)."""
    return receptive_fields(receptive_field_chain(config))


def stage_receptive_fields(config: str | CPMConfig) -> list[int]:
    """Receptive field (input px) of one belief-map cell of each stage, stage 1 first."""
    cfg = get_config(config)
    return [receptive_fields(receptive_field_chain(cfg, t))[-1].receptive_field
            for t in range(1, cfg.stages + 1)]


def describe(config: str | CPMConfig) -> dict:
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
