"""The CPM release's own test procedure, step by step: how its authors ran their models.

The release tests a person (``testing/src/applyModel.m`` for a box drawn by the user,
``run_benchmark.m`` for MPII's centre and scale) with these steps, which a converted model
opts into with ``"procedure": "release"`` in the ``preprocessing`` block of its
``cpm_config.json`` (:class:`DemoSettings`; older converted runs keep cpm-nb's crops):

1. **Scales.**  MPII centre and scale: ``s = target_dist / scale`` scaled px per original px
   (the person's ``200 * scale`` px become 234 px of the 368 box) times 0.7 ... 1.3.  A box:
   :func:`box_scales` -- 4 scales, a sixth of an octave apart, that put the box's *height*
   at 256 ... 361 px of the 368 box (the range 0.8 ... 1.2 around 307 px).
2. **Resize the whole image** by each ``s`` with MATLAB's ``imresize`` (:func:`imresize`):
   bicubic with Keys' ``a = -0.5`` and, when shrinking, *antialiased* (the kernel stretched
   by ``1/s``), mirrored at the borders, output ``ceil(s * size)``, uint8 rounded.
   Neither OpenCV's ``cv2.resize(INTER_CUBIC)`` (``a = -0.75``, never antialiased; only
   ``INTER_AREA`` averages when shrinking) nor a bilinear warp computes this; Pillow's
   ``BICUBIC`` does (``a = -0.5``, kernel stretched when shrinking) except at the borders,
   where it renormalises the kernel instead of mirroring the image.
3. **Crop the box around an integer centre** (:func:`demo_box`): the centre scaled as
   ``round(s * centre)`` (1-based) is pixel ``S/2 - 1`` (0-based) of the ``S`` box, the
   centre map's peak is there too; outside the image the box is grey (128).
4. **Maps back to the image**: the last stage's maps upsampled ``8x`` (``imresize``,
   bicubic), put back where the box lies in the scaled image (zero where it does not
   cover it; the padding is dropped), resized to the original image size, averaged over
   the scales (:func:`demo_maps`).
5. **Arg-max over the image** (:func:`demo_joints`): each joint is the pixel of its map's
   maximum, 1-based -- anywhere a scale covered the image, never in the padding.

Pure NumPy; :func:`imresize` is two matrix products per image (:func:`resize_weights`),
with a pixel-by-pixel reference (:func:`imresize_numpy`); :func:`demo_maps` composes step
4 into two matrix products per scale, with the step-by-step reference
(:func:`demo_maps_numpy`).  :func:`procedure_effects`
measures what each of the three differences from cpm-nb's own path (scales, resizing,
arg-max domain) does to a prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cpm_nb.core.config import OUTPUT_STRIDE

PROCEDURE = "release"  # the value of preprocessing["procedure"] that opts in
KEYS_A = -0.5  # MATLAB's bicubic kernel (Keys 1981); OpenCV's INTER_CUBIC uses -0.75
BOX_OCTAVE = 6  # scales per octave (the release's config.m)
BOX_RANGE = (0.8, 1.2)  # around the middle, of the box height (start_scale, end_scale)
BOX_MARGIN = 1.2  # the box height times this fills the box: 368 / 1.2 = 307 px


@dataclass(frozen=True)
class DemoSettings:
    """The release's test procedure for one converted model (from its ``preprocessing``)."""

    box_size: int = 368  # the release's box; a model at another input size scales with it
    target_dist: float = 41 / 35  # MPII: 200*scale px -> 200*target_dist px of the box
    scales: tuple[float, ...] = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)  # centre + scale search
    octave: int = BOX_OCTAVE
    box_range: tuple[float, float] = BOX_RANGE
    box_margin: float = BOX_MARGIN
    pad_value: int = 128

    @classmethod
    def from_preprocessing(cls, pre: dict | None) -> DemoSettings | None:
        """The settings a run's ``preprocessing`` block declares, or ``None`` when it does
        not opt in (``"procedure": "release"``): such a run keeps cpm-nb's crops."""
        pre = pre or {}
        if pre.get("procedure") != PROCEDURE:
            return None
        box = pre.get("box_scales") or {}
        return cls(box_size=int(pre.get("box_size", 368)),
                   target_dist=float(pre.get("target_dist", 41 / 35)),
                   scales=tuple(float(f) for f in pre.get("scales") or cls.scales),
                   octave=int(box.get("octave", BOX_OCTAVE)),
                   box_range=tuple(box.get("range", BOX_RANGE)),
                   box_margin=float(box.get("margin", BOX_MARGIN)),
                   pad_value=int(pre.get("pad_value", 128)))


# --- resizing: MATLAB's imresize ----------------------------------------------------------------


def cubic(x: np.ndarray, a: float = KEYS_A) -> np.ndarray:
    """Keys' cubic convolution kernel (support [-2, 2])."""
    x = np.abs(np.asarray(x, np.float64))
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _taps(out_len: int, in_len: int, scale: float, antialias: bool, a: float = KEYS_A):
    """For each output pixel: its input pixels (0-based, not yet mirrored) and weights."""
    width, stretch = 4.0, 1.0
    if scale < 1 and antialias:  # shrinking: the kernel stretched by 1/scale (a low-pass)
        width, stretch = 4.0 / scale, scale

    def kernel(x):
        return cubic(stretch * x, a)
    u = (np.arange(1, out_len + 1) / scale + 0.5 * (1 - 1 / scale))  # 1-based input coordinate
    left = np.floor(u - width / 2)
    idx = left[:, None] + np.arange(math.ceil(width) + 2)[None, :]  # 1-based
    w = kernel(u[:, None] - idx)
    return idx.astype(int) - 1, w / w.sum(axis=1, keepdims=True)


def _mirror(idx: np.ndarray, n: int) -> np.ndarray:
    """Indices outside ``0 .. n-1`` reflected, the edge pixel repeated (MATLAB's symmetric)."""
    period = np.concatenate([np.arange(n), np.arange(n)[::-1]])
    return period[np.mod(idx, 2 * n)]


def resize_weights(in_len: int, out_len: int, scale: float | None = None,
                   antialias: bool = True, a: float = KEYS_A) -> np.ndarray:
    """``W [out_len, in_len]``: one axis of MATLAB's ``imresize`` (bicubic), for ``scale``
    output px per input px (default ``out_len / in_len``).  ``antialias=False, a=-0.75``
    is OpenCV's ``INTER_CUBIC`` (except at the borders, which OpenCV replicates)."""
    scale = out_len / in_len if scale is None else float(scale)
    idx, w = _taps(out_len, in_len, scale, antialias, a)
    out = np.zeros((out_len, in_len))
    rows = np.broadcast_to(np.arange(out_len)[:, None], idx.shape)
    np.add.at(out, (rows, _mirror(idx, in_len)), w)
    return out


def resized_size(shape, scale: float) -> tuple[int, int]:
    """``imresize``'s output ``(rows, cols)`` for a scale factor: ``ceil(scale * size)``."""
    return math.ceil(scale * shape[0] - 1e-9), math.ceil(scale * shape[1] - 1e-9)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.floor(np.clip(x, 0, 255) + 0.5).astype(np.uint8)  # MATLAB rounds halves up


def imresize(image: np.ndarray, scale: float | None = None, size=None,
             antialias: bool = True, a: float = KEYS_A) -> np.ndarray:
    """MATLAB's ``imresize(image, scale)`` or ``imresize(image, [rows cols])``, bicubic:
    ``[H, W]`` or ``[H, W, C]``; uint8 in, uint8 out (rounded), float in, float64 out."""
    image = np.asarray(image)
    rows, cols = size if size is not None else resized_size(image.shape, scale)
    sy = scale if size is None else rows / image.shape[0]
    sx = scale if size is None else cols / image.shape[1]
    wy = resize_weights(image.shape[0], rows, sy, antialias, a)
    wx = resize_weights(image.shape[1], cols, sx, antialias, a)
    x = image.astype(np.float64)
    out = np.tensordot(wy, x, axes=(1, 0))  # along y
    out = np.moveaxis(np.tensordot(wx, out, axes=(1, 1)), 0, 1)  # along x
    return _to_uint8(out) if image.dtype == np.uint8 else out


def imresize_numpy(image: np.ndarray, scale: float | None = None, size=None,
                   antialias: bool = True) -> np.ndarray:
    """Reference for :func:`imresize`: each output pixel on its own, each tap's input index
    mirrored into the image one by one (x first, then y)."""
    image = np.asarray(image)
    rows, cols = size if size is not None else resized_size(image.shape, scale)
    sy = scale if size is None else rows / image.shape[0]
    sx = scale if size is None else cols / image.shape[1]
    x = image.astype(np.float64)

    def one_axis(data, out_len, s, axis):
        n = data.shape[axis]
        idx, w = _taps(out_len, n, s, antialias)
        out = []
        for i in range(out_len):
            acc = 0.0
            for k, wt in zip(idx[i], w[i]):
                while k < 0 or k >= n:  # reflect, edge repeated
                    k = -k - 1 if k < 0 else 2 * n - 1 - k
                acc = acc + wt * np.take(data, k, axis=axis)
            out.append(acc)
        return np.stack(out, axis=axis)

    out = one_axis(one_axis(x, cols, sx, 1), rows, sy, 0)
    return _to_uint8(out) if image.dtype == np.uint8 else out


# --- scales and boxes ---------------------------------------------------------------------------


def box_scales(box_height: float, input_size: int = 368, octave: int = BOX_OCTAVE,
               box_range=BOX_RANGE, margin: float = BOX_MARGIN) -> np.ndarray:
    """The release's scales (scaled px per original px) for a box ``box_height`` px tall:
    a geometric series, ``octave`` per octave, from the scale that makes the box
    ``input_size / (margin * box_range[1])`` px tall up to the one that makes it
    ``input_size / (margin * box_range[0])`` px tall (368 px: 256 ... 383; 4 scales)."""
    start = input_size / (margin * box_range[1] * box_height)
    end = input_size / (margin * box_range[0] * box_height)
    steps = math.floor((math.log2(end) - math.log2(start)) * octave + 1e-9)
    return 2.0 ** (math.log2(start) + np.arange(steps + 1) / octave)


def clamped_box(box, width: int, height: int) -> tuple[tuple[float, float], float]:
    """The release's reading of a box ``(x1, y1, x2, y2)`` (1-based) in a ``width`` x
    ``height`` image: the centre of the box clipped to the image, and its clipped height."""
    x1, y1, x2, y2 = (float(v) for v in box)
    x1, y1, x2, y2 = max(x1, 1.0), max(y1, 1.0), min(x2, float(width)), min(y2, float(height))
    return ((x1 + x2) / 2, (y1 + y2) / 2), y2 - y1


@dataclass(frozen=True)
class DemoBox:
    """Where one scale's ``size`` x ``size`` network input lies: the image resized by
    ``scale`` to ``scaled`` = (rows, cols), the box centred on the scaled image's pixel
    ``center`` = (x, y) (1-based, an integer) at box pixel ``size/2 - 1`` (0-based)."""

    scale: float
    scaled: tuple[int, int]
    center: tuple[int, int]
    size: int

    @property
    def origin(self) -> tuple[int, int]:
        """The scaled image's 0-based (x, y) at box pixel (0, 0)."""
        return self.center[0] - self.size // 2, self.center[1] - self.size // 2

    def matrix(self) -> np.ndarray:
        """Original 1-based (x, y, 1) -> box 0-based: ``imresize`` maps original ``x`` to
        scaled ``s (x - 0.5) + 0.5`` (1-based)."""
        s, (ox, oy) = self.scale, self.origin
        return np.array([[s, 0, 0.5 - 0.5 * s - 1 - ox], [0, s, 0.5 - 0.5 * s - 1 - oy],
                         [0, 0, 1.0]])


def _round_half_up(v: float) -> int:
    return int(math.floor(v + 0.5))  # MATLAB's round for the positive coordinates here


def demo_box(image_shape, center, scale: float, size: int) -> DemoBox:
    """The box of one scale: the release rounds ``scale * centre`` (1-based) to a pixel."""
    rows, cols = resized_size(image_shape, scale)
    return DemoBox(float(scale), (rows, cols),
                   (_round_half_up(scale * center[0]), _round_half_up(scale * center[1])), size)


def crop_box(scaled: np.ndarray, box: DemoBox, pad_value: int = 128) -> np.ndarray:
    """The ``box.size`` square of the scaled image ``[h, w, 3]``, grey outside it."""
    out = np.full((box.size, box.size) + scaled.shape[2:], pad_value, scaled.dtype)
    ox, oy = box.origin
    y0, y1 = max(oy, 0), min(oy + box.size, scaled.shape[0])
    x0, x1 = max(ox, 0), min(ox + box.size, scaled.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - oy:y1 - oy, x0 - ox:x1 - ox] = scaled[y0:y1, x0:x1]
    return out


def demo_scales(settings: DemoSettings, input_size: int, image_size, center=None,
                scale=None, box=None, factors=None):
    """The person's centre (1-based), the scales (scaled px per original px) and the
    factors they are of the reference scale, as the release picks them: from a box
    (:func:`box_scales`, reference: the box ``input_size / margin`` px tall) or from a
    centre and MPII scale (``target_dist / scale``, times ``settings.scales``)."""
    width, height = image_size
    ratio = input_size / settings.box_size
    if box is not None:
        center, box_height = clamped_box(box, width, height)
        if box_height <= 0:
            raise ValueError(f"the box {tuple(box)} does not overlap the {width}x{height} image")
        ref = input_size / (settings.box_margin * box_height)
        if factors is None:
            factors = box_scales(box_height, input_size, settings.octave, settings.box_range,
                                 settings.box_margin) / ref
    else:
        ref = settings.target_dist / scale * ratio
        factors = settings.scales if factors is None else factors
    factors = tuple(float(f) for f in factors)
    return center, tuple(ref * f for f in factors), factors


def demo_crops(rgb: np.ndarray, center, scales: Sequence[float], size: int,
               pad_value: int = 128, resample: str = "imresize"):
    """One network input per scale: the boxes (:class:`DemoBox`) and their crops
    ``uint8 [n, size, size, 3]``.  ``resample="warp"`` cuts the same boxes with cpm-nb's
    bilinear warp instead of resizing the whole image (to measure the difference)."""
    from PIL import Image

    from cpm_nb.data import preprocess

    boxes = [demo_box(rgb.shape, center, s, size) for s in scales]
    if resample == "imresize":
        crops = [crop_box(imresize(rgb, s), b, pad_value) for s, b in zip(scales, boxes)]
    elif resample == "warp":
        pil = Image.fromarray(rgb)
        crops = [np.asarray(preprocess.warp_pil(pil, b.matrix(), size, fill=pad_value))
                 for b in boxes]
    else:
        raise ValueError(f"resample must be 'imresize' or 'warp', got {resample!r}")
    return boxes, np.stack(crops)


def center_map(size: int, sigma: float) -> np.ndarray:
    """The release's centre map for a ``size`` box: peak 1 at pixel ``size/2 - 1``
    (0-based; 1-based ``size/2``, where the box's centre pixel is)."""
    from cpm_nb.model import inputs

    c = size // 2 - 1
    return inputs.center_map(size, sigma, center=(c, c))


# --- back to the image, arg-max ---------------------------------------------------------------


def demo_maps(maps: np.ndarray, boxes: Sequence[DemoBox], image_size,
              stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """Per-scale maps ``[n, M, M, C]`` of the boxes -> their average ``[H, W, C]`` on the
    original image (the steps of :func:`demo_maps_numpy`, each linear, composed into one
    ``[H, M]`` and one ``[W, M]`` matrix per scale: ten times fewer operations)."""
    width, height = image_size
    total = np.zeros((height, width, maps.shape[-1]))
    for one, box in zip(maps, boxes):
        ay = _back_weights(box, one.shape[0], stride, axis=0, out_len=height)
        ax = _back_weights(box, one.shape[1], stride, axis=1, out_len=width)
        rows = np.tensordot(ay, np.asarray(one, np.float64), axes=(1, 0))  # [H, M, C]
        total += np.moveaxis(np.tensordot(ax, rows, axes=(1, 1)), 0, 1)  # [H, W, C]
    return total / len(boxes)


def _back_weights(box: DemoBox, m: int, stride: int, axis: int, out_len: int) -> np.ndarray:
    """``[out_len, m]``: one axis of upsample (``imresize`` x ``stride``), put into the
    scaled image, resize to the original -- as one matrix."""
    up = resize_weights(m, box.size, float(stride))  # [S, M]
    n = box.scaled[axis]
    origin = box.origin[1 - axis]  # origin is (x, y)
    lo, hi = max(origin, 0), min(origin + box.size, n)
    back = resize_weights(n, out_len)  # [out_len, n]
    if hi <= lo:
        return np.zeros((out_len, m))
    return back[:, lo:hi] @ up[lo - origin:hi - origin]


def demo_maps_numpy(maps: np.ndarray, boxes: Sequence[DemoBox], image_size,
                    stride: int = OUTPUT_STRIDE) -> np.ndarray:
    """Reference for :func:`demo_maps`, the release's steps one by one: each scale's maps
    upsampled ``stride`` x (bicubic), its part inside the scaled image kept (zero where
    the box does not cover it), resized to the image; the average over the scales."""
    width, height = image_size
    total = np.zeros((height, width, maps.shape[-1]))
    for one, box in zip(maps, boxes):
        up = imresize(np.asarray(one, np.float64), float(stride))
        placed = crop_box_inverse(up, box)
        total += imresize(placed, size=(height, width))
    return total / len(boxes)


def crop_box_inverse(up: np.ndarray, box: DemoBox) -> np.ndarray:
    """Box-sized maps put back on the scaled image (``box.scaled``), zero outside the box."""
    rows, cols = box.scaled
    placed = np.zeros((rows, cols) + up.shape[2:])
    ox, oy = box.origin
    y0, y1 = max(oy, 0), min(oy + box.size, rows)
    x0, x1 = max(ox, 0), min(ox + box.size, cols)
    if y1 > y0 and x1 > x0:
        placed[y0:y1, x0:x1] = up[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return placed


def image_argmax(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each channel's maximum of ``[H, W, C]`` maps as 1-based (x, y) ``[C, 2]``, and its
    value ``[C]`` (the first maximum in column-major order, as MATLAB's ``max(map(:))``)."""
    flat = np.asarray(maps).transpose(1, 0, 2).reshape(-1, maps.shape[-1])  # column-major
    idx = flat.argmax(0)
    x, y = np.unravel_index(idx, (maps.shape[1], maps.shape[0]))
    return np.stack([x, y], -1).astype(np.float64) + 1.0, flat[idx, np.arange(flat.shape[1])]


def demo_joints(maps: np.ndarray, boxes: Sequence[DemoBox], image_size,
                stride: int = OUTPUT_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """The release's joints (original 1-based px) and confidences from the per-scale maps
    ``[n, M, M, C]``: :func:`demo_maps`, then :func:`image_argmax`."""
    return image_argmax(demo_maps(maps, boxes, image_size, stride))


def _onto_weights(n: int, a: float, b: float) -> np.ndarray:
    """``W [n, n]``: bilinear taps of the pixels ``a * p + b`` (zero outside 0 .. n-1)."""
    q = a * np.arange(n) + b
    lo = np.floor(q).astype(int)
    out = np.zeros((n, n))
    for k, w in ((lo, 1.0 - (q - lo)), (lo + 1, q - lo)):
        ok = (k >= 0) & (k < n)
        out[np.arange(n)[ok], k[ok]] += w[ok]
    return out


def crop_argmax(maps: np.ndarray, boxes: Sequence[DemoBox],
                stride: int = OUTPUT_STRIDE) -> tuple[np.ndarray, np.ndarray]:
    """cpm-nb's arg-max domain, for comparison: every scale's upsampled maps resampled onto
    the first box (bilinear, zero where a box does not reach), averaged over all scales,
    the maximum over that box -- padding included; joints in original 1-based px."""
    ref = boxes[0].matrix()
    total = 0.0
    for one, box in zip(maps, boxes):
        up = imresize(np.asarray(one, np.float64), float(stride))
        m = box.matrix() @ np.linalg.inv(ref)  # first box px -> this box px (axis-aligned)
        wy = _onto_weights(box.size, m[1, 1], m[1, 2])
        wx = _onto_weights(box.size, m[0, 0], m[0, 2])
        total = total + np.moveaxis(np.tensordot(wx, np.tensordot(wy, up, (1, 0)), (1, 1)), 0, 1)
    flat = (total / len(boxes)).reshape(-1, maps.shape[-1])
    idx = flat.argmax(0)
    y, x = np.unravel_index(idx, (boxes[0].size, boxes[0].size))
    pts = np.stack([x, y], -1).astype(np.float64)
    inv = np.linalg.inv(ref)
    return pts @ inv[:2, :2].T + inv[:2, 2], flat[idx, np.arange(flat.shape[1])]
