"""TFRecord shards of person crops: writing them, committing a split, checking them.

``cpm-nb prepare`` turns annotation records (:mod:`cpm_nb.data.mpii`, real or
synthetic) into TFRecord shards, one ``tf.train.Example`` per person:

* ``image``: a JPEG *context crop* (:func:`cpm_nb.data.preprocess.context_matrix`):
  the person at the training pixel density, ``CONTEXT = 2`` times wider than the
  final crop, so every augmentation is one warp of this small image instead of a
  decode of the full photo;
* ``joints`` (16x2, 0-based context-crop pixels), ``visibility`` (16; 0 missing,
  1 occluded, 2 visible) and, for evaluation, the original ``center``, ``scale``,
  ``orig_joints`` (1-based), ``head_box``, ``img_index``, ``person_index``,
  ``image_name``, ``n_others`` and the context matrix.

Bad input never becomes a silent wrong sample: :func:`write_tfrecords` skips a
person with a reason (missing, unreadable or truncated image file, an image over
89 million pixels, an image name outside the image folder, zero or negative scale,
no centre, no annotated joint), drops joints that lie outside the image (counted),
converts grayscale, CMYK, palette, transparent and 16-bit images to 8-bit RGB
(counted; :mod:`cpm_nb.io.images`), and returns the counts.  Each split is written
atomically (temporary shards and a commit journal; :func:`recover`), in a locked
folder; :func:`check_shards` finds truncated or corrupted shards.  The shards are
read by :mod:`cpm_nb.data.pipeline` (tf.data) and :mod:`cpm_nb.data.batches` (also without
TensorFlow); their fields are :mod:`cpm_nb.data.schema`'s.  The shards are framed in plain
Python (:mod:`cpm_nb.io.records`, checksums in C through ``google-crc32c``): preparing
data never imports TensorFlow.
"""

from __future__ import annotations

import io
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np

from cpm_nb.core import errors, files
from cpm_nb.core.progress import Progress
from cpm_nb.data import preprocess, schema
from cpm_nb.data.mpii import Person
from cpm_nb.io import images, records

SHARD_SIZE = 500  # examples per shard (at most 64 shards)
JPEG_QUALITY = 95
META_FILE = "meta.json"

# skip / fix reasons, as counted by write_tfrecords
SKIP_NO_IMAGE_NAME = "no image file name"
SKIP_MISSING_IMAGE = images.ImageError.MISSING
SKIP_UNREADABLE_IMAGE = images.ImageError.UNREADABLE
SKIP_TOO_LARGE = images.ImageError.TOO_LARGE
SKIP_ESCAPING_NAME = "image name outside the image folder (refused)"
SKIP_BAD_SCALE = "zero or negative scale"
SKIP_NO_CENTER = "no person centre (objpos) or scale"
SKIP_NO_JOINTS = "no annotated joints"
SKIP_NO_JOINTS_INSIDE = "no annotated joint inside the image"
FIX_OUTSIDE = "joints outside the image (dropped)"
FIX_GRAYSCALE = images.CONVERTED_GRAYSCALE
FIX_CMYK = images.CONVERTED_CMYK
FIX_HIGH_BIT_DEPTH = images.CONVERTED_HIGH_BIT_DEPTH
FIX_PALETTE = images.CONVERTED_PALETTE
FIX_ALPHA = images.CONVERTED_ALPHA
FIX_OTHER_MODE = images.CONVERTED_OTHER
FIXES = (FIX_OUTSIDE, *images.CONVERSIONS)  # counted under "fixed", the rest under "skipped"


# --- checks ------------------------------------------------------------------------


def check_person(person: Person) -> str | None:
    """Why ``person`` cannot become a training example (before looking at the image)."""
    if not np.all(np.isfinite(person.objpos)) or not math.isfinite(person.scale):
        return SKIP_NO_CENTER
    if person.scale <= 0:
        return SKIP_BAD_SCALE
    if person.num_annotated == 0:
        return SKIP_NO_JOINTS
    return None


def joints_outside(person: Person, width: int, height: int) -> np.ndarray:
    """(16,) bool: annotated joints outside the image (1-based pixel area [0.5, W+0.5])."""
    x, y = person.joints[:, 0], person.joints[:, 1]
    out = (x < 0.5) | (x > width + 0.5) | (y < 0.5) | (y > height + 0.5)
    return out & ~person.missing


# --- writing -----------------------------------------------------------------------


def _example(jpeg: bytes, person: Person, joints_ctx, visibility, m_ctx, n_others: int) -> bytes:
    """One serialised record (:func:`cpm_nb.data.schema.encode`)."""
    head_box = person.head_box if person.head_box is not None else np.full(4, np.nan)
    return schema.encode({
        "image": jpeg,
        "joints": joints_ctx,
        "visibility": visibility,
        "center": person.objpos,
        "scale": [person.scale],
        "orig_joints": np.where(person.missing[:, None], 0.0, person.joints),
        "head_box": head_box,
        "ctx_matrix": m_ctx,
        "img_index": [person.img_index or 0],
        "person_index": [person.person_index or 0],
        "image_name": person.image or "",
        "n_others": [n_others],
    })


class _ShardWriter:
    """A TFRecord file being written: :func:`cpm_nb.io.records.frame` around each record."""

    def __init__(self, path: Path):
        self._file = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, record: bytes) -> None:
        self._file.write(records.frame(record))

    def close(self) -> None:
        self._file.close()


def crop_context(image, person: Person, input_size: int, context: float = preprocess.CONTEXT):
    """The context crop (PIL image), joints in its 0-based pixels, and its matrix."""
    m = preprocess.context_matrix(person.objpos, person.scale, input_size, context)
    crop = preprocess.warp_pil(image, m, preprocess.context_size(input_size, context))
    joints, vis = preprocess.transform_joints(person.joints, person.visibility, m)
    return crop, joints, vis, m


def _process_image(group: list[Person], image_dir: Path, input_size: int, context: float,
                   n_people: int) -> tuple[list[bytes], Counter]:
    """Serialized examples for the people of one image, and what was skipped or fixed."""
    local = Counter()
    examples = []
    image, error, loaded = None, None, False
    for person in group:
        reason = check_person(person)
        if reason is None and not person.image:
            reason = SKIP_NO_IMAGE_NAME
        if reason is None and not loaded:  # decode each image once, and only when needed
            loaded = True
            image, error = _load_for(image_dir, person.image, local)
        if reason is None:
            reason = error
        if reason is None:
            outside = joints_outside(person, *image.size)
            if outside.any():
                local[FIX_OUTSIDE] += int(outside.sum())
                person = _drop_joints(person, outside)
                if person.num_annotated == 0:
                    reason = SKIP_NO_JOINTS_INSIDE
        if reason is not None:
            local[reason] += 1
            continue
        crop, joints, vis, m = crop_context(image, person, input_size, context)
        buf = io.BytesIO()
        crop.save(buf, format="JPEG", quality=JPEG_QUALITY)
        n_others = person.flags.get("n_others", n_people - 1)
        examples.append(_example(buf.getvalue(), person, joints, vis, m, n_others))
    return examples, local


def _load_for(image_dir: Path, name: str, counts: Counter):
    """(image, None) or (None, skip reason): the image's faults are counted, not raised."""
    try:
        path = files.inside(image_dir, name, "the annotations")
        rgb, conversion = images.load_rgb(path)
    except files.EscapingPathError:
        return None, SKIP_ESCAPING_NAME
    except images.ImageError as err:
        return None, err.reason
    if conversion is not None:
        counts[conversion] += 1
    return rgb, None


def write_tfrecords(people: list[Person], image_dir, out_dir, split: str, input_size: int,
                    context: float = preprocess.CONTEXT, counts: Counter | None = None,
                    progress: bool = False, workers: int | None = None) -> dict:
    """Write ``people`` as TFRecord shards ``out_dir/<split>-NNNNN-of-NNNNN.tfrecord``.

    Returns ``{"kept": n, "skipped": {reason: n}, "fixed": {what: n}, "files": [...],
    "bytes": {file: size}}``; ``counts`` (a Counter) also accumulates every reason.
    People sharing an image are processed together (each image is decoded once),
    images in name order by ``workers`` threads (PIL releases the GIL); examples are
    streamed round-robin into the shards, so the output is the same for any number of
    workers.  An image that is missing, unreadable, truncated, too large (a
    decompression bomb) or named outside ``image_dir`` is a counted skip.

    Atomic per split: the shards are written under temporary names and swapped in,
    with ``meta.json``, only when the whole split succeeded (a commit journal, see
    :func:`recover`); a failure or a kill before that leaves the previous shards and
    ``meta.json`` as they were.  The folder is locked (:func:`cpm_nb.core.files.locked`)
    while it is written.
    """
    image_dir, out_dir = Path(image_dir), Path(out_dir)
    counts = Counter() if counts is None else counts
    with files.locked(out_dir):
        recover(out_dir)
        summary = _write_split(people, image_dir, out_dir, split, input_size, context,
                               progress, workers)
    counts.update({**summary["skipped"], **summary["fixed"]})
    return summary


def _write_split(people, image_dir, out_dir, split, input_size, context, progress, workers):
    from concurrent.futures import ThreadPoolExecutor

    groups: dict = {}
    for i, p in enumerate(people):
        groups.setdefault(p.image if p.image else ("", i), []).append(p)
    ordered = [groups[k] for k in sorted(groups, key=lambda k: (k, 0) if isinstance(k, str)
                                         else k)]
    n_shards = max(1, min(64, math.ceil(len(people) / SHARD_SIZE)))
    shards = [out_dir / f"{split}-{k:05d}-of-{n_shards:05d}.tfrecord" for k in range(n_shards)]
    temps = [files.temp_name(f) for f in shards]
    local, n = Counter(), 0
    workers = workers or min(4, os.cpu_count() or 1)

    def work(group):
        return _process_image(group, image_dir, input_size, context, len(group))

    bar = Progress(len(people), f"cropping {split}", unit="person", mode=progress)
    writers, committed = [], False
    try:
        writers = [_ShardWriter(f) for f in temps]
        with ThreadPoolExecutor(workers) as pool:
            for start in range(0, len(ordered), 256):  # bounded memory
                chunk = ordered[start:start + 256]
                for group, (examples, found) in zip(chunk, pool.map(work, chunk)):
                    for ex in examples:
                        writers[n % n_shards].write(ex)
                        n += 1
                    local.update(found)
                    bar.update(len(group))
        for w in writers:
            w.close()
        for f in temps:
            _fsync(f)
        skipped = {k: v for k, v in local.items() if k not in FIXES}
        fixed = {k: v for k, v in local.items() if k in FIXES}
        summary = {"split": split, "kept": n, "skipped": skipped, "fixed": fixed,
                   "files": [f.name for f in shards],
                   "bytes": {f.name: t.stat().st_size for f, t in zip(shards, temps)}}
        journal = _journal(out_dir, split, list(zip(temps, shards)), summary, input_size,
                           context)
        committed = True  # from here on the split is rolled forward (recover), never back
        _apply(out_dir, journal)
    except BaseException:
        for w in writers:
            w.close()
        if not committed:
            for f in temps:
                f.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    return summary


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


# --- committing a split: all or nothing ---------------------------------------------------------


def _journal(out_dir: Path, split: str, renames, summary: dict, input_size: int,
             context: float) -> Path:
    """The commit journal ``.commit-<split>.json`` of a finished split (written atomically):
    the renames of its temporary shards and its summary.  Once it exists the split is
    committed: :func:`_apply` carries it out, or :func:`recover` after a crash."""
    journal = out_dir / f".commit-{split}.json"
    files.atomic_write_json(journal, {
        "split": split, "renames": [[t.name, f.name] for t, f in renames],
        "summary": summary, "input_size": input_size, "context": context})
    return journal


def _apply(out_dir: Path, journal: Path) -> None:
    """Carry out a commit journal: shards renamed into place, the split's other shards
    deleted, ``meta.json`` updated, the journal deleted (each step repeatable)."""
    plan = files.read_json(journal, "commit journal")
    split, keep = plan["split"], {final for _, final in plan["renames"]}
    for tmp, final in plan["renames"]:
        if (out_dir / tmp).exists():
            os.replace(out_dir / tmp, out_dir / final)
    for old in out_dir.glob(f"{split}-*.tfrecord"):
        if old.name not in keep:
            old.unlink()
    _update_meta(out_dir, split, plan["summary"], plan["input_size"], plan["context"])
    journal.unlink()


def recover(out_dir) -> None:
    """Finish a split commit that a crash interrupted (roll forward: its journal is
    written only once every new shard is complete) and delete the temporary shards
    of runs that died before committing.  Call with the folder locked."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    for journal in sorted(out_dir.glob(".commit-*.json")):
        try:
            _apply(out_dir, journal)
        except (OSError, ValueError, KeyError, TypeError):
            journal.unlink(missing_ok=True)  # unusable: the old split stays as it was
    files.remove_leftovers(out_dir)


def _drop_joints(person: Person, drop: np.ndarray) -> Person:
    import copy

    p = copy.copy(person)
    p.missing = person.missing | drop
    p.visible = person.visible & ~drop
    p.joints = np.where(p.missing[:, None], 0.0, person.joints)
    return p


def _update_meta(out_dir: Path, split: str, summary: dict, input_size: int, context: float):
    """Record ``split``'s summary in ``meta.json`` (atomically).  A meta.json for other
    crop settings, or an unreadable one, is started afresh; the ``source`` stamp of
    :func:`prepare_synthetic` is dropped (it is written again once both splits are)."""
    path = out_dir / META_FILE
    try:
        meta = files.read_json(path) if path.is_file() else {}
    except errors.DataError:
        meta = {}
    if not isinstance(meta, dict) or meta.get("input_size") not in (None, input_size) or \
            meta.get("context") not in (None, context):
        meta = {}
    meta.pop("source", None)
    meta.update(input_size=input_size, context=context,
                context_size=preprocess.context_size(input_size, context))
    meta.setdefault("splits", {})[split] = summary
    files.atomic_write_json(path, meta)


def read_meta(tfrecord_dir) -> dict:
    """The folder's ``meta.json``; :class:`cpm_nb.core.errors.DataError` when it is missing
    or unreadable."""
    path = Path(tfrecord_dir) / META_FILE
    if not path.is_file():
        raise errors.DataError(f"no {META_FILE} in {tfrecord_dir}: prepare the data first "
                               "(`cpm-nb prepare synthetic` or `cpm-nb prepare mpii`)")
    meta = files.read_json(path, "prepared data description",
                           fix="prepare the data again (`cpm-nb prepare ... --force`)")
    if not isinstance(meta, dict):
        raise errors.DataError(f"{path} does not describe prepared data; prepare the data again")
    return meta


def count_examples(tfrecord_dir, split: str) -> int:
    """Number of examples in a split (from meta.json)."""
    return int(read_meta(tfrecord_dir)["splits"][split]["kept"])


# --- checking written shards ----------------------------------------------------------


def meta_or_empty(out: Path) -> dict:
    """The folder's ``meta.json``, or ``{}`` when it is missing or unreadable."""
    try:
        meta = files.read_json(out / META_FILE)
    except errors.DataError:
        return {}
    return meta if isinstance(meta, dict) else {}


def check_shards(tfrecord_dir, split: str, deep: bool = False,
                 fix: str = "run `cpm-nb prepare` again") -> None:
    """Check that ``split``'s shards are those ``meta.json`` describes: present, of the
    recorded size and, with ``deep=True``, readable to the end (every record's CRC).
    Raises :class:`cpm_nb.core.files.DataError` naming the shard and ``fix``."""
    tfrecord_dir = Path(tfrecord_dir)
    meta = meta_or_empty(tfrecord_dir)
    summary = meta.get("splits", {}).get(split)
    if not isinstance(summary, dict) or not summary.get("files"):
        raise errors.DataError(f"{tfrecord_dir / META_FILE} has no complete '{split}' split; "
                              f"{fix}")
    sizes = summary.get("bytes", {})
    for name in summary["files"]:
        shard = tfrecord_dir / name
        if not shard.is_file():
            raise errors.DataError(f"TFRecord shard {shard} is missing; {fix}")
        if name in sizes and shard.stat().st_size != sizes[name]:
            raise errors.DataError(f"TFRecord shard {shard} has {shard.stat().st_size} bytes, "
                                  f"not the {sizes[name]} written (truncated or changed); {fix}")
        if deep:
            check_records(shard, fix)


def check_records(shard, fix: str = "run `cpm-nb prepare` again") -> int:
    """Read every record of one shard and check its checksums
    (:func:`cpm_nb.io.records.read_records`); returns the count, or raises
    :class:`cpm_nb.core.files.DataError` naming the shard and ``fix``."""
    n = 0
    try:
        for _ in records.read_records(shard):
            n += 1
    except records.RecordError as err:
        raise errors.DataError(f"TFRecord shard {shard} is corrupted after {n} records "
                               f"({err}); {fix}") from None
    return n
