"""Batches for training and evaluation, with or without TensorFlow.

Two input paths read the same prepared shards (``cpm-nb prepare``) and produce
the same kind of batches:

* ``tf`` -- ``tf.data`` (the fast path wherever TensorFlow is installed, whatever
  the Keras backend): records parsed, JPEG windows decoded and warped in parallel
  graph ops (:func:`cpm_nb.data.pipeline.example_parser`), prefetched;
* ``numpy`` -- an ordered, prefetching generator over the pure-Python record reader
  (:mod:`cpm_nb.io.records`), PIL decoding and the NumPy reference augmentation
  (:mod:`cpm_nb.data.preprocess`), in worker threads.  It needs only Keras, NumPy and
  Pillow: training runs on a machine with JAX and no TensorFlow.

``input_path="auto"`` picks ``tf`` when TensorFlow can be imported.

The data order is a pure function of ``(seed, step)``: example ``p = step * B + i``
of a run is record ``order(p mod N)`` of a fresh permutation for epoch ``p div N``
(keyed by ``(seed, epoch)``), augmented with random draws keyed by ``(seed, p)``.
A run resumed at step ``k`` therefore sees exactly the batches an uninterrupted
run sees from step ``k`` on.  (The two paths draw from different generators, so
their batches are equally distributed but not equal.)  Training records are held
in memory (the synthetic sets are tens of MB); past :data:`MAX_RECORD_BYTES` the
``tf`` path streams the shards with a shuffle seeded by the start step instead.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np

from cpm_nb.core import errors
from cpm_nb.core.runtime import import_tensorflow, tensorflow_available
from cpm_nb.data import pipeline, preprocess, schema, shards
from cpm_nb.io import records

INPUT_PATHS = ("auto", "tf", "numpy")
MAX_RECORD_BYTES = 1 << 30  # hold training records in memory up to 1 GiB


DataError = errors.DataError  # prepared data that is missing, damaged or made for another model


def resolve_input_path(path: str = "auto") -> str:
    if path not in INPUT_PATHS:
        raise ValueError(f"input path must be one of {', '.join(INPUT_PATHS)}, not {path!r}")
    if path == "auto":
        return "tf" if tensorflow_available() else "numpy"
    return path


def shard_files(folder, split: str) -> list[Path]:
    shards = sorted(Path(folder).glob(f"{split}-*.tfrecord"))
    if not shards:
        raise DataError(f"no {split}-*.tfrecord shards in {folder}: prepare the data first "
                        "(`cpm-nb prepare synthetic` or `cpm-nb prepare mpii`)")
    return shards


def data_meta(folder) -> dict:
    """The prepared folder's ``meta.json`` (:class:`DataError` when missing or unreadable)."""
    return shards.read_meta(folder)


def check_data(folder, model_config) -> dict:
    """The data's ``meta.json``; a one-line :class:`DataError` when its crops do not fit the
    model (checked before any work)."""
    meta = data_meta(folder)
    size = int(meta.get("input_size", -1))
    if size != model_config.input_size:
        raise DataError(f"{folder} holds {size}-px crops but the model takes "
                        f"{model_config.input_size} px: prepare the data for "
                        f"{model_config.input_size} px or train a model of {size} px")
    return meta


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The record order of one epoch (a permutation keyed by ``(seed, epoch)``)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


# --- tf.data (fast path) -----------------------------------------------------------------------


def tf_training_dataset(folder, batch_size: int, seed: int = 0, start_step: int = 0,
                        augment: bool = True):
    """Infinite training batches ``(images, joints, visibility)`` from ``start_step`` on."""
    from cpm_nb.core.runtime import import_keras

    import_keras()
    tf = import_tensorflow()

    meta = data_meta(folder)
    input_size, context = int(meta["input_size"]), float(meta["context"])
    shards = [str(p) for p in shard_files(folder, "train")]
    parse = pipeline.example_parser(input_size, context, augment, seed)
    if sum(os.path.getsize(f) for f in shards) > MAX_RECORD_BYTES:
        stream_seed = int(np.random.default_rng([seed, start_step]).integers(2**31))
        ds = pipeline.make_dataset(folder, "train", batch_size=batch_size, augment=augment,
                                   deterministic=True, seed=stream_seed)
        return ds.map(lambda *b: b[:3])
    table = tf.constant(list(tf.data.TFRecordDataset(shards).as_numpy_iterator()))
    n = int(table.shape[0])
    seed64 = tf.constant(seed, tf.int64)

    def load(p):
        epoch, k = p // n, p % n
        index = tf.random.experimental.index_shuffle(k, tf.stack([seed64, epoch]),
                                                     tf.constant(n - 1, tf.int64))
        return parse(p, tf.gather(table, index))

    ds = tf.data.Dataset.range(start_step * batch_size, 2**62)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


# --- NumPy / PIL (no TensorFlow) ---------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _load_split(folder: str, split: str, mtime: float) -> tuple:
    """The examples of a split; ``mtime`` (of ``meta.json``) is only part of the cache key,
    so a re-prepared folder is read again."""
    examples = []
    for shard in shard_files(folder, split):
        try:
            examples.extend(schema.decode(r, str(shard)) for r in records.read_records(shard))
        except records.RecordError as err:
            raise DataError(f"{shard}: {err}: prepare the data again "
                            "(`cpm-nb prepare ... --force`)") from None
    return tuple(examples)


def load_split(folder, split: str) -> tuple:
    """Every decoded example of a split (:func:`cpm_nb.data.schema.decode`: each field of
    its schema shape), cached per folder and ``meta.json`` time."""
    meta_time = (Path(folder) / shards.META_FILE).stat().st_mtime
    return _load_split(str(folder), split, meta_time)


def numpy_example(record: dict, position: int, input_size: int, context: float,
                  seed: int = 0, augment: bool = True, with_meta: bool = False):
    """The NumPy/PIL twin of :func:`cpm_nb.data.pipeline.example_parser` for one decoded record."""
    from PIL import Image

    if augment:
        aug = preprocess.sample_augmentation(np.random.default_rng([seed, position]))
    else:
        aug = preprocess.Augmentation()
    forward = preprocess.augment_matrix(input_size, aug, context)  # context crop -> crop
    with Image.open(io.BytesIO(record["image"])) as im:
        image = im.convert("RGB")
    crop = np.asarray(preprocess.warp_pil(image, forward, input_size, source_one_based=False))
    joints, vis = preprocess.transform_joints(record["joints"], record["visibility"], forward,
                                              aug.flip)
    if not with_meta:
        return crop, joints, vis
    info = {
        "crop_matrix": (forward @ record["ctx_matrix"].astype(np.float64)).astype(np.float32),
        "center": record["center"],
        "scale": np.float32(record["scale"][0]),
        "orig_joints": record["orig_joints"],
        "head_box": record["head_box"],
        "img_index": np.int64(record["img_index"][0]),
        "person_index": np.int64(record["person_index"][0]),
        "image_name": record["image_name"],
        "n_others": np.int64(record["n_others"][0]),
        "flipped": aug.flip,
    }
    return crop, joints, vis, info


def _stack(examples: list) -> tuple:
    out = [np.stack([e[k] for e in examples]) for k in range(3)]
    if len(examples[0]) == 4:
        out.append({key: np.stack([e[3][key] for e in examples]) for key in examples[0][3]})
    return tuple(out)


class NumpyBatches:
    """Batches ``(images, joints, visibility[, meta])`` of a split, each a pure function of
    its index (:meth:`batch`), and an ordered, prefetching iterator over them (:meth:`iterate`,
    worker threads: PIL decodes and warps without holding the GIL).

    ``split="train"`` (augmented by default): ``steps`` batches from ``start_step`` on, in
    the run's data order.  Other splits: one ordered pass, the last batch possibly short.
    ``outputs=T`` gives what ``fit`` takes instead: ``(images, (packed targets,) * T)``,
    where ``images`` become ``[images, centre maps]`` for a ``model`` (a
    :class:`~cpm_nb.model.architecture.CPMConfig`) with a centre-map input.
    """

    def __init__(self, folder, split: str, batch_size: int, seed: int = 0, start_step: int = 0,
                 steps: int | None = None, augment: bool | None = None,
                 with_meta: bool = False, outputs: int = 0, model=None):
        meta = data_meta(folder)
        self.input_size, self.context = int(meta["input_size"]), float(meta["context"])
        self.examples = load_split(folder, split)
        self.n = len(self.examples)
        self.train = split == "train"
        self.augment = self.train if augment is None else augment
        if self.train and steps is None:
            raise ValueError("NumpyBatches of the train split needs steps")
        self.length = steps if self.train else -(-self.n // batch_size)
        self.batch_size, self.seed, self.start_step = batch_size, seed, start_step
        self.with_meta, self.outputs = with_meta, outputs
        self.model = model  # a CPMConfig: fit's inputs are what it takes (model_inputs)

    def __len__(self) -> int:
        return self.length

    def positions(self, i: int) -> np.ndarray:
        if self.train:
            return (self.start_step + i) * self.batch_size + np.arange(self.batch_size)
        return np.arange(i * self.batch_size, min(self.n, (i + 1) * self.batch_size))

    def batch(self, i: int):
        from cpm_nb.model.inputs import model_inputs
        from cpm_nb.model.targets import pack_targets_numpy

        if not 0 <= i < self.length:
            raise IndexError(i)
        chosen = []
        for p in self.positions(i):
            index = epoch_order(self.n, self.seed, int(p // self.n))[p % self.n] \
                if self.train else p
            chosen.append(numpy_example(self.examples[index], int(p), self.input_size,
                                        self.context, self.seed, self.augment, self.with_meta))
        batch = _stack(chosen)
        if self.outputs:
            centre = self.model is not None and self.model.center_map
            x = model_inputs(batch[0], self.model) if centre else batch[0]
            return x, (pack_targets_numpy(batch[1], batch[2]),) * self.outputs
        return batch

    def iterate(self, workers: int | None = None, prefetch: int | None = None):
        """Yield every batch in order, ``prefetch`` batches ahead on ``workers`` threads."""
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        workers = workers or os.cpu_count() or 1
        prefetch = prefetch or 2 * workers
        with ThreadPoolExecutor(workers) as pool:
            pending = deque()
            for i in range(self.length):
                pending.append(pool.submit(self.batch, i))
                if len(pending) > prefetch:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


# --- what fit and evaluation take ---------------------------------------------------------------


def fit_batches(folder, cfg, start_step: int, steps: int, input_path: str = "auto"):
    """Training batches in the form ``keras.Model.fit`` takes for ``cfg``'s model:
    ``(images, (packed targets,) * stages)``, from ``start_step`` on; for a model with a
    centre-map input ``([images, centre maps], ...)``, the maps at the crop centre (where
    every crop, augmented or not, keeps the person's centre)."""
    path = resolve_input_path(input_path)
    stages = cfg.stages
    if path == "numpy":
        return NumpyBatches(folder, "train", cfg.batch_size, cfg.seed, start_step, steps,
                            cfg.augment, outputs=stages, model=cfg.model).iterate()
    tf = import_tensorflow()  # (keras.ops would be JAX ops under the JAX backend)
    centre = None
    if cfg.model.center_map:
        from cpm_nb.model.inputs import center_maps

        centre = tf.constant(center_maps(1, cfg.model))

    def fit_form(images, joints, vis):
        packed = tf.concat([tf.reshape(joints, [-1, 2 * joints.shape[1]]),
                            tf.cast(vis, tf.float32)], axis=-1)
        if centre is not None:
            maps = tf.repeat(centre, tf.shape(images)[0], axis=0)
            return (tf.cast(images, tf.float32), maps), (packed,) * stages
        return images, (packed,) * stages

    ds = tf_training_dataset(folder, cfg.batch_size, cfg.seed, start_step, cfg.augment)
    return ds.map(fit_form)


def evaluation_batches(folder, split: str = "val", batch_size: int = 32,
                       input_path: str = "auto"):
    """One ordered, unaugmented pass ``(images, joints, visibility, meta)`` as NumPy."""
    if resolve_input_path(input_path) == "numpy":
        return NumpyBatches(folder, split, batch_size, with_meta=True).iterate()
    shard_files(folder, split)  # a clear error for a missing split
    ds = pipeline.make_dataset(folder, split, batch_size=batch_size, augment=False,
                               shuffle=False, repeat=False, deterministic=True, with_meta=True)
    return ds.as_numpy_iterator()
