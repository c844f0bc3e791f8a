"""One place for reading and writing files safely: atomic outputs, early output checks,
names from data files kept inside their folder, folder locks, and image decoding
with one-line errors.

Every tool of the package goes through these, so a failure never leaves a half
written file behind, a hostile data file cannot make a tool read elsewhere, and a
bad image or JSON file is one line naming the file, never a traceback.

* :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json`
  and :func:`atomic_output` (a context manager yielding a temporary path in the same
  folder: fsync-ed and ``os.replace``-d over the target on success, removed on
  failure); :func:`swap_folder` puts a finished folder in place of another.
* :func:`check_output_path` -- fail *before any work* when an output path is a
  folder where a file is wanted (or the reverse) or its folder cannot be created
  or written.
* :func:`inside` -- a relative name read from a data file (an image name in the
  annotations), resolved under its folder; :class:`EscapingPathError` when it is
  absolute or climbs out with ``..``.
* :func:`locked` -- an advisory ``flock`` on ``FOLDER/.lock`` (re-entrant within a
  process), so two processes never prepare the same folder at once.
* :func:`read_json` -- a JSON file, or a :class:`DataError` naming it.
* :func:`open_image` / :func:`decode_rgb` / :func:`load_rgb` -- an image file as 8-bit
  RGB: decompression bombs (more than :data:`MAX_IMAGE_PIXELS` pixels), truncated,
  corrupt and unsupported files are an :class:`ImageFileError` naming the file;
  16-bit images are *scaled* to 8 bits (not clipped), palette, grayscale, CMYK and
  images with transparency (composited on white) are converted, and the conversion
  is reported so callers can count it.

:class:`DataError` is the error for data and files (not for command-line flags):
``cpm-nb`` prints it as one line and exits with status 2.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import uuid
import warnings
from pathlib import Path

from cpm_nb.core.errors import DataError  # re-exported: files.DataError

MAX_IMAGE_PIXELS = 89_478_485  # Pillow's own warning limit (a 0.25 GB RGB image)

# what decode_rgb did to reach 8-bit RGB (None: it already was); prepare counts them
CONVERTED_GRAYSCALE = "grayscale images (converted to RGB)"
CONVERTED_CMYK = "CMYK images (converted to RGB)"
CONVERTED_HIGH_BIT_DEPTH = "16-bit images (scaled to 8-bit RGB)"
CONVERTED_PALETTE = "palette images (converted to RGB)"
CONVERTED_ALPHA = "images with transparency (composited on white)"
CONVERTED_OTHER = "other colour modes (converted to RGB)"
CONVERSIONS = (CONVERTED_GRAYSCALE, CONVERTED_CMYK, CONVERTED_HIGH_BIT_DEPTH,
               CONVERTED_PALETTE, CONVERTED_ALPHA, CONVERTED_OTHER)


class EscapingPathError(DataError):
    """A name read from a data file that would point outside its folder."""


class ImageFileError(DataError):
    """An image file that cannot be used.  ``reason`` is short and stable, for counting:
    :data:`MISSING`, :data:`TOO_LARGE` or :data:`UNREADABLE`."""

    MISSING = "missing image file"
    TOO_LARGE = "image too large (decompression bomb?)"
    UNREADABLE = "unreadable image file"

    def __init__(self, message: str, reason: str = UNREADABLE):
        super().__init__(message)
        self.reason = reason


# --- atomic outputs --------------------------------------------------------------------------


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every file system allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_name(path: Path) -> Path:
    """A unique hidden name beside ``path`` (``.NAME.HEX.tmp``) for a file being written."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


@contextlib.contextmanager
def atomic_output(path):
    """Yield a temporary path next to ``path``; when the block succeeds, the file written
    there is fsync-ed and moved over ``path`` in one ``os.replace`` (readers see the old
    file or the new one, never a part); when it fails, the temporary file is removed and
    ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_folder(path.parent)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path, data, indent: int | None = 2) -> None:
    """``data`` as JSON (plus a newline) written atomically to ``path``."""
    atomic_write_text(path, json.dumps(data, indent=indent) + "\n")


def swap_folder(new, target) -> None:
    """Put the finished folder ``new`` in place of ``target`` (which may exist).

    Two renames (the old folder aside, the new one in) then the old one is deleted;
    a crash between the renames leaves ``target`` missing and the old folder as
    ``.<name>.<hex>.old`` beside it, never a mix of the two."""
    import shutil

    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.replace(target, old)
    os.replace(new, target)
    _fsync_folder(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def staging_folder(target) -> Path:
    """A new empty hidden folder beside ``target``, on the same file system, to build
    an output in before :func:`swap_folder`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))


def remove_leftovers(folder, patterns=(".*.tmp", ".*.old")) -> None:
    """Delete what killed writers left in ``folder`` (temporary files and folders named by
    :func:`temp_name`, :func:`staging_folder` and :func:`swap_folder`).  Call it only
    while holding the folder's :func:`locked`, so no live writer's files are taken."""
    import shutil

    folder = Path(folder)
    if not folder.is_dir():
        return
    for pattern in patterns:
        for item in folder.glob(pattern):
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


# --- checking outputs before the work ------------------------------------------------------


def _first_existing(path: Path) -> Path:
    for folder in (path, *path.parents):
        if folder.exists():
            return folder
    return Path(".")


def check_output_path(path, kind: str = "file", what: str = "output") -> Path:
    """Check, before any work, that ``path`` can be written as a ``kind`` ('file' or
    'dir'): it is not of the other kind, and its nearest existing folder is a writable
    folder (the missing ones can then be created).  Returns the path; raises
    :class:`DataError` naming ``what`` (e.g. '--json-out') and the fix."""
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    path = Path(path).expanduser()
    if str(path) in ("", "."):
        if kind == "file":
            raise DataError(f"{what}: give a file name, not {str(path)!r}")
    if kind == "file" and path.is_dir():
        raise DataError(f"{what} {path} is a folder; give a file name (e.g. {path}/out.json)")
    if kind == "dir" and path.exists() and not path.is_dir():
        raise DataError(f"{what} {path} is a file, not a folder; give a folder path")
    if kind == "file" and path.exists() and not os.access(path, os.W_OK):
        raise DataError(f"{what} {path} is not writable; choose another path or fix its "
                        "permissions")
    base = _first_existing(path if kind == "dir" else path.parent)
    if not base.is_dir():
        raise DataError(f"cannot create {what} {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise DataError(f"cannot write {what} {path}: {base} is not writable; choose another "
                        "path or fix its permissions")
    return path


# --- names read from data files ----------------------------------------------------------------


def inside(folder, name, source=None) -> Path:
    """``folder / name`` for a relative ``name`` read from a data file (``source``, for
    the message); :class:`EscapingPathError` when ``name`` is absolute, empty, holds a
    NUL, or leaves ``folder`` with ``..``.

    The check is on the name itself (normalised, before symbolic links): links that the
    user put inside the folder are followed, names that climb out of it are refused."""
    name = str(name)
    where = f" in {source}" if source else ""
    if not name or "\0" in name:
        raise EscapingPathError(f"invalid file name {name!r}{where}")
    norm = os.path.normpath(name)
    if os.path.isabs(name) or norm == ".." or norm.startswith(".." + os.sep) or norm == ".":
        raise EscapingPathError(f"file name {name!r}{where} points outside {folder}; "
                                "names must be relative paths inside that folder")
    return Path(folder) / norm


# --- locks --------------------------------------------------------------------------------------

_held: dict[str, list] = {}  # resolved lock file -> [file object, depth, owner thread]
_held_guard = threading.Lock()


@contextlib.contextmanager
def locked(folder, name: str = ".lock"):
    """Hold an exclusive advisory lock (``flock``) on ``folder/name``, waiting for
    another process that holds it.  Re-entrant in the thread that holds it; a no-op
    where ``fcntl`` is missing (Windows).  The folder is created."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = str((folder / name).resolve())
    me = threading.get_ident()
    with _held_guard:
        entry = _held.get(key)
        if entry is not None and entry[2] == me:
            entry[1] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[key][1] -= 1
        return
    f = open(key, "a+")  # noqa: SIM115 - held for the duration of the block
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
        with _held_guard:
            _held[key] = [f, 1, me]
        try:
            yield
        finally:
            with _held_guard:
                _held.pop(key, None)
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()


# --- JSON ---------------------------------------------------------------------------------------


def read_json(path, what: str = "JSON file", fix: str = ""):
    """The JSON document in ``path``; :class:`DataError` (one line naming the file and
    ``fix``) when it is missing, unreadable, truncated or not JSON."""
    path = Path(path)
    hint = f"; {fix}" if fix else ""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{what} not found: {path}{hint}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise DataError(f"{what} {path} is unreadable or corrupt ({reason}){hint}") from None


# --- images -------------------------------------------------------------------------------------


def _pil():
    from PIL import Image

    # our own limit (check_size) is Pillow's warning limit and raises a one-line error;
    # Pillow's warning for the same images would only repeat it.  (Set on every call:
    # an identical filter replaces itself, and test runners reset the filters.)
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    return Image


def open_image(path):
    """Open an image file lazily (PIL; the pixels are decoded by :func:`decode_rgb`),
    refusing files that are missing, not images, or larger than :data:`MAX_IMAGE_PIXELS`.
    Raises :class:`ImageFileError` naming the file."""
    image_module = _pil()
    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"image file not found: {path}", ImageFileError.MISSING)
    if path.is_dir():
        raise ImageFileError(f"{path} is a folder, not an image file")
    try:
        im = image_module.open(path)
    except image_module.DecompressionBombError as err:
        raise ImageFileError(f"{path}: {err}", ImageFileError.TOO_LARGE) from None
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for a bad file
        raise ImageFileError(f"unreadable image file {path}: not an image file Pillow can "
                             f"read ({_reason(err)})") from None
    check_size(im, path)
    return im


def check_size(im, name) -> None:
    """:class:`ImageFileError` when ``im`` claims more than :data:`MAX_IMAGE_PIXELS`."""
    width, height = im.size
    if width * height > MAX_IMAGE_PIXELS:
        im.close()
        raise ImageFileError(f"{name}: {width}x{height} px is more than {MAX_IMAGE_PIXELS:,} px "
                             "(a decompression bomb?); refusing to decode it",
                             ImageFileError.TOO_LARGE)
    if width < 1 or height < 1:
        im.close()
        raise ImageFileError(f"{name}: empty image ({width}x{height} px)")


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split())[:200]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def decode_rgb(im, name, exif: bool = False):
    """Decode a lazily opened PIL image to 8-bit RGB.  Returns ``(rgb, conversion)``
    where ``conversion`` is one of :data:`CONVERSIONS` or None.  ``exif=True`` applies
    the EXIF orientation (phone photos; not for annotated data sets, whose coordinates
    refer to the stored pixels).  Raises :class:`ImageFileError` naming ``name``."""
    try:
        im.load()
        if exif:
            im = _exif_transpose(im)
        return to_rgb(im)
    except ImageFileError:
        raise
    except Exception as err:  # noqa: BLE001 - truncated/corrupt data: OSError, SyntaxError...
        raise ImageFileError(f"unreadable image file {name}: {_reason(err)}") from None


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
    import numpy as np

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


def load_rgb(path, exif: bool = False):
    """``(rgb PIL image, conversion)`` of an image file: :func:`open_image` then
    :func:`decode_rgb`.  Raises :class:`ImageFileError` naming the file."""
    im = open_image(path)
    try:
        rgb, conversion = decode_rgb(im, path, exif=exif)
        if rgb is im:
            rgb = im.copy()
        return rgb, conversion
    finally:
        im.close()
