"""Gaussian confidence maps (the CPM training targets) and their decoding.

Encoding
--------
For each joint ``p = (x, y)`` (0-based input pixels) the target belief map is an
unnormalised 2-D Gaussian sampled at the centres of the output grid::

    b(z) = exp(-||z - p||^2 / (2 sigma^2))        (peak value 1 at z = p)

with ``sigma`` in *input* pixels.  A missing joint (visibility 0) gets an
all-zero map.  An optional background channel ``1 - max_j b_j(z)`` is appended
last, as in the released CPM models (their 15th / 17th channel).

Grid convention (shared by the whole project, see ``cpm_nb.core.config``)
---------------------------------------------------------------------
Input pixel (row i, col j) has its centre at input coordinate (x=j, y=i).
Output cell ``c`` (0-based) of a stride-``s`` map pools input pixels
``c*s .. c*s + s-1``, so its centre is at input coordinate::

    x = c * s + (s - 1) / 2        (stride 8: c * 8 + 3.5)

This is also the convention of the released CPM data layer
(``start = stride/2 - 0.5``).  A joint exactly at a cell centre therefore gives a
map whose maximum, 1.0, sits on that cell with symmetric neighbours; decoding
maps a cell index back through the same formula, so encode -> decode is unbiased.

Two implementations produce identical maps (within 1e-5):

* :func:`render_numpy` -- the plain NumPy reference (explicit 2-D distances);
* :func:`render` -- batched ``keras.ops`` (no ``tf.*``), usable inside a
  ``tf.data`` map, a ``tf.function``/``jax.jit`` or a model, on any device and
  any Keras backend.  It uses the separability of the Gaussian
  (``exp(-dx^2/2s^2) * exp(-dy^2/2s^2)``), so it costs ``O(B*J*M)`` exponentials.

``sigma`` is always given by the caller (a profile's ``sigma``, or a training
configuration's; ``gpu``: 7 px at a 368-px input, i.e. 0.875 output cells, the value
of the released CPM training prototxt).

Decoding
--------
:func:`decode` takes maps ``[B, M, M, J]`` and returns joints in input pixels and
a per-joint confidence (the peak value).  The integer argmax is refined to sub-cell
precision along x and y separately from the two neighbours ``l, c, r`` of the peak:

* ``"quarter"`` -- shift by a quarter cell towards the larger neighbour
  (the Stacked Hourglass / SimpleBaseline post-processing);
* ``"quadratic"`` -- vertex of the parabola through ``(l, c, r)``:
  ``0.5 (l - r) / (l - 2c + r)``, clipped to half a cell; biased towards the cell
  centre when sigma is small compared with the stride;
* ``"gaussian"`` (default) -- the same parabola fitted to ``log`` values
  (values clamped at 1e-10): exact for an isolated Gaussian target, since the
  log of a Gaussian is a parabola (the idea behind DARK, Zhang et al. 2020).
  With additive noise on the maps (sigma 7 px, noise sd up to 0.1) it stayed the
  most accurate of the three in our round-trip checks;
* ``None`` / ``"none"`` -- the cell centre of the argmax.

:func:`to_original` maps input-pixel coordinates back to the original image
(1-based MATLAB pixels) with ``inv(M)`` of the 3x3 crop matrix.

Resampling
----------
:func:`upsample` brings maps from the grid to input pixels (figures, and the released
models' decoding), interpolating between the cell centres of the grid convention above:
``"bilinear"`` or ``"bicubic"`` (Keys, a = -0.5), each pixel a weighted sum of the cells
within the kernel's reach, the weights of cells beyond the map's edge left out and the
rest renormalised -- so values are constant (bilinear) beyond the outer centres.  This is
the convention of PIL's and MATLAB's ``imresize`` for an integer factor.  It is one
matrix per axis (:func:`upsample_weights`); :func:`upsample_numpy` is the per-pixel
reference it is tested against.
"""

from __future__ import annotations

import numpy as np

from cpm_nb.core.config import OUTPUT_STRIDE

REFINE_METHODS = ("none", "quarter", "quadratic", "gaussian")
DEFAULT_REFINE = "gaussian"


def cell_centres(map_size: int, stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """Input-pixel coordinate of the centre of each output cell: ``c * stride + (stride-1)/2``."""
    return np.arange(map_size, dtype=np.float64) * stride + (stride - 1) / 2.0


def map_size_for(input_size, stride: int = OUTPUT_STRIDE) -> tuple[int, int]:
    """(rows, cols) of the belief maps for an input of ``input_size`` pixels: an int
    (a square crop, the usual case) or (height, width)."""
    h, w = (input_size, input_size) if np.ndim(input_size) == 0 else tuple(input_size)
    if h % stride or w % stride:
        raise ValueError(f"input_size {input_size} is not a multiple of the stride {stride}")
    return int(h) // stride, int(w) // stride


# --------------------------------------------------------------------------- encoding


def _batched(joints, visibility):
    joints = np.asarray(joints, dtype=np.float64)
    visibility = np.asarray(visibility)
    single = joints.ndim == 2
    if single:
        joints, visibility = joints[None], visibility[None]
    if joints.ndim != 3 or joints.shape[-1] != 2:
        raise ValueError(f"joints must be [B, J, 2] or [J, 2], got shape {joints.shape}")
    if visibility.shape != joints.shape[:2]:
        raise ValueError(f"visibility shape {visibility.shape} does not match joints "
                         f"{joints.shape[:2]}")
    return joints, visibility, single


def render_numpy(joints, visibility, input_size: int, sigma: float,
                 stride: int = OUTPUT_STRIDE, background: bool = False) -> np.ndarray:
    """Gaussian target maps, NumPy reference.

    ``joints`` [B, J, 2] (x, y) in 0-based input pixels, ``visibility`` [B, J]
    (0 = missing -> all-zero map), a square input of ``input_size`` pixels
    (or a (height, width) pair, giving [B, H/stride, W/stride, J]),
    ``sigma`` in input pixels.  Returns float32
    [B, M, M, J] (+1 background channel when ``background``), M = input_size // stride.
    Unbatched [J, 2] / [J] inputs give [M, M, J(+1)].
    """
    sigma = float(sigma)
    joints, visibility, single = _batched(joints, visibility)
    mh, mw = map_size_for(input_size, stride)
    gx, gy = np.meshgrid(cell_centres(mw, stride), cell_centres(mh, stride))  # x along columns
    present = visibility > 0
    xy = np.where(present[..., None], joints, 0.0)  # missing joints may hold NaN
    dx = gx[None, :, :, None] - xy[:, None, None, :, 0]
    dy = gy[None, :, :, None] - xy[:, None, None, :, 1]
    maps = np.exp(-(dx**2 + dy**2) / (2.0 * sigma**2))
    maps = np.where(present[:, None, None, :], maps, 0.0)
    if background:
        bg = 1.0 - maps.max(axis=-1, keepdims=True)
        maps = np.concatenate([maps, bg], axis=-1)
    maps = maps.astype(np.float32)
    return maps[0] if single else maps


def render_numpy_loop(joints, visibility, input_size: int, sigma: float,
                      stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """The naive baseline: one Python iteration and one small NumPy map per person and joint.

    Same result as :func:`render_numpy` (without background); used by the benchmark.
    """
    sigma = float(sigma)
    joints, visibility, single = _batched(joints, visibility)
    mh, mw = map_size_for(input_size, stride)
    cx, cy = cell_centres(mw, stride), cell_centres(mh, stride)
    out = np.zeros((joints.shape[0], mh, mw, joints.shape[1]), np.float32)
    for b in range(joints.shape[0]):
        for j in range(joints.shape[1]):
            if visibility[b, j] <= 0:
                continue
            x, y = joints[b, j]
            gx = np.exp(-((cx - x) ** 2) / (2 * sigma**2))
            gy = np.exp(-((cy - y) ** 2) / (2 * sigma**2))
            out[b, :, :, j] = np.outer(gy, gx)
    return out[0] if single else out


def render(joints, visibility, input_size: int, sigma: float,
           stride: int = OUTPUT_STRIDE, background: bool = False):
    """Gaussian target maps with ``keras.ops`` only: the in-graph version of :func:`render_numpy`.

    Same arguments and result (a backend tensor, float32 [B, M, M, J(+1)]);
    works eagerly, inside ``tf.data``/``tf.function``, ``jax.jit`` and on GPU.
    """
    from cpm_nb.core.runtime import import_keras

    ops = import_keras().ops
    sigma = float(sigma)
    mh, mw = map_size_for(input_size, stride)
    joints = ops.cast(ops.convert_to_tensor(joints), "float32")
    visibility = ops.convert_to_tensor(visibility)
    single = len(joints.shape) == 2
    if single:
        joints, visibility = joints[None], visibility[None]
    present = ops.greater(visibility, 0)  # [B, J]
    zero = ops.zeros_like(joints[..., 0])
    x = ops.where(present, joints[..., 0], zero)  # missing joints may hold NaN
    y = ops.where(present, joints[..., 1], zero)
    half = (stride - 1) / 2.0
    cx = ops.arange(mw, dtype="float32") * float(stride) + half  # cell centres, input px
    cy = ops.arange(mh, dtype="float32") * float(stride) + half
    inv = -1.0 / (2.0 * sigma * sigma)
    gx = ops.exp(ops.square(cx[None, :, None] - x[:, None, :]) * inv)  # [B, Mw, J]
    gy = ops.exp(ops.square(cy[None, :, None] - y[:, None, :]) * inv)  # [B, Mh, J]
    gy = gy * ops.cast(present, "float32")[:, None, :]
    maps = gy[:, :, None, :] * gx[:, None, :, :]  # [B, M(rows: y), M(cols: x), J]
    if background:
        bg = 1.0 - ops.max(maps, axis=-1, keepdims=True)
        maps = ops.concatenate([maps, bg], axis=-1)
    return maps[0] if single else maps


def compiled_render(input_size: int, sigma: float, stride: int = OUTPUT_STRIDE,
                    background: bool = False):
    """:func:`render` compiled for the active backend (XLA ``tf.function`` or ``jax.jit``).

    Returns ``fn(joints, visibility) -> maps``.  (The torch backend runs eagerly.)
    """
    from cpm_nb.core.runtime import import_keras

    keras = import_keras()
    sigma = float(sigma)

    def fn(joints, visibility):
        return render(joints, visibility, input_size, sigma, stride, background)

    backend = keras.config.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, reduce_retracing=True, jit_compile=True)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


# --------------------------------------------------------------------------- decoding


def _refine_offsets(left, centre, right, method: str) -> np.ndarray:
    """Sub-cell offset in [-0.5, 0.5] from the peak value and its two neighbours."""
    if method == "quarter":
        return 0.25 * np.sign(right - left)
    if method == "gaussian":
        tiny = 1e-10
        left, centre, right = (np.log(np.maximum(v, tiny)) for v in (left, centre, right))
    denom = left - 2.0 * centre + right
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (left - right) / denom, 0.0)
    return np.clip(np.nan_to_num(off), -0.5, 0.5)


def decode(maps, stride: int = OUTPUT_STRIDE, refine: str | None = DEFAULT_REFINE):
    """Belief maps -> (joints, confidence).

    ``maps`` [B, M, M, J] or [M, M, J] (pass only the joint channels, not the
    background).  Returns ``joints`` float64 [B, J, 2] (x, y) in 0-based input
    pixels and ``confidence`` [B, J], the peak value of each map.  ``refine`` is
    one of ``"none"``, ``"quarter"``, ``"quadratic"``, ``"gaussian"`` (default;
    see the module docstring); a peak on the border is not refined along that axis.
    """
    refine = "none" if refine is None else refine
    if refine not in REFINE_METHODS:
        raise ValueError(f"refine must be one of {REFINE_METHODS}, got {refine!r}")
    maps = np.asarray(maps, dtype=np.float64)
    single = maps.ndim == 3
    if single:
        maps = maps[None]
    if maps.ndim != 4:
        raise ValueError(f"maps must be [B, M, M, J] or [M, M, J], got shape {maps.shape}")
    b, h, w, j = maps.shape
    flat = maps.transpose(0, 3, 1, 2).reshape(b, j, h * w)  # [B, J, H*W]
    idx = np.argmax(flat, axis=-1)
    confidence = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    row, col = np.divmod(idx, w)
    off_x = np.zeros((b, j))
    off_y = np.zeros((b, j))
    if refine != "none":
        grid = flat.reshape(b, j, h, w)
        bi, ji = np.meshgrid(np.arange(b), np.arange(j), indexing="ij")
        inner_x = (col > 0) & (col < w - 1)
        inner_y = (row > 0) & (row < h - 1)
        cl, cr = np.clip(col - 1, 0, w - 1), np.clip(col + 1, 0, w - 1)
        ru, rd = np.clip(row - 1, 0, h - 1), np.clip(row + 1, 0, h - 1)
        off_x = _refine_offsets(grid[bi, ji, row, cl], confidence, grid[bi, ji, row, cr], refine)
        off_y = _refine_offsets(grid[bi, ji, ru, col], confidence, grid[bi, ji, rd, col], refine)
        off_x = np.where(inner_x, off_x, 0.0)
        off_y = np.where(inner_y, off_y, 0.0)
    half = (stride - 1) / 2.0
    joints = np.stack([(col + off_x) * stride + half, (row + off_y) * stride + half], axis=-1)
    if single:
        return joints[0], confidence[0]
    return joints, confidence


def to_original(joints_input, M) -> np.ndarray:
    """Map joints from crop (input) pixels back to the original image with ``inv(M)``.

    ``M`` is the 3x3 crop matrix of the data pipeline (original 1-based (x, y, 1)
    -> crop 0-based (x, y, 1)); the result is in the original file's 1-based
    convention.  ``joints_input`` [..., J, 2] with ``M`` [3, 3], or [B, J, 2]
    with one matrix per example ``M`` [B, 3, 3].  (For a mirrored crop, also undo
    the left/right swap of the joint order: ``joints[:, skeleton.flip_permutation()]``.)
    """
    pts = np.asarray(joints_input, dtype=np.float64)
    inv = np.linalg.inv(np.asarray(M, dtype=np.float64))
    homo = np.concatenate([pts, np.ones(pts.shape[:-1] + (1,))], axis=-1)
    if inv.ndim == 2:
        out = homo @ inv.T
    else:
        if pts.ndim != 3 or inv.shape[0] != pts.shape[0]:
            raise ValueError(f"batched M {inv.shape} needs joints [B, J, 2], got {pts.shape}")
        out = np.einsum("bjk,bik->bji", homo, inv)
    return out[..., :2] / out[..., 2:3]


# --------------------------------------------------------------------------- resampling

UPSAMPLE_METHODS = ("bilinear", "bicubic")


def _kernel(method: str, d: np.ndarray) -> np.ndarray:
    """The interpolation kernel at distances ``d`` (in cells)."""
    d = np.abs(d)
    if method == "bilinear":
        return np.clip(1.0 - d, 0.0, None)
    a = -0.5  # Keys' cubic, as PIL and MATLAB
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = (((d - 5.0) * d + 8.0) * d - 4.0) * a
    return np.where(d < 1.0, near, np.where(d < 2.0, far, 0.0))


def _check_method(method: str) -> None:
    if method not in UPSAMPLE_METHODS:
        raise ValueError(f"method must be one of {UPSAMPLE_METHODS}, got {method!r}")


def upsample_weights(map_size: int, size: int, stride: int = OUTPUT_STRIDE,
                     method: str = "bilinear") -> np.ndarray:
    """``W [size, map_size]``: row ``p`` holds the weights of the cells in pixel ``p``
    (cell ``c`` centred on pixel ``c * stride + (stride - 1) / 2``; see the module
    docstring)."""
    _check_method(method)
    u = (np.arange(size, dtype=np.float64) - (stride - 1) / 2.0) / stride  # in cells
    w = _kernel(method, np.arange(map_size)[None, :] - u[:, None])
    return w / w.sum(axis=1, keepdims=True)


def upsample(maps, size: int | None = None, stride: int = OUTPUT_STRIDE,
             method: str = "bilinear") -> np.ndarray:
    """Belief maps ``[M, M]`` or ``[M, M, C]`` resampled to ``[size, size(, C)]`` input
    pixels (default ``size = M * stride``), float64."""
    maps = np.asarray(maps, np.float64)
    m = maps.shape[0]
    w = upsample_weights(m, size or m * stride, stride, method)
    if maps.ndim == 2:
        return w @ maps @ w.T
    rows = np.tensordot(w, maps, axes=(1, 0))  # [size, M, C]: along y
    return np.matmul(w[None], rows)  # [size, size, C]: along x, one matrix product per row


def upsample_numpy(maps, size: int | None = None, stride: int = OUTPUT_STRIDE,
                   method: str = "bilinear") -> np.ndarray:
    """Reference for :func:`upsample`: every pixel on its own -- its cell coordinates, the
    cells within the kernel's reach, their weights renormalised -- summed in two passes
    (along x, then along y), as an image resampler does."""
    _check_method(method)
    maps = np.asarray(maps, np.float64)
    flat = maps.ndim == 2
    maps = maps[..., None] if flat else maps
    m = maps.shape[0]
    size = size or m * stride
    reach = 1 if method == "bilinear" else 2

    def taps(p):
        u = (p - (stride - 1) / 2.0) / stride
        cells = [c for c in range(int(np.floor(u)) - reach + 1, int(np.floor(u)) + reach + 1)
                 if 0 <= c < m]
        weights = np.array([_kernel(method, np.array(c - u)) for c in cells])
        return cells, weights / weights.sum()

    rows = np.zeros((m, size, maps.shape[2]))
    for x in range(size):
        cells, weights = taps(x)
        rows[:, x] = sum(wt * maps[:, c] for c, wt in zip(cells, weights))
    out = np.zeros((size, size, maps.shape[2]))
    for y in range(size):
        cells, weights = taps(y)
        out[y] = sum(wt * rows[c] for c, wt in zip(cells, weights))
    return out[..., 0] if flat else out


def round_trip_errors(n: int, input_size: int, sigma: float, stride: int = OUTPUT_STRIDE,
                      refine: str | None = DEFAULT_REFINE, seed: int = 0,
                      margin: float = 0.0) -> np.ndarray:
    """Encode ``n`` random joints (uniform over the crop, ``margin`` px from its edges),
    decode them, and return the Euclidean errors in input pixels."""
    rng = np.random.default_rng(seed)
    lo, hi = margin, input_size - 1 - margin
    joints = rng.uniform(lo, hi, size=(n, 1, 2))
    maps = render_numpy(joints, np.ones((n, 1), np.int32), input_size, sigma, stride)
    decoded, _ = decode(maps, stride, refine)
    return np.linalg.norm(decoded - joints, axis=-1)[:, 0]
