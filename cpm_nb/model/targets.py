"""The ground truth of a training batch, packed: one float32 row of 48 numbers per person.

Keras hands a loss one ``y_true`` tensor per output, so the joints and their visibility
travel together: a row holds the 16 joints' ``(x, y)`` in input pixels (0-based crop
coordinates), then their visibility (0 = not annotated, 1 = occluded, 2 = visible).  The
input paths pack (:mod:`cpm_nb.data.batches`); the loss unpacks and renders the Gaussian
targets in the graph (:class:`cpm_nb.training.loss.CPMLoss`).
"""

from __future__ import annotations

import numpy as np

from cpm_nb.core.skeleton import NUM_JOINTS

PACKED_WIDTH = 3 * NUM_JOINTS  # 32 coordinates, then 16 visibilities


def pack_targets_numpy(joints, visibility) -> np.ndarray:
    """``[B, 16, 2]`` joints and ``[B, 16]`` visibility -> the packed ``[B, 48]`` target."""
    joints = np.asarray(joints, np.float32).reshape(-1, 2 * NUM_JOINTS)
    return np.concatenate([joints, np.asarray(visibility, np.float32)], axis=-1)


def unpack_targets(packed):
    """The inverse of :func:`pack_targets_numpy` with ``keras.ops`` (any backend, in a graph):
    ``(joints [B, 16, 2], visibility [B, 16])``."""
    from cpm_nb.core.runtime import import_keras

    ops = import_keras().ops
    joints = ops.reshape(packed[:, : 2 * NUM_JOINTS], (-1, NUM_JOINTS, 2))
    return joints, packed[:, 2 * NUM_JOINTS:]
