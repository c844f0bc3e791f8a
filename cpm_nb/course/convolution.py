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


def learn_kernel(image: np.ndarray, target_kernel: np.ndarray, steps: int = 2000,
                 learning_rate: float = 0.1, epochs: int = 40):
    """Fit a single 3x3 ``Conv2D`` (no bias) so that it maps ``image`` to its response
    under ``target_kernel``; returns (learned kernel, loss per epoch).

    The image is standardised (zero mean, unit variance) first: neighbouring pixels of
    a photo are strongly correlated, which makes this least-squares problem badly
    conditioned; Adam with a cosine-decayed learning rate still gets there.
    """
    from cpm_nb.core.runtime import import_keras

    keras = import_keras()
    import tensorflow as tf

    x = ((image - image.mean()) / image.std()).astype(np.float32)[None, :, :, None]
    k = target_kernel.shape[0]
    y = tf.nn.conv2d(x, target_kernel[:, :, None, None].astype(np.float32), 1, "VALID")
    model = keras.Sequential([keras.Input((None, None, 1)),
                              keras.layers.Conv2D(1, k, use_bias=False, name="learned")])
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    model.compile(keras.optimizers.Adam(schedule), "mse")
    data = tf.data.Dataset.from_tensors((x, y)).repeat(steps // epochs)
    history = model.fit(data, epochs=epochs, verbose=0, shuffle=False)
    return model.get_layer("learned").kernel.numpy()[:, :, 0, 0], np.array(history.history["loss"])


def shift_similarity(feature: np.ndarray, pool: int, shifts) -> np.ndarray:
    """How much of a (max-pooled) feature map survives shifting the input.

    For each shift s (pixels, to the right), compares ``max_pool(feature)`` with
    ``max_pool(feature shifted by s)`` on the common area: the Pearson correlation
    of the two pooled maps.  ``pool=1`` means no pooling.
    """

    def pooled(f):
        if pool == 1:
            return f
        h, w = (f.shape[0] // pool) * pool, (f.shape[1] // pool) * pool
        return f[:h, :w].reshape(h // pool, pool, w // pool, pool).max(axis=(1, 3))

    width = feature.shape[1] - max(shifts)
    base = pooled(feature[:, :width])
    out = []
    for s in shifts:
        moved = pooled(feature[:, s:s + width])
        out.append(np.corrcoef(base.ravel(), moved.ravel())[0, 1])
    return np.array(out)
