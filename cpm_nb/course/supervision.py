"""Intermediate supervision, measured: the gradient every convolution gets from the loss.

CPM supervises every stage, not only the last (Wei et al., section 3.3): the loss of
stage 1 reaches the trunk through one stage's layers instead of all of them, so the
gradients at the trunk do not vanish in a deep network.  :func:`conv_gradient_magnitudes`
measures that on one batch: the mean magnitude of the gradient of each convolution's
kernel, with the loss of every stage (CPM) or of the last one only (notebook 04).
"""

from __future__ import annotations

import numpy as np

from cpm_nb.core.errors import ModelError
from cpm_nb.model.inputs import model_inputs


def conv_gradient_magnitudes(model, images, targets, intermediate: bool = True) -> dict[str, float]:
    """Mean |gradient| of each convolution kernel for one batch (TensorFlow or JAX backend).

    The loss is the sum of all stage losses (``intermediate=True``, intermediate
    supervision as in CPM) or only the last stage's loss.  Returns ``{layer: mean
    |dL/dW|}`` in layer order (trunk first).
    """
    from cpm_nb.core.runtime import import_keras, keras_backend
    from cpm_nb.model.network import ensure_cpm
    from cpm_nb.training.loss import map_loss

    keras = import_keras()
    ops = keras.ops
    x = model_inputs(images, ensure_cpm(model).cpm_config)
    targets = ops.convert_to_tensor(np.asarray(targets, np.float32))
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]

    def total(outputs):
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
