"""Any image as 8-bit RGB: a file, JPEG/PNG bytes, a PIL image or a NumPy array.

What :mod:`cpm_nb.inference.predict` runs on.  Files go through :mod:`cpm_nb.core.files` (any
format Pillow reads; grayscale, palette, CMYK and RGBA images are converted to RGB,
16-bit images scaled to 8 bits, and the EXIF orientation of a phone photo is
applied); arrays may be ``[H, W]`` grayscale or ``[H, W, 3|4]``, uint8 or float in
0..1.  A missing, unreadable or oversized (decompression bomb) image is an
:class:`ImageError` naming it in one line.
"""

from __future__ import annotations

import io
import os

import numpy as np

from cpm_nb.core import files
from cpm_nb.core.errors import DataError


class ImageError(DataError):
    """An image that cannot be read or used (one image of a batch; the others go on)."""


def open_image(source):
    """``source`` (a path, JPEG/PNG bytes, a PIL image or an array) as a PIL image (lazy:
    a file's pixels are decoded on first use).  Raises :class:`ImageError` (one line
    naming the file) for a missing, unreadable or oversized (decompression bomb) image."""
    from PIL import Image

    try:
        if isinstance(source, Image.Image):
            files.check_size(source, source_name(source))
            return source
        if isinstance(source, (bytes, bytearray, memoryview)):
            return _open_bytes(bytes(source))
        if isinstance(source, (str, os.PathLike)):
            return files.open_image(source)
    except files.ImageFileError as err:
        raise ImageError(str(err)) from None
    return _array_to_pil(source)


def decode(im, name: str):
    """Decode the pixels of a lazily opened image and convert them to 8-bit RGB (EXIF
    orientation applied; see :func:`cpm_nb.core.files.decode_rgb`)."""
    try:
        return files.decode_rgb(im, name, exif=True)[0]
    except files.ImageFileError as err:
        raise ImageError(str(err)) from None


def load_image(source) -> np.ndarray:
    """``source`` as a uint8 RGB array ``[H, W, 3]`` (see the module docstring)."""
    return np.asarray(decode(open_image(source), source_name(source)))


def source_name(source) -> str:
    """How an error message names ``source``: its path, or its kind (and shape)."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"array{list(source.shape)}"
    return type(source).__name__


def _open_bytes(data: bytes):
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for bad data
        raise ImageError(f"unreadable image data: {type(err).__name__}: {err}") from None
    files.check_size(im, "image data")
    return im


def _array_to_pil(array):
    from PIL import Image

    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)) or min(a.shape[:2]) < 1:
        raise ImageError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4], got {a.shape}")
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if not np.isfinite(a).all():
            raise ImageError("the image array holds NaN or infinite values")
        if a.max(initial=0) <= 1.0:  # floats in 0..1
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(a))  # L, RGB or RGBA from the shape
