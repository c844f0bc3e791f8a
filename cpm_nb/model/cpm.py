"""The Convolutional Pose Machine: the Keras builder, its inputs and its compiled forward pass.

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
the person's centre, see :mod:`cpm_nb.model.inputs`.  The Caffe deploy file feeds one
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

**Porting the released weights** (:mod:`cpm_nb.caffe.convert`, ``cpm-nb convert-caffe``):
the Caffe model expects BGR channel order, so ``conv1_1``'s input-channel axis is
reversed; Caffe kernels are ``[out, in, kh, kw]`` and Keras kernels ``[kh, kw, in, out]``.

The configurations, the layer table, parameter/FLOP counts and receptive fields are
computed analytically in :mod:`cpm_nb.model.architecture`; this module builds the network
as a :class:`~cpm_nb.model.network.CPM` (a Keras model that carries its configuration,
with its compiled forward pass :func:`~cpm_nb.model.network.make_predict_fn`).  Importing
it is cheap (no TensorFlow): Keras is imported when a model is built.
"""

from __future__ import annotations

import re

import numpy as np

from cpm_nb.model.architecture import (
    CPMConfig,
    architecture,
    get_config,
    stage_receptive_fields,
)

# --- the Keras model ---------------------------------------------------------------------


def build_cpm(config: str | CPMConfig, seed: int = 0,
              kernel_initializer: str = "he_normal", weight_decay: float = 0.0):
    """Build the CPM as a :class:`~cpm_nb.model.network.CPM` (a functional model of built-in
    Keras layers: any backend, loads in safe mode).

    ``config``: a :class:`CPMConfig`, the name of a named configuration
    (``source-article``, ``cpm-mpii-release``) or of a profile (``fast``, ``cpu``,
    ``gpu``; for the active profile pass ``from_profile(cpm_nb.core.config.get_profile())``).
    Weights: kernels from ``kernel_initializer`` (a Keras initializer name, default
    He-normal), seeded per layer from ``seed``; zero biases.  ``weight_decay > 0``
    adds the L2 loss ``weight_decay / 2 * ||W||^2`` of every kernel to ``model.losses``
    (Caffe's ``weight_decay``, see :mod:`cpm_nb.training.loss`).  The model's configuration
    is ``model.cpm_config``; inputs/outputs as described in the module docstring.
    """
    from cpm_nb.core.runtime import import_keras
    from cpm_nb.model.network import CPM

    keras = import_keras()
    cfg = get_config(config)
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
    return CPM(inputs if len(inputs) > 1 else inputs[0], outputs, cpm_config=cfg,
               name=re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.name))


def measure_receptive_field(config: str | CPMConfig, stage: int = 1,
                            seed: int = 0) -> int:
    """Measure stage ``stage``'s receptive field with a gradient (TensorFlow backend).

    Builds a thin copy of the network (width 1/8; the field does not depend on the
    width) on a crop large enough to hold the computed field, sets every kernel
    positive and ``conv1_1``'s bias to 1 (so no ReLU cuts the signal and nothing
    cancels), and returns the side of the box of input pixels whose gradient on the
    centre belief cell is non-zero.  Max-pooling passes the gradient to one pixel per
    window only, so the measurement may fall a few pixels short of the computed field.
    """
    from cpm_nb.core.runtime import import_keras

    keras = import_keras()
    import tensorflow as tf

    cfg = get_config(config)
    field = stage_receptive_fields(cfg.replace(stages=stage))[-1]
    size = -(-(field + 24) // 8) * 8
    cfg = cfg.replace(name="rf-probe", input_size=size, stages=stage, width=0.125,
                      center_map=False, center_stage1=False)
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
