"""Bad inputs built on the spot, and the checks every fault case makes (the fault suite:
tests/faults/ and tests/test_faults_processes.py).

Nothing here touches the network; every file is a few kB.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from cpm_nb.cli import app as cli
from cpm_nb.data import mpii

REPO = Path(__file__).resolve().parents[1]
PHOTO = np.random.default_rng(0).integers(0, 256, (160, 200, 3), dtype=np.uint8)


# --- running a command and checking what it left ----------------------------------------------


def run(argv, capsys) -> tuple[int, str, str]:
    """``cpm-nb ARGV`` in this process: (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(err: str, *needles: str) -> str:
    """The single stderr line of a failed command, checked: no traceback, all ``needles``."""
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, f"expected one line, got:\n{err}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(*folders) -> dict[str, str]:
    """sha256 of every file under ``folders`` (paths as keys)."""
    out = {}
    for folder in folders:
        folder = Path(folder)
        paths = sorted(folder.rglob("*")) if folder.is_dir() else [folder]
        for p in paths:
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def leftovers(*folders) -> list[str]:
    """Temporary files or folders (hidden ``.*.tmp`` / ``.*.old``) under ``folders``."""
    found = []
    for folder in folders:
        for p in Path(folder).rglob(".*"):
            if p.name.endswith((".tmp", ".old")):
                found.append(str(p))
    return found


# --- images -------------------------------------------------------------------------------------


def jpeg(array=PHOTO, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", **kw)
    return buf.getvalue()


def png(image: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    """A PNG written by hand (e.g. 16-bit RGB, which Pillow cannot write)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(rows))
            + _chunk(b"IEND", b""))


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` px (a decompression bomb)."""
    return raw_png(width, height, 8, 2, b"\0" * 64)


def bomb_jpeg(width: int = 30000, height: int = 30000) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``width x height`` px."""
    data = bytearray(jpeg(PHOTO[:16, :16]))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gray16(values=None) -> bytes:
    """A 16-bit grayscale PNG (Pillow mode I;16); by default a ramp 0..65535."""
    a = np.linspace(0, 65535, 160 * 200).reshape(160, 200) if values is None else values
    return png(Image.fromarray(np.asarray(a, dtype=np.uint16)))


def rgb16() -> bytes:
    """A 16-bit RGB PNG, 8x4 px, red = 0xFFFF, green = 0x8000, blue = 0."""
    row = b"\0" + b"\xff\xff\x80\x00\x00\x00" * 8
    return raw_png(8, 4, 16, 2, row * 4)


def truncated(data: bytes, keep: float = 0.4) -> bytes:
    return data[: int(len(data) * keep)]


def flip_byte(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


# --- a small MPII-like data set -----------------------------------------------------------------


def _points(x0, y0):
    return [(j, np.uint16(x0 + 3 * (j % 4)), np.uint16(y0 + 6 * j), np.uint8(1))
            for j in range(16)]


PERSON = {"head_box": (90, 10, 110, 30), "scale": 0.4, "objpos": (100, 80),
          "points": _points(90, 20)}


def make_mpii(folder: Path, images: dict, names: list[str] | None = None) -> list[str]:
    """Images (name -> bytes) in ``folder/images``, an annotation .mat naming ``names``
    (default: the images, one person each), a split file (the first is validation).
    Returns the ``prepare mpii`` arguments (output: ``folder/root/tfrecords-32``)."""
    image_dir = folder / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    for name, data in images.items():
        (image_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (image_dir / name).write_bytes(data)
    names = list(images) if names is None else names
    ann = mpii.write_release_mat(folder / "ann.mat", [{"name": n, "people": [PERSON]}
                                                      for n in names])
    savemat(folder / "split.mat", {"RELEASE_img_index": np.array([[1]]),
                                   "RELEASE_person_index": np.array([[1]])})
    return ["prepare", "mpii", "--root", folder / "root", "--no-download", "--quiet",
            "--input-size", "32", "--annotations", ann, "--split-file", folder / "split.mat",
            "--images", image_dir]


def good_images(n: int = 3) -> dict:
    return {f"img{i}.jpg": jpeg(np.roll(PHOTO, 7 * i, axis=1)) for i in range(n)}


# --- a model run folder (untrained fast-profile weights), without the training code -------------


def make_run_folder(out: Path) -> Path:
    from cpm_nb.core.runtime import import_keras
    from cpm_nb.model import architecture
    from cpm_nb.model import cpm as M

    import_keras()
    net = M.build_cpm(architecture.get_config("fast"), seed=0)
    out.mkdir(parents=True, exist_ok=True)
    net.save(out / "model.keras")
    meta = {"format": "cpm-nb-model", "version": 1, "model_file": "model.keras",
            "cpm_config": net.cpm_config.to_dict()}
    (out / "cpm_config.json").write_text(json.dumps(meta))
    return out


# --- ground truth for evaluate-mpii ----------------------------------------------------------------


def write_gt(path: Path, n: int = 4, seed: int = 0, **change) -> np.ndarray:
    """A gt_valid.mat-style file; ``change`` edits the arrays (16x2xN, 16xN, 2x2xN)."""
    rng = np.random.default_rng(seed)
    data = {"pos_gt_src": rng.uniform(100, 400, (16, 2, n)),
            "jnt_missing": np.zeros((16, n), np.uint8)}
    data["headboxes_src"] = np.stack([data["pos_gt_src"][9] - 20, data["pos_gt_src"][9] + 20])
    for name, fn in change.items():
        fn(data[name])
    savemat(path, data)
    return data["pos_gt_src"]


def json_summary(argv, capsys, *extra) -> dict:
    """The ``--json`` summary of a command that must succeed."""
    code, out, err = run([*argv, *extra, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


BAD_IMAGES = {  # name: (bytes, the reason the loader gives)
    "bomb.png": (bomb_png(), "decompression bomb"),
    "medium_bomb.png": (bomb_png(10000, 10000), "decompression bomb"),
    "bomb.jpg": (bomb_jpeg(), "decompression bomb"),
    "cut.jpg": (truncated(jpeg()), "unreadable image file"),
    "empty.png": (b"", "not an image file"),
}
