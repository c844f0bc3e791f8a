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

**Porting the released weights** (:mod:`cpm_nb.caffe.convert`, ``cpm-nb convert-caffe``):
the Caffe model expects BGR channel order, so ``conv1_1``'s input-channel axis is
reversed; Caffe kernels are ``[out, in, kh, kw]`` and Keras kernels ``[kh, kw, in, out]``.

The configurations, the layer table, parameter/FLOP counts and receptive fields are
computed analytically in :mod:`cpm_nb.model.architecture` (re-exported here); this module
builds and runs the Keras model.  Importing it is cheap (no TensorFlow): Keras is
imported when a model is built.
"""

from __future__ import annotations

import re

import numpy as np

from cpm_nb.core.errors import DataError, ModelError
from cpm_nb.model.architecture import (
    CPMConfig,
    architecture,
    get_config,
    stage_receptive_fields,
)

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


def center_maps(batch: int, config: str | CPMConfig) -> np.ndarray:
    """``[batch, S, S, 1]`` centre maps at the crop centre for ``config``'s input."""
    cfg = get_config(config)
    one = center_map(cfg.input_size, cfg.center_sigma)
    return np.broadcast_to(one[None, :, :, None], (batch, *one.shape, 1)).copy()


# --- the Keras model ---------------------------------------------------------------------


def build_cpm(config: str | CPMConfig, seed: int = 0,
              kernel_initializer: str = "he_normal", weight_decay: float = 0.0):
    """Build the CPM as a Keras functional model (Keras layers only: any backend).

    ``config``: a :class:`CPMConfig`, the name of a named configuration
    (``source-article``, ``cpm-mpii-release``) or of a profile (``fast``, ``cpu``,
    ``gpu``; for the active profile pass ``from_profile(cpm_nb.core.config.get_profile())``).
    Weights: kernels from ``kernel_initializer`` (a Keras initializer name, default
    He-normal), seeded per layer from ``seed``; zero biases.  ``weight_decay > 0``
    adds the L2 loss ``weight_decay / 2 * ||W||^2`` of every kernel to ``model.losses``
    (Caffe's ``weight_decay``, see :mod:`cpm_nb.training.loss`).  The model has
    ``model.cpm_config``; inputs/outputs as described in the module docstring.
    """
    from cpm_nb.core.runtime import import_keras

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


def model_inputs(images, config: str | CPMConfig):
    """What the model takes for a batch of RGB ``images``: the images, plus centre maps
    at the crop centre when the configuration has a centre-map input (NumPy)."""
    cfg = get_config(config)
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[1:] != (cfg.input_size, cfg.input_size, 3):
        raise DataError(f"expected RGB images [B, {cfg.input_size}, {cfg.input_size}, 3], "
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
    from cpm_nb.core.runtime import import_keras, keras_backend

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
    from cpm_nb.core.runtime import import_keras, keras_backend

    keras = import_keras()
    ops = keras.ops
    cfg = config_of(model)
    x = model_inputs(images, cfg)
    targets = ops.convert_to_tensor(np.asarray(targets, np.float32))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]

    def total(outputs):
        from cpm_nb.training.loss import map_loss

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
        raise ModelError(f"gradient magnitudes need the TensorFlow or JAX backend, not "
                         f"{keras_backend()!r}: set KERAS_BACKEND=tensorflow or jax")
    return {c.name: float(np.mean(np.abs(np.asarray(g)))) for c, g in zip(convs, grads)}


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
