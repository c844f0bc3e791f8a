"""Convolution and pooling written out in NumPy, for notebook 01.

These are the clear references that ``tf.nn.conv2d`` and Keras ``Conv2D`` /
``MaxPooling2D`` are checked against.  Deep-learning "convolution" is
cross-correlation: the kernel is not flipped.
"""

from __future__ import annotations

import numpy as np

SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
SOBEL_Y = SOBEL_X.T.copy()
BOX_BLUR = np.full((3, 3), 1 / 9, dtype=np.float32)


def output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Output length of a convolution: floor((n + 2p - d(k-1) - 1) / s) + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after): output = ceil(n / s)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv2d(image: np.ndarray, kernels: np.ndarray, stride: int = 1, padding: str = "valid") -> np.ndarray:
    """2-D cross-correlation with loops over output pixels.

    ``image`` is (H, W, C_in), ``kernels`` is (k, k, C_in, C_out) as in
    ``tf.nn.conv2d``; ``padding`` is 'valid' or 'same' (TensorFlow's convention).
    Returns (H_out, W_out, C_out).
    """
    image = np.asarray(image, dtype=np.float64)
    k = kernels.shape[0]
    if padding == "same":
        (top, bottom), (left, right) = (same_padding(n, k, stride) for n in image.shape[:2])
        image = np.pad(image, ((top, bottom), (left, right), (0, 0)))
    elif padding != "valid":
        raise ValueError(f"padding must be 'valid' or 'same', not {padding!r}")
    h_out = output_size(image.shape[0], k, stride)
    w_out = output_size(image.shape[1], k, stride)
    out = np.zeros((h_out, w_out, kernels.shape[3]))
    for i in range(h_out):
        for j in range(w_out):
            patch = image[i * stride:i * stride + k, j * stride:j * stride + k, :]
            out[i, j] = np.tensordot(patch, kernels, axes=([0, 1, 2], [0, 1, 2]))
    return out


def max_pool(image: np.ndarray, size: int = 2, stride: int | None = None) -> np.ndarray:
    """Max pooling with 'valid' windows over (H, W, C)."""
    stride = stride or size
    h_out = output_size(image.shape[0], size, stride)
    w_out = output_size(image.shape[1], size, stride)
    out = np.empty((h_out, w_out, image.shape[2]), dtype=image.dtype)
    for i in range(h_out):
        for j in range(w_out):
            out[i, j] = image[i * stride:i * stride + size, j * stride:j * stride + size].max(axis=(0, 1))
    return out


def sample_photo(size: int | None = None) -> np.ndarray:
    """The grayscale portrait photo that ships with matplotlib (``grace_hopper.jpg``),
    as float32 in [0, 1], optionally resized to ``size`` x ``size``.  Nothing is downloaded."""
    import matplotlib.cbook as cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("L")
        if size:
            img = img.resize((size, size), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32) / 255.0
