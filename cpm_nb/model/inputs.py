"""What a CPM takes: a batch of RGB crops and, for the released models' configuration, the
centre map.

The Caffe deploy file of the released models feeds one 4-channel blob (image + centre
map); a cpm-nb model takes the same as two named inputs, ``image`` ``[B, S, S, 3]`` (RGB
0..255) and ``center_map`` ``[B, S, S, 1]``: a Gaussian (peak 1, sigma 21 px at S = 368)
at the person's centre, which every cpm-nb crop puts in the middle
(:func:`center_map`).  :func:`model_inputs` makes what a model of a configuration takes
from images alone.
"""

from __future__ import annotations

import numpy as np

from cpm_nb.core.errors import DataError
from cpm_nb.model.architecture import CPMConfig, get_config


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
