"""Augmented examples/s: ``python -m cpm_nb.bench pipeline``.

:func:`compare_throughput` times :func:`cpm_nb.data.pipeline.make_dataset` (tf.data from the
TFRecords, both warps) against two per-sample baselines that do what common PyTorch
pose loaders do, one example at a time (PIL decode, then a SciPy or a PIL warp), in the
same process, and reports wall-clock rates and CPU time per example.
:func:`bench_pipeline` runs it on a cached synthetic set of MPII-sized photos (368-px
crops, 1280x720 sources).  Notebook 02 uses :func:`compare_throughput` and
:func:`throughput_rows` too.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from cpm_nb.bench import print_table, timeit
from cpm_nb.data import preprocess
from cpm_nb.data.mpii import Person
from cpm_nb.data.pipeline import AUTO_PIL_SIZE, make_dataset
from cpm_nb.data.shards import META_FILE, read_meta, write_tfrecords

BENCH_SIZE = 368  # the paper's crop
BENCH_IMAGE = (1280, 720)  # source photos of MPII's typical size


def _timed(fn, items: int, warmup: int, min_time: float, repeat: int) -> dict:
    """:func:`cpm_nb.bench.timeit` plus the process CPU time (all threads) per item."""
    for _ in range(warmup):
        fn()
    cpu = time.process_time()
    t = timeit(fn, items=items, warmup=0, repeat=repeat, min_time=min_time)
    t["cpu_ms_per_item"] = 1000 * (time.process_time() - cpu) / (t["calls"] * items)
    return t


def compare_throughput(people: list[Person], image_dir, tfrecord_dir, batch_size: int = 16,
                       seconds: float = 10.0, seed: int = 0, cores: int = 2) -> dict:
    """Augmented examples/s: :func:`make_dataset` vs two per-sample baselines.

    The baselines do what common PyTorch pose loaders do, one example at a time:
    open the photo (PIL), draw an augmentation, warp the person crop with SciPy
    (:func:`cpm_nb.data.preprocess.warp_numpy`, the NumPy reference) or with PIL's C
    resampler, and transform the joints.  All run in this process, now.

    Besides wall-clock rates (which other processes on a shared machine depress,
    the parallel pipeline more than the serial baselines), it reports the CPU time
    per example and the rate it implies on ``cores`` idle cores: ``cores / CPU
    time`` for the pipeline, ``1 / CPU time`` for a baseline (one process).
    """
    from PIL import Image

    image_dir = Path(image_dir)
    input_size = int(read_meta(tfrecord_dir)["input_size"])

    def ours(warp):
        it = iter(make_dataset(tfrecord_dir, "train", batch_size=batch_size, seed=seed,
                               warp=warp))
        # warm-up: tracing, tf.data autotuning and the shuffle buffer settle in ~10 batches
        return _timed(lambda: next(it)[0].numpy(), batch_size, 15, seconds, 5)

    pil_warp_t, tf_warp_t = ours("pil"), ours("tf")
    ours_t = pil_warp_t if input_size >= AUTO_PIL_SIZE else tf_warp_t  # warp="auto"
    rng = np.random.default_rng(seed)
    state = {"k": 0}

    def per_sample(warp):
        def run():
            crops = []
            for _ in range(batch_size):
                p = people[state["k"] % len(people)]
                state["k"] += 1
                img = Image.open(image_dir / p.image).convert("RGB")
                aug = preprocess.sample_augmentation(rng)
                m = preprocess.crop_matrix(p.objpos, p.scale, input_size, aug.rotation,
                                           aug.scale_factor, aug.flip)
                crops.append(warp(img, m))
                preprocess.transform_joints(p.joints, p.visibility, m, aug.flip)
            return np.stack(crops)
        return run

    def scipy_warp(img, m):
        return preprocess.warp_numpy(np.asarray(img), m, input_size)

    def pil_warp(img, m):
        return np.asarray(preprocess.warp_pil(img, m, input_size))

    base_t = _timed(per_sample(scipy_warp), batch_size, 1, seconds / 2, 3)
    pil_t = _timed(per_sample(pil_warp), batch_size, 1, seconds / 2, 3)
    ours_idle = 1000 * cores / ours_t["cpu_ms_per_item"]
    base_idle = 1000 / base_t["cpu_ms_per_item"]
    pil_idle = 1000 / pil_t["cpu_ms_per_item"]
    return {"ours_per_s": ours_t["per_s"], "baseline_per_s": base_t["per_s"],
            "ratio": ours_t["per_s"] / base_t["per_s"], "baseline_pil_per_s": pil_t["per_s"],
            "ratio_pil": ours_t["per_s"] / pil_t["per_s"],
            "ours_pil_warp_per_s": pil_warp_t["per_s"], "ours_tf_warp_per_s": tf_warp_t["per_s"],
            "ours_warp": "pil" if input_size >= AUTO_PIL_SIZE else "tf",
            "cpu_ms_per_example": {"ours": ours_t["cpu_ms_per_item"],
                                   "ours_pil_warp": pil_warp_t["cpu_ms_per_item"],
                                   "ours_tf_warp": tf_warp_t["cpu_ms_per_item"],
                                   "baseline": base_t["cpu_ms_per_item"],
                                   "baseline_pil": pil_t["cpu_ms_per_item"]},
            "idle_cores": cores, "ours_idle_per_s": ours_idle, "baseline_idle_per_s": base_idle,
            "baseline_pil_idle_per_s": pil_idle, "ratio_idle": ours_idle / base_idle,
            "ratio_pil_idle": ours_idle / pil_idle,
            "batch_size": batch_size, "input_size": input_size, "ours": ours_t,
            "baseline": base_t, "baseline_pil": pil_t}


def throughput_rows(r: dict) -> list[tuple[str, str]]:
    cpu = r["cpu_ms_per_example"]

    def row(label, rate, ms):
        return label, f"{rate:>8.1f} examples/s   {ms:>6.2f} CPU ms/example"

    n = r["idle_cores"]
    return [
        row(f"ours: tf.data from TFRecords (warp='{r['ours_warp']}')", r["ours_per_s"],
            cpu["ours"]),
        row("  variant warp='pil'", r["ours_pil_warp_per_s"], cpu["ours_pil_warp"]),
        row("  variant warp='tf'", r["ours_tf_warp_per_s"], cpu["ours_tf_warp"]),
        row("baseline: per sample, PIL decode + SciPy warp", r["baseline_per_s"],
            cpu["baseline"]),
        row("baseline: per sample, PIL decode + PIL warp", r["baseline_pil_per_s"],
            cpu["baseline_pil"]),
        ("ratio ours / SciPy baseline (wall)", f"{r['ratio']:>8.1f} x"),
        ("ratio ours / PIL baseline (wall)", f"{r['ratio_pil']:>8.1f} x"),
        (f"on {n} idle cores (from CPU time): ours", f"{r['ours_idle_per_s']:>8.1f} examples/s"),
        ("  ratio to SciPy / PIL baselines (1 process)",
         f"{r['ratio_idle']:>8.1f} x / {r['ratio_pil_idle']:.1f} x"),
    ]


def _bench_data(n_images: int):
    """A cached synthetic set of MPII-sized photos for 368-px crops, with its TFRecords."""
    from cpm_nb.data import mpii, synthetic

    w, h = BENCH_IMAGE
    root = synthetic.data_dir() / "bench" / f"pipeline-{BENCH_SIZE}-{w}x{h}-{n_images}"
    tfr = root / "tfrecords"
    if (root / "meta.json").is_file() and (tfr / META_FILE).is_file():
        return mpii.read_json(root / "train.json"), root / "images", tfr
    data = synthetic.generate(root, n_images, 0, BENCH_SIZE, seed=0, size=BENCH_IMAGE)
    write_tfrecords(data.train, data.image_dir, tfr, "train", BENCH_SIZE)
    return data.train, data.image_dir, tfr


def bench_pipeline(args) -> dict:
    """Augmented 368-px examples/s: our tf.data pipeline vs per-sample NumPy/PIL/SciPy."""
    quick = getattr(args, "quick", False)
    people, image_dir, tfr = _bench_data(64 if quick else 256)
    r = compare_throughput(people, image_dir, tfr, 16, seconds=2.0 if quick else 10.0)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    w, h = BENCH_IMAGE
    print_table(
        f"pipeline: augmented {BENCH_SIZE}-px crops (scale 0.7-1.3, rotation +-40 deg, flip) "
        f"from {w}x{h} photos, batch 16, {cores} CPU cores",
        [*throughput_rows(r), ("goal", ">= 150 examples/s and >= 3x the baseline")],
    )
    return {**r, "cores": cores, "source_image_size": [w, h],
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
