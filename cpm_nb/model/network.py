"""The CPM as a Keras object: a functional model that knows its configuration.

:class:`CPM` is a ``keras.Model`` (a functional graph of built-in layers) whose
:class:`~cpm_nb.model.architecture.CPMConfig` is part of the model: ``model.cpm_config``,
and in ``get_config()`` next to the graph.  A saved ``model.keras`` therefore describes
itself, and ``keras.saving.load_model`` -- in safe mode too: no Lambda layer, no stored
Python -- gives back a :class:`CPM` with its configuration.  The class is registered with
Keras as ``cpm_nb>CPM``; Keras finds it once this module is imported (``import
cpm_nb.model.network``, or ``from cpm_nb import CPM``).

:func:`cpm_nb.model.cpm.build_cpm` builds one from the layer table; a converted Caffe
network (:mod:`cpm_nb.caffe`) becomes one with :func:`as_cpm`.  :func:`make_predict_fn`
compiles its forward pass (:meth:`CPM.belief_maps` keeps one with the model).
:func:`load_keras` is the one loader of ``.keras`` files: a model saved before the class
existed (a plain functional model, as the run folders and converted models of earlier
versions hold) becomes a :class:`CPM` with the configuration its run folder's
``cpm_config.json`` gives.  Variable names (``conv1_1/kernel``, ...) are those of the
layers, so checkpoints written by name keep fitting.

Importing this module imports Keras: it is imported where a model is built or loaded.
"""

from __future__ import annotations

import functools
import zipfile

import numpy as np

from cpm_nb.core.errors import ModelError
from cpm_nb.core.runtime import import_keras
from cpm_nb.model.architecture import CPMConfig
from cpm_nb.model.inputs import model_inputs

keras = import_keras()


@keras.saving.register_keras_serializable(package="cpm_nb")
class CPM(keras.Model):
    """A Convolutional Pose Machine: ``CPM(inputs, outputs, cpm_config=...)`` over a
    functional graph (inputs: the image, and the centre map when the configuration has
    one; outputs: one belief-map tensor per stage).

    ``cpm_config``: a :class:`CPMConfig` (or its dict, as ``get_config`` stores it).  The
    constructor keeps Keras' functional signature (``*args, **kwargs``), so Keras
    serialises the graph itself and revives the class from it.
    """

    def __init__(self, *args, cpm_config: CPMConfig | dict | None = None, **kwargs):
        if cpm_config is None:
            raise ModelError("a CPM needs its configuration: CPM(inputs, outputs, "
                             "cpm_config=CPMConfig(...))")
        config = (cpm_config if isinstance(cpm_config, CPMConfig)
                  else CPMConfig.from_dict(cpm_config))
        super().__init__(*args, **kwargs)
        self._cpm_config = config
        self._belief_fn = None

    @property
    def cpm_config(self) -> CPMConfig:
        """The configuration the network was built for."""
        return self._cpm_config

    def get_config(self) -> dict:
        return {**super().get_config(), "cpm_config": self._cpm_config.to_dict()}

    def belief_maps(self, images) -> list:
        """Every stage's belief maps (NumPy ``[B, M, M, maps]``, stage 1 first) for a batch
        of RGB crops, through :func:`make_predict_fn`, compiled on first use and kept with
        the model (a new function per call would be traced again)."""
        if self._belief_fn is None:
            self._belief_fn = make_predict_fn(self)
        return self._belief_fn(images)


def _call_inference(model, *xs):
    return model(list(xs) if len(xs) > 1 else xs[0], training=False)


def make_predict_fn(model, jit_compile: bool | None = None):
    """A compiled inference function ``images -> list of per-stage belief maps`` (NumPy) of a
    :class:`CPM` (:meth:`CPM.belief_maps` keeps one with the model).

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
    from cpm_nb.core.runtime import keras_backend

    cfg = ensure_cpm(model).cpm_config
    backend = keras_backend()
    n_inputs = len(model.inputs)

    if backend == "tensorflow":
        import tensorflow as tf

        if jit_compile is None:
            jit_compile = bool(tf.config.list_physical_devices("GPU"))
        specs = [tf.TensorSpec([None, cfg.input_size, cfg.input_size, 3], tf.float32)]
        if n_inputs == 2:
            specs.append(tf.TensorSpec([None, cfg.input_size, cfg.input_size, 1], tf.float32))

        # A partial, not a closure: TensorFlow counts traces per code object, so the one
        # trace each new model needs would add up to a false "retracing" warning.
        forward = tf.function(functools.partial(_call_inference, model),
                              input_signature=specs, jit_compile=jit_compile)

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


def ensure_cpm(model, what: str = "the model") -> CPM:
    """``model`` when it is a :class:`CPM`; a one-line :class:`ModelError` otherwise."""
    if isinstance(model, CPM):
        return model
    raise ModelError(f"{what} is a plain Keras model ({type(model).__name__}), not a CPM: build "
                     "it with cpm_nb.model.cpm.build_cpm, or load it with load_keras or "
                     "cpm_nb.training.runs.load_run")


def _shape(tensor) -> tuple:
    return tuple(None if d is None else int(d) for d in tensor.shape)


def mismatches(model, config: CPMConfig) -> list[str]:
    """What ``config`` says that the network's inputs and outputs contradict, as
    ``"<what> <config> (network: <value>)"`` (empty: they fit)."""
    inputs = list(model.inputs)
    outputs = list(model.outputs) if isinstance(model.outputs, (list, tuple)) \
        else [model.outputs]
    size = _shape(inputs[0])[1]
    expect = {"input_size": size, "stages": len(outputs),
              "num_joints + background": _shape(outputs[0])[-1],
              "centre-map input": len(inputs) == 2}
    have = {"input_size": config.input_size, "stages": config.stages,
            "num_joints + background": config.num_maps,
            "centre-map input": config.center_map}
    return [f"{k} {have[k]} (network: {expect[k]})" for k in expect if have[k] != expect[k]]


def as_cpm(model, config: CPMConfig) -> CPM:
    """A :class:`CPM` over the graph (and the very layers and weights) of the functional
    ``model``, with ``config``; ``model`` itself when it is one already.  A configuration
    that contradicts the network is a :class:`ModelError`."""
    if isinstance(model, CPM):
        return model
    bad = mismatches(model, config)
    if bad:
        raise ModelError(f"the configuration {config.name!r} describes another network than "
                         f"{model.name!r}: " + ", ".join(bad))
    inputs = list(model.inputs)
    return CPM(inputs if len(inputs) > 1 else inputs[0], list(model.outputs),
               cpm_config=config, name=model.name)


def load_keras(model_file, config: CPMConfig | None = None):
    """Load a ``.keras`` file in Keras safe mode (no stored Python is run), uncompiled.

    A :class:`CPM` comes back as itself.  A model saved before the class existed (a plain
    functional model) becomes one with ``config`` (its run folder's ``cpm_config.json``);
    without a configuration it is returned as Keras loaded it, for the caller to check.
    A file that is not a Keras model, or that safe mode refuses, is a one-line
    :class:`ModelError`.
    """
    from cpm_nb.core.runtime import quiet_native_stderr

    if not zipfile.is_zipfile(model_file):
        raise ModelError(f"{model_file} is not a Keras model file (.keras files are zip "
                         "archives)")
    try:
        with quiet_native_stderr():
            model = keras.saving.load_model(model_file, safe_mode=True, compile=False)
    except Exception as err:  # Keras raises many kinds (ValueError, TypeError, KeyError...)
        reason = " ".join(str(err).split())[:300]
        raise ModelError(f"cannot load {model_file} in Keras safe mode: "
                         f"{type(err).__name__}: {reason}") from None
    if config is not None and not isinstance(model, CPM):
        try:
            return as_cpm(model, config)
        except ModelError as err:
            raise ModelError(f"{model_file}: {err}") from None
    return model

