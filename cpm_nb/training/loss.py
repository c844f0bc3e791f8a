"""The CPM loss: intermediate supervision, one Keras loss, one scale.

Every stage ``t`` of the network predicts belief maps ``b_t`` ([B, M, M, J]); all
stages are compared with the *same* targets ``b*``, Gaussian maps rendered
in-graph (:func:`cpm_nb.model.heatmaps.render`) from the batch's joints and visibility.
Per image and stage the loss is Caffe's ``EuclideanLoss``, the one the released
CPM was trained with::

    L_t = 1/2 * sum over cells z and joints p of (b_t^p(z) - b*^p(z))^2

averaged over the batch; the training objective sums the stages and adds L2
weight decay on the kernels (``weight_decay / 2 * sum ||W||^2``, Keras
``L2(weight_decay / 2)`` regularizers on every convolution)::

    objective = sum_t L_t + weight_decay / 2 * sum ||W||^2

With this scale the paper's learning rate (8e-5 for SGD) and weight decay (5e-4)
apply unchanged.  ``L_t = M*M*J/2 * MSE_t``: the per-stage mean squared error is
``L_t`` divided by :func:`mse_scale`.

Keras applies :class:`CPMLoss` to every output of the model (one per stage) and
sums the results; the logs show each stage's term as ``<output name>_loss``.
The ground truth ``y`` of a batch is packed as one float32 tensor ``[B, 48]``:
the 16 joints' ``(x, y)`` in input pixels, then their visibility (0 = not
annotated, 1 = occluded, 2 = visible), see :mod:`cpm_nb.model.targets`.

:class:`CPMLoss` is registered with Keras (``cpm_nb>CPMLoss``), so a model compiled with
it saves and reloads with ``keras.saving.load_model`` once this module is imported.
"""

from __future__ import annotations

import numpy as np

from cpm_nb.core import skeleton
from cpm_nb.core.config import OUTPUT_STRIDE
from cpm_nb.core.runtime import import_keras
from cpm_nb.model import heatmaps
from cpm_nb.model.targets import unpack_targets

keras = import_keras()  # this module is imported only where a model trains
ops = keras.ops

NUM_JOINTS = skeleton.NUM_JOINTS


def map_loss(maps, targets):
    """Per image: half the summed squared error of belief ``maps`` against ``targets``
    (``[B, M, M, K]`` each; ``keras.ops``, any backend) -- the one definition of the loss."""
    diff = ops.cast(maps, "float32") - ops.cast(targets, "float32")
    return 0.5 * ops.sum(ops.square(diff), axis=(1, 2, 3))


def mse_scale(map_size: int, maps: int = NUM_JOINTS) -> float:
    """``L_t / MSE_t``: half the number of values in one image's belief maps."""
    return 0.5 * map_size * map_size * maps


@keras.saving.register_keras_serializable(package="cpm_nb")
class CPMLoss(keras.losses.Loss):
    """Half the summed squared error of one stage's maps against the Gaussian targets
    rendered from the packed joints (see the module docstring)."""

    def __init__(self, input_size: int, sigma: float, background: bool = False,
                 stride: int = OUTPUT_STRIDE, name: str = "cpm_loss", **kwargs):
        super().__init__(name=name, reduction="sum_over_batch_size", **kwargs)
        self.input_size, self.sigma = int(input_size), float(sigma)
        self.background, self.stride = bool(background), int(stride)

    def call(self, y_true, y_pred):
        joints, vis = unpack_targets(ops.cast(y_true, "float32"))
        targets = heatmaps.render(joints, vis, self.input_size, self.sigma, self.stride,
                                  self.background)
        return map_loss(y_pred, targets)

    def get_config(self):
        return {"input_size": self.input_size, "sigma": self.sigma,
                "background": self.background, "stride": self.stride, "name": self.name}


def stage_losses_numpy(outputs, joints, visibility, input_size: int, sigma: float,
                       background: bool = False) -> list[float]:
    """NumPy reference: the batch-mean loss ``L_t`` of every stage (tested equal to Keras')."""
    targets = heatmaps.render_numpy(joints, visibility, input_size, sigma,
                                    background=background)
    return [float(np.mean(0.5 * np.sum((np.asarray(o, np.float64) - targets) ** 2,
                                       axis=(1, 2, 3)))) for o in outputs]
