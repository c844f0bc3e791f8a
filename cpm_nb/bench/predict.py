"""End-to-end prediction speed: ``python -m cpm_nb.bench predict``.

Times the whole predict path of :mod:`cpm_nb.inference.predict` (JPEG bytes -> decode -> crop ->
network -> joints in original pixels) against the raw compiled forward pass of the
same crops, interleaved in the same run; see :func:`bench_predict`.
"""

from __future__ import annotations

import io
import os
import time

import numpy as np

from cpm_nb.bench import print_table, timeit
from cpm_nb.inference.predict import DEFAULT_BATCH, Predictor
from cpm_nb.model import architecture


def _bench_jpegs(n: int, size: tuple[int, int], seed: int = 0) -> list[bytes]:
    """``n`` distinct JPEG photos (the matplotlib sample portrait, shifted and tinted)."""
    from PIL import Image

    from cpm_nb.course.convolution import sample_photo

    w, h = size
    base = (sample_photo(max(w, h)) * 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        dy, dx = rng.integers(0, max(w, h) - h + 1), rng.integers(0, max(w, h) - w + 1)
        gray = base[dy:dy + h, dx:dx + w].astype(np.float32)
        tint = rng.uniform(0.7, 1.0, 3)
        rgb = np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def _bench_one(cfg, image_size, batch: int, n_batches: int, repeat: int) -> dict:
    from cpm_nb.model import cpm as M
    from cpm_nb.model.network import make_predict_fn

    model = M.build_cpm(cfg, seed=0)
    predictor = Predictor(model, source=cfg.name)
    raw = make_predict_fn(model)
    jpegs = _bench_jpegs(batch * n_batches, image_size)
    w, h = image_size
    person = dict(center=((w + 1) / 2, (h + 1) / 2), scale=0.8 * h / 200)
    crops = [np.concatenate([predictor.prepare(j, **person).crops
                             for j in jpegs[b * batch:(b + 1) * batch]])
             for b in range(n_batches)]

    def forward():
        for c in crops:
            raw(c)

    def end_to_end():
        n = 0
        for _, p in predictor.predict_many(jpegs, batch_size=batch, **person):
            assert not isinstance(p, Exception), p
            n += 1
        assert n == len(jpegs)

    def prep_only():
        for j in jpegs:
            predictor.prepare(j, **person)

    images = batch * n_batches
    first = {}
    for name, fn in (("forward", forward), ("end_to_end", end_to_end)):
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    samples = {"forward": [], "end_to_end": []}
    cpu = {"forward": 0.0, "end_to_end": 0.0}
    pair = (("forward", forward), ("end_to_end", end_to_end))
    for r in range(repeat):  # interleaved A B B A ..., so that load changes hit both alike
        for name, fn in (pair if r % 2 == 0 else pair[::-1]):
            c0 = time.process_time()
            samples[name].append(timeit(fn, items=images, warmup=0, repeat=1,
                                        min_time=0.0)["median_s"])
            cpu[name] += time.process_time() - c0
    prep = timeit(prep_only, items=images, warmup=0, repeat=max(1, repeat // 2),
                  min_time=0.0)
    out = {"config": cfg.name, "input_size": cfg.input_size, "stages": cfg.stages,
           "width": cfg.width, "params": architecture.count_params(cfg), "image_size": list(image_size),
           "batch": batch, "images_per_run": images, "repeat": repeat,
           "first_run_s": first, "prep_only_per_s": prep["per_s"]}
    for name, runs in samples.items():
        times = sorted(runs)
        med = times[len(times) // 2]
        out[name] = {"median_s": med, "best_s": times[0], "per_s": images / med,
                     "cores_used": cpu[name] / sum(times)}
    out["ratio"] = out["end_to_end"]["per_s"] / out["forward"]["per_s"]
    out["ratio_best"] = out["forward"]["best_s"] / out["end_to_end"]["best_s"]
    pairs = [f / e for f, e in zip(samples["forward"], samples["end_to_end"])]
    out["ratio_per_round"] = pairs
    out["within_15_percent"] = bool(out["ratio"] >= 0.85)
    return out


def bench_predict(args) -> dict:
    """End-to-end images/s of the predict path (JPEG bytes -> decode -> crop -> network ->
    decoded joints in original pixels; overlay drawing and file writing excluded) against
    the raw compiled forward pass of the same crops (:func:`cpm_nb.model.network.make_predict_fn`),
    batch 8, for the paper configuration (source-article, 368 px, 1280x720 photos;
    untrained weights) and the ``cpu`` profile's model (128 px on 288x224 images, the
    synthetic image size).  Goal: end to end >= 85 % of the raw forward rate."""
    from cpm_nb.core.runtime import import_keras
    from cpm_nb.data import synthetic
    from cpm_nb.model import architecture

    import_keras()
    quick = getattr(args, "quick", False)
    load = os.getloadavg()[0]
    cpu_cfg = architecture.get_config("cpu")
    cases = getattr(args, "cases", None) or [
        ("paper", architecture.get_config("source-article"), (1280, 720), 1, 2 if quick else 6),
        ("cpu", cpu_cfg, synthetic.image_size(cpu_cfg.input_size), 2 if quick else 8,
         2 if quick else 9),
    ]
    results = {"batch": DEFAULT_BATCH, "quick": quick, "load_average_1min_before": load,
               "cases": {}}
    for label, cfg, size, n_batches, repeat in cases:
        r = _bench_one(cfg, size, DEFAULT_BATCH, n_batches, repeat)
        results["cases"][label] = r
        print_table(
            f"predict path vs raw forward: {label} ({cfg.name}, {cfg.input_size} px, "
            f"{cfg.stages} stages, width {cfg.width:g}; {size[0]}x{size[1]} JPEGs), batch "
            f"{DEFAULT_BATCH}",
            [("raw forward (make_predict_fn)",
              f"{r['forward']['per_s']:8.2f} images/s  ({r['forward']['cores_used']:.2f} cores)"),
             ("end to end (decode+crop+net+joints)",
              f"{r['end_to_end']['per_s']:8.2f} images/s  "
              f"({r['end_to_end']['cores_used']:.2f} cores)"),
             ("ratio end-to-end / forward", f"{r['ratio']:8.3f}  (goal >= 0.85: "
                                            f"{'met' if r['within_15_percent'] else 'NOT met'})"),
             ("ratio of the best runs", f"{r['ratio_best']:8.3f}"),
             ("ratio per round", " ".join(f"{v:.2f}" for v in r["ratio_per_round"])),
             ("decode+crop alone, 1 thread", f"{r['prep_only_per_s']:8.1f} images/s"),
             ("images per timed run x runs", f"{r['images_per_run']} x {r['repeat']}")])
        print()
    results["load_average_1min_after"] = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, 1-min load average {load:.2f} before, "
          f"{results['load_average_1min_after']:.2f} after (other processes share the cores)")
    return results
