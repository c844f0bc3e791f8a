"""Getting the training data and writing its TFRecord shards (``cpm-nb prepare``).

The synthetic set is made ready by :func:`cpm_nb.data.synthetic_set.prepare_synthetic`
(seconds); :func:`synthetic_summary` reports it.  :func:`prepare_mpii` is for Colab/GPU
users with internet:
into a root folder it downloads what is missing -- the annotation zip, the 12.9 GB
image archive (md5-verified) and Tompson et al.'s validation split -- resumably
(HTTP ``Range``, :func:`download`), with a progress bar, extracts them safely (no
member may land outside the folder, :func:`extract`), reads the annotations, splits
train/validation and writes the shards.  Both return a summary (examples kept,
skipped per reason; :func:`format_summary`).  A failed download, an unsafe archive or
missing data is a :class:`cpm_nb.core.errors.DataError`.  The command line is
:mod:`cpm_nb.cli.commands.prepare`.

All download locations are in :data:`DOWNLOADS`.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cpm_nb.core import files
from cpm_nb.core.errors import DataError
from cpm_nb.core.progress import Progress, track
from cpm_nb.data.mpii import TOMPSON_SPLIT_URL

MPII_BASE_URL = "https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/"


@dataclass(frozen=True)
class Download:
    name: str  # file name under the root folder
    url: str
    md5: str | None  # published checksum, when there is one
    what: str


DOWNLOADS = {
    "annotations": Download("mpii_human_pose_v1_u12_2.zip",
                            MPII_BASE_URL + "mpii_human_pose_v1_u12_2.zip", None,
                            "MPII annotations (12.5 MB)"),
    "images": Download("mpii_human_pose_v1.tar.gz", MPII_BASE_URL + "mpii_human_pose_v1.tar.gz",
                       "b6bc9c6869d3f035a5570b2e68ec84c4", "MPII images (12.9 GB)"),
    "split": Download("mpii_valid_pred.zip", TOMPSON_SPLIT_URL, None,
                      "Tompson et al. validation split (detections.mat)"),
}
ANNOTATION_FILE = "mpii_human_pose_v1_u12_1.mat"
SPLIT_FILE = "detections.mat"
CHUNK = 1 << 20


class DownloadError(DataError):
    """A download that failed or does not match its checksum."""


class NotDownloadedError(DataError):
    """A file that is missing while downloading was not allowed."""


class UnsafeArchiveError(DataError):
    """An archive member that would be written outside the target folder."""


# --- downloading ---------------------------------------------------------------------


def md5sum(path, chunk: int = CHUNK) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _verified_marker(path: Path) -> Path:
    return path.with_name(path.name + ".md5ok")


def _is_verified(path: Path, md5: str | None) -> bool:
    """True when ``path`` exists and was verified (marker matching size and mtime)."""
    if not path.is_file():
        return False
    if md5 is None:
        return True
    marker = _verified_marker(path)
    stat = path.stat()
    stamp = f"{md5} {stat.st_size} {int(stat.st_mtime)}"
    if marker.is_file() and marker.read_text().strip() == stamp:
        return True
    if md5sum(path) == md5:
        marker.write_text(stamp + "\n")
        return True
    return False


def download(url: str, dest, md5: str | None = None, progress: bool = True,
             retries: int = 3, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``; resumable, md5-checked, atomic.

    Bytes arrive in ``dest.part``; an interrupted download resumes from there
    with an HTTP ``Range`` request (a server that ignores it sends the whole file,
    which then replaces the part).  Connection errors are retried, resuming.  The
    finished file is checked against ``md5`` (when given) before it is renamed to
    ``dest``; a mismatch deletes the part and raises :class:`DownloadError`.
    ``file://`` URLs work too (for tests and local mirrors).
    """
    dest = Path(dest)
    if _is_verified(dest, md5):
        return dest
    if dest.exists():
        raise DownloadError(f"{dest} exists but its md5 is not {md5}: delete it and re-run")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _fetch(url, part, progress, timeout)
            break
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as err:
            if isinstance(err, urllib.error.HTTPError) and err.code not in (408, 429, 500, 502,
                                                                            503, 504):
                raise DownloadError(f"downloading {url}: HTTP {err.code} {err.reason}") from err
            if attempt == retries:
                raise DownloadError(f"downloading {url} failed after {retries} attempts "
                                    f"({err}); re-run to resume from {part}") from err
            time.sleep(min(2 ** attempt, 10))
    if md5 is not None:
        got = md5sum(part)
        if got != md5:
            part.unlink()
            raise DownloadError(f"{dest.name}: md5 {got} does not match the published {md5}; "
                                "the partial file was deleted, re-run to download again")
    part.replace(dest)
    if md5 is not None:
        stat = dest.stat()
        _verified_marker(dest).write_text(f"{md5} {stat.st_size} {int(stat.st_mtime)}\n")
    return dest


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "cpm-nb"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to send: the part is complete
            return
        raise
    with response:
        status = response.getcode()
        if offset and status != 206:  # server ignored the range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = int(length) + offset if length and length.isdigit() else None
        with Progress(total, part.name[:-5], unit="B", initial=offset, mode=progress,
                      unit_scale=True) as bar, open(part, "ab" if offset else "wb") as f:
            for block in iter(lambda: response.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size < total:
        raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")


# --- safe extraction ----------------------------------------------------------------------


def _inside(root: Path, name: str) -> bool:
    target = (root / name).resolve()
    return target == root or root in target.parents


def extract(archive, dest, progress: bool = False) -> Path:
    """Extract a .zip or .tar(.gz) into ``dest``, refusing any member that would land
    outside it (absolute paths, ``..``, links pointing out) or is a device file.

    A marker file makes a second call a no-op.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    marker = dest / f".extracted-{archive.name}"
    if marker.is_file():
        return dest
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not _inside(root, info.filename) or os.path.isabs(info.filename):
                    raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} would be "
                                             f"written outside {dest}; refusing to extract")
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in track(tf, "extracting", unit="file", mode=progress):
                _check_tar_member(archive, member, root, dest)
                if hasattr(tarfile, "data_filter"):
                    tf.extract(member, dest, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extract(member, dest)
    else:
        raise DataError(f"{archive}: neither a zip nor a tar archive (incomplete download?)")
    marker.write_text("ok\n")
    return dest


def _check_tar_member(archive: Path, member: tarfile.TarInfo, root: Path, dest: Path) -> None:
    bad = None
    if member.name.startswith("/") or not _inside(root, member.name):
        bad = "would be written outside"
    elif member.issym() or member.islnk():
        link = member.linkname
        base = (root / member.name).parent if member.issym() else root
        if os.path.isabs(link) or not _inside(root, str((base / link).resolve())):
            bad = "links outside"
    elif member.isdev():
        bad = "is a device file and cannot go into"
    if bad:
        raise UnsafeArchiveError(f"{archive.name}: member {member.name!r} {bad} {dest}; "
                                 "refusing to extract")


# --- preparing the data -----------------------------------------------------------------


def _find(root: Path, name: str) -> Path | None:
    hits = sorted(root.rglob(name))
    return hits[0] if hits else None


@dataclass(frozen=True)
class MpiiSources:
    """Where :func:`prepare_mpii` gets MPII: files already here (``None``: find them under
    the root, else download them), and the download settings."""

    annotations: Path | None = None  # an existing annotation .mat (or our JSON)
    split_file: Path | None = None  # an existing detections.mat (the validation people)
    images: Path | None = None  # an existing folder of MPII images
    download: bool = True  # False: a missing file is a NotDownloadedError
    urls: dict = field(default_factory=dict)  # DOWNLOADS key -> mirror URL
    md5s: dict = field(default_factory=dict)  # DOWNLOADS key -> expected md5


def _obtain(key: str, root: Path, sources: MpiiSources, progress: bool) -> Path:
    """The downloaded file for ``key`` under ``root`` (downloaded when missing and allowed)."""
    d = DOWNLOADS[key]
    url = sources.urls.get(key) or d.url
    md5 = sources.md5s.get(key) or d.md5
    dest = root / d.name
    if not dest.is_file() and not sources.download:
        raise NotDownloadedError(f"{dest} is missing and downloading is off; download "
                                 f"{d.what} from {url}")
    if not dest.is_file():
        print(f"downloading {d.what} from {url}", flush=True)
    return download(url, dest, md5, progress=progress)


def prepare_mpii(root, input_size: int, out=None, sources: MpiiSources = MpiiSources(),
                 max_people: int | None = None, progress: bool = True) -> dict:
    """Download (what is missing, unless ``sources.download`` is False), extract and
    convert MPII under the folder ``root`` into TFRecords of ``input_size`` px crops in
    ``out`` (default ``root/tfrecords-SIZE``); at most ``max_people`` per split.  One
    process per root at a time.  Returns the summary (:func:`format_summary`)."""
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    with files.locked(root):  # one process per root: downloads and shards
        return _prepare_mpii(root, input_size, Path(out) if out else None, sources,
                             max_people, progress)


def _mpii_files(root: Path, sources: MpiiSources, progress: bool) -> tuple[Path, Path, Path]:
    """(annotation file, split file, image folder), downloaded and extracted as needed."""
    ann = sources.annotations or _find(root, ANNOTATION_FILE)
    if ann is None:
        extract(_obtain("annotations", root, sources, progress), root)
        ann = _find(root, ANNOTATION_FILE)
        if ann is None:
            raise DataError(f"{DOWNLOADS['annotations'].name} holds no {ANNOTATION_FILE}")
    split_file = sources.split_file or _find(root, SPLIT_FILE)
    if split_file is None:
        extract(_obtain("split", root, sources, progress), root / "tompson_split")
        split_file = _find(root / "tompson_split", SPLIT_FILE)
        if split_file is None:
            raise DataError(f"{DOWNLOADS['split'].name} holds no {SPLIT_FILE}")
    image_dir = Path(sources.images) if sources.images else root / "images"
    archive = root / DOWNLOADS["images"].name
    extracted = (root / f".extracted-{archive.name}").is_file()
    # extract unless the images were given, or fully extracted before, or put there by hand
    # (an images/ folder without the archive); a partial extraction is redone
    if not sources.images and not extracted and (archive.is_file() or not image_dir.is_dir()):
        extract(_obtain("images", root, sources, progress), root, progress=progress)
    if not image_dir.is_dir():
        raise DataError(f"no image folder {image_dir}" + ("" if sources.images else
                        f": {archive.name} did not unpack to it"))
    return Path(ann), Path(split_file), image_dir


def _prepare_mpii(root: Path, input_size: int, out: Path | None, sources: MpiiSources,
                  max_people: int | None, progress: bool) -> dict:
    from cpm_nb.data import mpii, shards

    ann, split_file, image_dir = _mpii_files(root, sources, progress)
    print(f"reading {ann}", flush=True)
    read_skipped = Counter()
    try:
        people = mpii.read_annotations(ann, read_skipped)
        validation = mpii.read_split(split_file)
    except FileNotFoundError as err:
        raise DataError(str(err)) from None
    train, val = mpii.split_train_val(people, validation)
    if max_people is not None:
        train, val = train[:max_people], val[:max_people]
    out = out or root / f"tfrecords-{input_size}"
    summaries = {}
    for split, group in (("train", train), ("val", val)):  # each split atomic
        summaries[split] = shards.write_tfrecords(group, image_dir, out, split, input_size,
                                                    progress=progress)
    return {"source": "mpii", "annotations": str(ann), "split_file": str(split_file),
            "people_read": len(people), "read_skipped": dict(read_skipped),
            "validation_people": len(validation), "input_size": input_size,
            "out": str(out), "splits": summaries}


def synthetic_summary(spec, prepared) -> dict:
    """The summary (:func:`format_summary`) of a synthetic set ``spec``
    (:class:`cpm_nb.data.synthetic_set.SyntheticSpec`) made ready by
    :func:`cpm_nb.data.synthetic_set.prepare_synthetic` (its ``prepared`` result)."""
    data = prepared.data
    return {"source": "synthetic", "profile": spec.name, "seed": spec.seed,
            "images": spec.n_train + spec.n_val,
            "people": len(data.train) + len(data.val), "root": str(data.root),
            "seconds": round(prepared.seconds, 2), "written": prepared.written,
            "repaired": prepared.repaired, "input_size": spec.input_size,
            "out": str(prepared.folder), "splits": prepared.splits}


def format_summary(result: dict) -> str:
    lines = []
    if result["source"] == "synthetic":
        lines.append(f"synthetic set '{result['profile']}' seed {result['seed']}: "
                     f"{result['images']} images, {result['people']} people in {result['root']} "
                     f"(ready in {result['seconds']} s"
                     f"{'' if result['written'] else ', found and verified'})")
        if result["repaired"]:
            lines.append(f"  re-written: {result['repaired']}")
    else:
        lines.append(f"MPII: {result['people_read']} people read from {result['annotations']}; "
                     f"validation = {result['validation_people']} people of "
                     f"{result['split_file']}")
        for reason, n in result["read_skipped"].items():
            lines.append(f"  left out while reading: {reason}: {n}")
    lines.append(f"TFRecords ({result['input_size']} px crops) in {result['out']}:")
    for split, s in result["splits"].items():
        skipped = sum(s["skipped"].values())
        lines.append(f"  {split:<5} kept {s['kept']:>6}   skipped {skipped:>5}")
        for reason, n in sorted(s["skipped"].items()):
            lines.append(f"          skipped: {reason}: {n}")
        for what, n in sorted(s["fixed"].items()):
            lines.append(f"          fixed:   {what}: {n}")
    return "\n".join(lines)
