"""Receptive-field arithmetic for stacks of convolutions and poolings.

For a chain of layers, each with kernel size ``k``, stride ``s`` and dilation
``d``, the *jump* ``j`` (input pixels between neighbouring output cells) and
the receptive field ``r`` (input pixels one output cell sees) grow as

    k_eff = d * (k - 1) + 1
    r_out = r_in + (k_eff - 1) * j_in
    j_out = j_in * s

starting from r = j = 1 at the input.  Notebook 01 checks this against a
gradient-based measurement; notebook 04 uses it for every CPM stage.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Layer:
    """One layer as the receptive-field calculator sees it."""

    name: str
    kernel: int
    stride: int = 1
    dilation: int = 1

    @property
    def effective_kernel(self) -> int:
        return self.dilation * (self.kernel - 1) + 1


@dataclass(frozen=True)
class FieldRow:
    """The receptive field and jump after one layer."""

    name: str
    kernel: int
    stride: int
    dilation: int
    receptive_field: int
    jump: int


def receptive_fields(layers: list[Layer], start_field: int = 1, start_jump: int = 1) -> list[FieldRow]:
    """Receptive field and jump after each layer of ``layers`` (applied in order)."""
    field, jump = start_field, start_jump
    rows = []
    for layer in layers:
        field += (layer.effective_kernel - 1) * jump
        jump *= layer.stride
        rows.append(FieldRow(layer.name, layer.kernel, layer.stride, layer.dilation, field, jump))
    return rows


def receptive_field(layers: list[Layer]) -> int:
    """The receptive field, in input pixels, of one output cell of ``layers``."""
    return receptive_fields(layers)[-1].receptive_field if layers else 1


def layers_from_keras(model) -> list[Layer]:
    """The chain of Conv2D / pooling layers of a sequential-style Keras model, in order."""
    layers = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("Conv2D", "DepthwiseConv2D"):
            layers.append(Layer(layer.name, layer.kernel_size[0], layer.strides[0],
                                layer.dilation_rate[0]))
        elif kind in ("MaxPooling2D", "AveragePooling2D"):
            layers.append(Layer(layer.name, layer.pool_size[0], layer.strides[0]))
    return layers


def empirical_receptive_field(model, input_size: int, channels: int = 1) -> int:
    """Measure the receptive field of the centre output cell with a gradient.

    Differentiates the centre output value (summed over channels) with respect to
    the input and returns the side of the bounding box of the non-zero gradient.
    Max pooling passes the gradient only to each window's maximum, which would hide
    part of the field, so the measurement runs on a copy of ``model`` whose
    max-pools are average-pools of the same geometry.  Weights are used as they are:
    give the model positive weights (e.g. ones) to avoid accidental cancellation,
    and no ReLU that could cut the gradient.
    """
    import numpy as np
    import tensorflow as tf

    probe = _with_average_pooling(model)
    x = tf.Variable(tf.random.uniform((1, input_size, input_size, channels), 0.5, 1.0, seed=0))
    with tf.GradientTape() as tape:
        y = probe(x)
        cy, cx = y.shape[1] // 2, y.shape[2] // 2
        value = tf.reduce_sum(y[0, cy, cx, :])
    grad = np.abs(tape.gradient(value, x).numpy()[0].sum(axis=-1))
    rows = np.flatnonzero(grad.sum(axis=1) > 0)
    cols = np.flatnonzero(grad.sum(axis=0) > 0)
    return int(max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1)


def _with_average_pooling(model):
    """A copy of a Sequential ``model`` with MaxPooling2D replaced by AveragePooling2D."""
    import keras

    def clone(layer):
        if isinstance(layer, keras.layers.MaxPooling2D):
            return keras.layers.AveragePooling2D(layer.pool_size, layer.strides, layer.padding,
                                                 name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    probe = keras.models.clone_model(model, clone_function=clone)
    probe.set_weights(model.get_weights())
    return probe
