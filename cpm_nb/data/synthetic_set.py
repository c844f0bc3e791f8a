"""The synthetic set a run uses: what it is (:class:`SyntheticSpec`) and the one function
that makes it ready (:func:`prepare_synthetic`).

A :class:`SyntheticSpec` names the set (its cache folder), gives its crop size, its number
of training and validation images, the data seed and the generator version; an entry
point makes one from a profile (:meth:`SyntheticSpec.from_profile`) and a training
configuration carries it (:class:`cpm_nb.training.config.TrainConfig`), so nothing
below the entry point rebuilds a profile to find the data.

:func:`prepare_synthetic` renders the people once (:mod:`cpm_nb.data.synthetic`), writes
their TFRecord shards once (:mod:`cpm_nb.data.shards`) and returns a
:class:`PreparedSet`: the shards' folder (what :func:`cpm_nb.data.pipeline.make_dataset`
and :mod:`cpm_nb.data.batches` read), the summary of every split, and what it did.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from cpm_nb.core import errors, files
from cpm_nb.data import synthetic
from cpm_nb.data.shards import META_FILE, check_shards, meta_or_empty, recover, write_tfrecords

if TYPE_CHECKING:
    from cpm_nb.core.config import Profile


@dataclass(frozen=True)
class SyntheticSpec:
    """Which synthetic set: ``name`` (its cache folder ``<data>/synthetic/<name>-seed<seed>``),
    the crop size of its shards, the number of training and validation images, the data
    seed (image ``i`` of a split is drawn from ``(seed, split, i)``) and the version of the
    generator that draws it."""

    name: str
    input_size: int
    n_train: int
    n_val: int
    seed: int = 0
    generator_version: int = synthetic.GENERATOR_VERSION

    def __post_init__(self):
        for field in ("n_train", "n_val"):
            if getattr(self, field) < 1:
                raise errors.ConfigError(f"the synthetic set needs {field} >= 1, got "
                                         f"{getattr(self, field)}")
        if self.seed < 0:
            raise errors.ConfigError(f"the data seed must be >= 0, got {self.seed}")

    @classmethod
    def from_profile(cls, profile: Profile, **changes) -> SyntheticSpec:
        """The set of ``profile`` (its name, crop size, sizes and seed) with ``changes``."""
        spec = cls(name=profile.name, input_size=profile.input_size, n_train=profile.n_train,
                   n_val=profile.n_val, seed=profile.seed)
        return spec.replace(**changes)

    def replace(self, **changes) -> SyntheticSpec:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def root(self) -> Path:
        """The folder of the rendered images and annotations."""
        return synthetic.default_root(self, self.seed)

    @property
    def tfrecord_dir(self) -> Path:
        """The folder of the shards."""
        return self.root / f"tfrecords-{self.input_size}"


class PreparedSet(NamedTuple):
    """What :func:`prepare_synthetic` returns."""

    folder: Path  # the TFRecord shards (train-*.tfrecord, val-*.tfrecord, meta.json)
    splits: dict  # {split: summary of its shards (kept, skipped, fixed)}
    data: synthetic.SyntheticSet  # the people of each split and the images' folder
    written: bool  # False: the shards were there already
    repaired: str | None  # why damaged shards were written again, if they were
    seconds: float


def prepare_synthetic(spec: SyntheticSpec, force: bool = False, progress: bool = False,
                      verify: bool = False) -> PreparedSet:
    """Render (or load) the synthetic set ``spec`` and write its TFRecords when missing.

    Shards whose size no longer matches ``meta.json`` (truncated, replaced) are written
    again; ``verify=True`` also reads every record (CRC checks); ``force`` renders and
    writes everything again.  Holds the set's folder lock: a second process preparing
    the same set waits, then uses the first one's result.
    """
    if spec.generator_version != synthetic.GENERATOR_VERSION:
        raise errors.ConfigError(
            f"the synthetic set {spec.name!r} was made by generator version "
            f"{spec.generator_version}; this version of cpm-nb draws version "
            f"{synthetic.GENERATOR_VERSION} (train the run again on the current set)")
    start = time.perf_counter()
    out = spec.tfrecord_dir
    with files.locked(spec.root):
        data = synthetic.load_or_generate(spec, spec.seed, force=force, progress=progress)
        stamp = files.read_json(data.root / "meta.json", "synthetic set stamp")
        with files.locked(out):
            recover(out)
            meta = meta_or_empty(out)
            repaired = None
            if not force and meta.get("source") == stamp and \
                    meta.get("input_size") == spec.input_size:
                try:
                    for split in ("train", "val"):
                        check_shards(out, split, deep=verify)
                    return PreparedSet(out, meta["splits"], data, False, None,
                                       time.perf_counter() - start)
                except errors.DataError as err:
                    repaired = str(err)
            splits = {split: write_tfrecords(people, data.image_dir, out, split,
                                             spec.input_size, progress=progress)
                      for split, people in (("train", data.train), ("val", data.val))}
            meta = meta_or_empty(out)
            meta["source"] = stamp
            files.atomic_write_json(out / META_FILE, meta)
    return PreparedSet(out, splits, data, True, repaired, time.perf_counter() - start)
