"""Images as 8-bit RGB, from a file, JPEG/PNG bytes, a PIL image or a NumPy array: the one
image loader of the package, with one error type.

Data preparation (:mod:`cpm_nb.data.shards`, through :func:`load_rgb`) and prediction
(:mod:`cpm_nb.inference.predict`, through :func:`open_image` / :func:`decode` /
:func:`load_image`) read every image here:

* files in any format Pillow reads; decompression bombs (more than
  :data:`MAX_IMAGE_PIXELS` pixels), empty, truncated, corrupt, unsupported and missing
  files are an :class:`ImageError` naming the file in one line, whose ``reason``
  (:attr:`ImageError.MISSING`, ``TOO_LARGE``, ``UNREADABLE``) is short and stable, for
  counting skips;
* 16-bit (and 32-bit, float) images are *scaled* to 8 bits (not clipped); palette,
  grayscale, CMYK and images with transparency (composited on white) are converted,
  and the conversion is reported (:data:`CONVERSIONS`) so callers can count it;
* the EXIF orientation of a phone photo is applied on request (prediction), never for
  annotated data sets, whose coordinates refer to the stored pixels;
* arrays may be ``[H, W]`` grayscale or ``[H, W, 3|4]``, uint8 or float in 0..1.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from cpm_nb.core.errors import DataError

MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own warning limit (a 0.25 GB RGB image)
MAX_IMAGE_FILE_BYTES = 512 << 20  # an image read from a pipe: more is no photo

# what decode_rgb did to reach 8-bit RGB (None: it already was); prepare counts them
CONVERTED_GRAYSCALE = "grayscale images (converted to RGB)"
CONVERTED_CMYK = "CMYK images (converted to RGB)"
CONVERTED_HIGH_BIT_DEPTH = "16-bit images (scaled to 8-bit RGB)"
CONVERTED_PALETTE = "palette images (converted to RGB)"
CONVERTED_ALPHA = "images with transparency (composited on white)"
CONVERTED_OTHER = "other colour modes (converted to RGB)"
CONVERSIONS = (CONVERTED_GRAYSCALE, CONVERTED_CMYK, CONVERTED_HIGH_BIT_DEPTH,
               CONVERTED_PALETTE, CONVERTED_ALPHA, CONVERTED_OTHER)


class ImageError(DataError):
    """An image that cannot be read or used (one image of a batch; the others go on).
    ``reason`` is short and stable, for counting: :attr:`MISSING`, :attr:`TOO_LARGE` or
    :attr:`UNREADABLE`."""

    MISSING = "missing image file"
    TOO_LARGE = "image too large (decompression bomb?)"
    UNREADABLE = "unreadable image file"

    def __init__(self, message: str, reason: str = UNREADABLE):
        super().__init__(message)
        self.reason = reason


def _pil():
    from PIL import Image

    # our own limit (check_size) is Pillow's warning limit and raises a one-line error;
    # Pillow's warning for the same images would only repeat it.  (Set on every call:
    # an identical filter replaces itself, and test runners reset the filters.)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image


# --- opening -----------------------------------------------------------------------------------


def open_image(source):
    """``source`` (a path, JPEG/PNG bytes, a PIL image or an array) as a PIL image (lazy:
    a file's pixels are decoded by :func:`decode_rgb`).  Raises :class:`ImageError` (one
    line naming the file) for a missing, unreadable or oversized (decompression bomb)
    image."""
    image_module = _pil()
    if isinstance(source, image_module.Image):
        check_size(source, source_name(source))
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _open_file(io.BytesIO(bytes(source)), "image data", "image data")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"image file not found: {path}", ImageError.MISSING)
        if path.is_dir():
            raise ImageError(f"{path} is a folder, not an image file")
        if not path.is_file():  # a pipe (`<(...)`) is read up to a cap; a device refused
            from cpm_nb.core import files

            data = files.read_input(path, "image", MAX_IMAGE_FILE_BYTES, ImageError)
            return _open_file(io.BytesIO(data), str(path), f"image file {path}")
        return _open_file(path, str(path), f"image file {path}")
    return _array_to_pil(source)


def read_once(source):
    """``source``, but a path that is not a regular file (a pipe such as ``<(...)``) as
    its bytes, read once and up to a cap (a pipe cannot be read twice); a device or a
    silent pipe is an :class:`ImageError` naming it."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.exists() and not path.is_dir() and not path.is_file():
            from cpm_nb.core import files

            return files.read_input(path, "image", MAX_IMAGE_FILE_BYTES, ImageError)
    return source


def _open_file(file, name: str, label: str):
    image_module = _pil()
    try:
        im = image_module.open(file)
    except image_module.DecompressionBombError as err:
        raise ImageError(f"{name}: {err}", ImageError.TOO_LARGE) from None
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise ImageError(f"unreadable {label}: not an image file Pillow can read "
                         f"({_reason(err)})") from None
    check_size(im, name)
    return im


def check_size(im, name) -> None:
    """:class:`ImageError` when ``im`` claims more than :data:`MAX_IMAGE_PIXELS` or none."""
    width, height = im.size
    if width * height > MAX_IMAGE_PIXELS:
        im.close()
        raise ImageError(f"{name}: {width}x{height} px is more than {MAX_IMAGE_PIXELS:,} px "
                         "(a decompression bomb?); refusing to decode it", ImageError.TOO_LARGE)
    if width < 1 or height < 1:
        im.close()
        raise ImageError(f"{name}: empty image ({width}x{height} px)")


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def source_name(source) -> str:
    """How an error message names ``source``: its path, or its kind (and shape)."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, np.ndarray):
        return f"array{list(source.shape)}"
    return type(source).__name__


# --- decoding to 8-bit RGB ---------------------------------------------------------------------


def decode_rgb(im, name, exif: bool = False):
    """Decode a lazily opened PIL image to 8-bit RGB.  Returns ``(rgb, conversion)``
    where ``conversion`` is one of :data:`CONVERSIONS` or None.  ``exif=True`` applies
    the EXIF orientation.  Raises :class:`ImageError` naming ``name``."""
    try:
        im.load()
        if exif:
            im = _exif_transpose(im)
        return to_rgb(im)
    except ImageError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated/corrupt data: OSError, SyntaxError...
        raise ImageError(f"unreadable image file {name}: {_reason(err)}") from None


def decode(im, name: str):
    """The pixels of a lazily opened image as an 8-bit RGB PIL image, EXIF orientation
    applied (what prediction runs on)."""
    return decode_rgb(im, name, exif=True)[0]


ROTATED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def oriented_size(im) -> tuple[int, int]:
    """``(width, height)`` of ``im`` as the user sees it: its EXIF orientation applied
    (what :func:`decode` returns), read from the header without decoding the pixels."""
    width, height = im.size
    try:
        if im.getexif().get(0x0112, 1) in ROTATED:
            return height, width
    except Exception:  # noqa: BLE001 - a broken EXIF block is ignored, as in decode
        pass
    return width, height


def _exif_transpose(im):
    from PIL import ImageOps

    try:
        if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation: 1 = as stored
            return ImageOps.exif_transpose(im)
    except Exception:  # noqa: BLE001 - a broken EXIF block is no reason to refuse the pixels
        pass
    return im


def to_rgb(im):
    """``(rgb, conversion)``: any PIL image as 8-bit RGB (see :func:`decode_rgb`)."""
    image_module = _pil()
    mode = im.mode
    if mode == "RGB":
        return im, None
    if mode.startswith("I") or mode == "F":
        return _high_bit_depth(im), CONVERTED_HIGH_BIT_DEPTH
    transparent = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode in ("P", "L", "RGB") and "transparency" in im.info)
    if transparent:
        rgba = im.convert("RGBA")
        white = image_module.new("RGBA", rgba.size, (255, 255, 255, 255))
        return image_module.alpha_composite(white, rgba).convert("RGB"), CONVERTED_ALPHA
    conversion = {"L": CONVERTED_GRAYSCALE, "1": CONVERTED_GRAYSCALE, "CMYK": CONVERTED_CMYK,
                  "P": CONVERTED_PALETTE}.get(mode, CONVERTED_OTHER)
    return im.convert("RGB"), conversion


def _high_bit_depth(im):
    """16-bit (I;16*), 32-bit integer (I) or float (F) grayscale -> 8-bit RGB, scaled.

    I;16 is scaled from 0..65535; F from 0..1 when it fits; I and F from 0..255 when
    they fit, else from 0..65535 (16-bit PNGs read as I), else by their own maximum."""
    image_module = _pil()
    a = np.asarray(im, dtype=np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    peak = float(a.max(initial=0.0))
    if im.mode.startswith("I;16"):
        top = 65535.0
    elif im.mode == "F" and peak <= 1.0:
        top = 1.0
    else:
        top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak
    gray = np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
    return image_module.fromarray(gray).convert("RGB")


# --- loading in one call -----------------------------------------------------------------------


def load_rgb(source, exif: bool = False):
    """``(rgb PIL image, conversion)`` of ``source`` (see :func:`open_image`): what data
    preparation reads, stored pixels as they are (``exif=False``).  Raises
    :class:`ImageError` naming the file."""
    im = open_image(source)
    try:
        rgb, conversion = decode_rgb(im, source_name(source), exif=exif)
        if rgb is im:
            rgb = im.copy()
        return rgb, conversion
    finally:
        if im is not source:
            im.close()


def load_image(source) -> np.ndarray:
    """``source`` as a uint8 RGB array ``[H, W, 3]``, EXIF orientation applied (what
    prediction reads)."""
    return np.asarray(load_rgb(source, exif=True)[0])


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
