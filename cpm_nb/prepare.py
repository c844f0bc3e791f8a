"""``cpm-nb prepare synthetic|mpii``: get the data and write the TFRecord shards.

``prepare synthetic`` renders the embedded synthetic set for the active profile
(seconds) and writes its shards.  ``prepare mpii --root DIR`` is for Colab/GPU
users with internet: it downloads what is missing -- the annotation zip, the
12.9 GB image archive (md5-verified) and Tompson et al.'s validation split --
resumably (HTTP ``Range``), with a progress bar, extracts them safely (no member
may land outside ``DIR``), reads the annotations, splits train/validation and
writes the shards.  Both end with a summary: examples kept, skipped per reason.

All download locations are in :data:`DOWNLOADS`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from cpm_nb import files
from cpm_nb.cli import (
    CliError,
    Command,
    add_json_option,
    int_in_range,
    nonnegative_int,
    positive_int,
    print_json,
)

MPII_BASE_URL = "https://datasets.d2.mpi-inf.mpg.de/andriluka14cvpr/"


@dataclass(frozen=True)
class Download:
    name: str  # file name under --root
    url: str
    md5: str | None  # published checksum, when there is one
    what: str


DOWNLOADS = {
    "annotations": Download("mpii_human_pose_v1_u12_2.zip",
                            MPII_BASE_URL + "mpii_human_pose_v1_u12_2.zip", None,
                            "MPII annotations (12.5 MB)"),
    "images": Download("mpii_human_pose_v1.tar.gz", MPII_BASE_URL + "mpii_human_pose_v1.tar.gz",
                       "b6bc9c6869d3f035a5570b2e68ec84c4", "MPII images (12.9 GB)"),
    "split": Download("mpii_valid_pred.zip",
                      "http://www.cims.nyu.edu/~tompson/data/mpii_valid_pred.zip", None,
                      "Tompson et al. validation split (detections.mat)"),
}
ANNOTATION_FILE = "mpii_human_pose_v1_u12_1.mat"
SPLIT_FILE = "detections.mat"
CHUNK = 1 << 20


class DownloadError(CliError):
    """A download that failed or does not match its checksum."""


class UnsafeArchiveError(CliError):
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
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                       unit_divisor=1024, desc=part.name[:-5])
        try:
            with open(part, "ab" if offset else "wb") as f:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
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
            members = _progress_members(tf, progress)
            for member in members:
                _check_tar_member(archive, member, root, dest)
                if hasattr(tarfile, "data_filter"):
                    tf.extract(member, dest, filter="data")
                else:  # pragma: no cover - Python without extraction filters
                    tf.extract(member, dest)
    else:
        raise CliError(f"{archive}: neither a zip nor a tar archive (incomplete download?)")
    marker.write_text("ok\n")
    return dest


def _progress_members(tf, progress):
    if not progress:
        return tf
    from tqdm.auto import tqdm

    return tqdm(tf, desc="extracting", unit="file")


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


# --- the commands -----------------------------------------------------------------------


def _find(root: Path, name: str) -> Path | None:
    hits = sorted(root.rglob(name))
    return hits[0] if hits else None


def _obtain(key: str, root: Path, args) -> Path:
    """The downloaded file for ``key`` under ``root`` (downloading it unless --no-download)."""
    d = DOWNLOADS[key]
    url = getattr(args, f"{key}_url") or d.url
    md5 = getattr(args, f"{key}_md5", None) or d.md5
    dest = root / d.name
    if not dest.is_file() and args.no_download:
        raise CliError(f"{dest} is missing and --no-download was given; download {d.what} "
                       f"from {url}")
    if not dest.is_file():
        print(f"downloading {d.what} from {url}", flush=True)
    return download(url, dest, md5, progress=not args.quiet)


def prepare_mpii(args) -> dict:
    from cpm_nb.config import get_profile

    root = files.check_output_path(args.root, "dir", "--root")
    out = files.check_output_path(args.out, "dir", "--out") if args.out else None
    root.mkdir(parents=True, exist_ok=True)
    input_size = args.input_size or get_profile().input_size
    with files.locked(root):  # one process per --root: downloads and shards
        return _prepare_mpii(args, root, out, input_size)


def _prepare_mpii(args, root: Path, out: Path | None, input_size: int) -> dict:
    from cpm_nb import mpii, pipeline

    # annotations
    ann = args.annotations or _find(root, ANNOTATION_FILE)
    if ann is None:
        extract(_obtain("annotations", root, args), root)
        ann = _find(root, ANNOTATION_FILE)
        if ann is None:
            raise CliError(f"{DOWNLOADS['annotations'].name} holds no {ANNOTATION_FILE}")
    # validation split
    split_file = args.split_file or _find(root, SPLIT_FILE)
    if split_file is None:
        extract(_obtain("split", root, args), root / "tompson_split")
        split_file = _find(root / "tompson_split", SPLIT_FILE)
        if split_file is None:
            raise CliError(f"{DOWNLOADS['split'].name} holds no {SPLIT_FILE}")
    # images
    image_dir = Path(args.images) if args.images else root / "images"
    archive = root / DOWNLOADS["images"].name
    extracted = (root / f".extracted-{archive.name}").is_file()
    # extract unless the images were given, or fully extracted before, or put there by hand
    # (an images/ folder without the archive); a partial extraction is redone
    if not args.images and not extracted and (archive.is_file() or not image_dir.is_dir()):
        extract(_obtain("images", root, args), root, progress=not args.quiet)
    if not image_dir.is_dir():
        raise CliError(f"no image folder {image_dir}" + ("" if args.images else
                       f": {archive.name} did not unpack to it"))
    print(f"reading {ann}", flush=True)
    read_skipped = Counter()
    try:
        people = mpii.read_annotations(ann, read_skipped)
        validation = mpii.read_split(split_file)
    except (FileNotFoundError, mpii.MpiiFormatError) as err:
        raise CliError(str(err)) from None
    train, val = mpii.split_train_val(people, validation)
    if args.max_people is not None:
        train, val = train[: args.max_people], val[: args.max_people]
    out = out or root / f"tfrecords-{input_size}"
    summaries = {}
    for split, group in (("train", train), ("val", val)):  # each split atomic
        summaries[split] = pipeline.write_tfrecords(group, image_dir, out, split, input_size,
                                                    progress=not args.quiet)
    return {"source": "mpii", "annotations": str(ann), "split_file": str(split_file),
            "people_read": len(people), "read_skipped": dict(read_skipped),
            "validation_people": len(validation), "input_size": input_size,
            "out": str(out), "splits": summaries}


def prepare_synthetic(args) -> dict:
    from cpm_nb import pipeline
    from cpm_nb.config import get_profile

    profile = get_profile()
    seed = profile.seed if args.seed is None else args.seed
    start = time.perf_counter()
    out, summaries, info = pipeline.prepare_synthetic_set(
        profile, seed, force=args.force, progress=not args.quiet, verify=True)
    data = info["data"]
    return {"source": "synthetic", "profile": profile.name, "seed": seed,
            "images": profile.n_train + profile.n_val,
            "people": len(data.train) + len(data.val), "root": str(data.root),
            "seconds": round(time.perf_counter() - start, 2), "written": info["written"],
            "repaired": info["repaired"], "input_size": profile.input_size, "out": str(out),
            "splits": summaries}


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


def _arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    syn = sub.add_parser("synthetic", help="render the synthetic set for the profile and "
                         "write its TFRecords (seconds)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description=SYNTHETIC_DESCRIPTION)
    syn.add_argument("--seed", type=nonnegative_int, help="dataset seed, an integer >= 0 "
                     "(default: the profile's)")
    syn.add_argument("--force", action="store_true", help="re-render even when cached")
    mp = sub.add_parser("mpii", help="download (when missing), extract and convert real MPII",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        description=MPII_DESCRIPTION)
    mp.add_argument("--root", required=True, help="folder for the downloads, images/ and shards")
    mp.add_argument("--input-size", type=int_in_range(16, 2048, multiple_of=8),
                    help="crop side in px, 16 to 2048, a multiple of 8 (default: the "
                    "profile's input_size)")
    mp.add_argument("--out", help="TFRecord folder (default: ROOT/tfrecords-SIZE)")
    mp.add_argument("--annotations", help=f"an existing {ANNOTATION_FILE} (skips its download)")
    mp.add_argument("--images", help="an existing folder of MPII images (skips the 12.9 GB "
                    "download)")
    mp.add_argument("--split-file", help="an existing detections.mat defining the validation "
                    "set (RELEASE_img_index, RELEASE_person_index)")
    mp.add_argument("--no-download", action="store_true",
                    help="fail instead of downloading a missing file")
    mp.add_argument("--max-people", type=positive_int, metavar="N",
                    help="convert at most N >= 1 people per split (a quick try)")
    for key, d in DOWNLOADS.items():
        mp.add_argument(f"--{key}-url", help=f"mirror of {d.name} (default: {d.url})")
    mp.add_argument("--images-md5", help=f"expected md5 of the image archive "
                    f"(default: {DOWNLOADS['images'].md5})")
    for p in (syn, mp):
        add_json_option(p, "the summary")
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def _run(args: argparse.Namespace) -> int:
    result = prepare_synthetic(args) if args.source == "synthetic" else prepare_mpii(args)
    if args.json != "-":
        print(format_summary(result))
    if args.json:
        print_json(result, args.json)
    return 0


SYNTHETIC_DESCRIPTION = """\
Render the embedded synthetic dataset for the active profile (profile.n_train +
profile.n_val images of 1-3 articulated people, deterministic by seed) and write
its TFRecords. Everything goes to data/synthetic/<profile>-seed<seed>/ of the
cpm-nb checkout the package is installed from, else $CPM_NB_DATA/synthetic/...,
else the user cache ($XDG_CACHE_HOME or ~/.cache, /cpm_nb/synthetic/...).  A second
run finds it cached and verifies its shards (damaged ones are written again).
Everything is written under temporary names and swapped in when complete; two
processes preparing the same set at once wait for each other.

examples:
  cpm-nb prepare synthetic                       the active profile
  cpm-nb prepare synthetic --profile cpu --json  3,300 images in ~20 s, summary as JSON
  cpm-nb prepare synthetic --seed 1 --force      another sample, re-rendered
"""

MPII_DESCRIPTION = """\
Download (when missing), extract and convert real MPII Human Pose into TFRecords.

Under --root it keeps the downloads, their extracted contents (images/ and the
annotation .mat) and the shards (tfrecords-SIZE/).  Downloads resume after an
interruption (re-run the same command) and the image archive is checked against
its published md5.  Each split's shards and meta.json are replaced only when the
whole split succeeded; an image that is missing, unreadable, truncated, too large
or named outside the image folder is skipped and counted in the summary.  Validation is the standard 2,958-person set of Tompson et
al. (detections.mat); every other annotated training person is train.

examples:
  cpm-nb prepare mpii --root /content/mpii            everything (about 13 GB)
  cpm-nb prepare mpii --root data/mpii --images ~/mpii/images --split-file detections.mat
  cpm-nb --profile gpu prepare mpii --root data/mpii --max-people 500   a quick try
"""

PREPARE = Command(
    name="prepare",
    help="make training data: the synthetic set, or download and convert real MPII",
    description=(
        "Make the TFRecord shards the training pipeline reads, ending with a summary of\n"
        "the examples kept and skipped (per reason).\n\n"
        "examples:\n"
        "  cpm-nb prepare synthetic                 synthetic set for the active profile\n"
        "  cpm-nb --profile cpu prepare synthetic --json-out summary.json\n"
        "  cpm-nb prepare mpii --root /content/mpii   real MPII (downloads ~13 GB)\n"
        "  cpm-nb prepare mpii --help               all MPII options"
    ),
    add_arguments=_arguments,
    run=_run,
)
