"""Forward-pass throughput: ``python -m cpm_nb.bench model``.

The paper-size CPM (``source-article``: 368 px, 6 stages) at batch 1 and 8, eager
calls (the baseline) against the compiled forward pass of
:func:`cpm_nb.model.network.make_predict_fn`, in images/s and FLOP/s.
"""

from __future__ import annotations

import os
import time

import numpy as np

from cpm_nb.bench import print_table, timeit
from cpm_nb.model.architecture import count_params, flops_per_image, get_config
from cpm_nb.model.cpm import build_cpm


def bench_model(args) -> dict:
    """Forward-pass images/s of the paper-size model (source-article, 368 px, 6 stages)
    at batch 1 and 8: eager calls (the baseline) versus compiled ones, and the FLOP/s.

    TensorFlow backend: eager ``model(x)``, ``tf.function`` (graph) and ``tf.function``
    with XLA; JAX: eager versus ``jax.jit``.  The first call of each variant (tracing,
    compilation) is reported separately and not timed; the timed calls of the variants
    are interleaved, and the CPU time per wall second ("cores") shows how much of the
    machine the run really had while other processes shared it.
    """
    from cpm_nb.core.runtime import import_keras, keras_backend
    from cpm_nb.model.network import make_predict_fn

    import_keras()
    cfg = get_config(getattr(args, "config", None) or "source-article")  # tests pass a small one
    flops = flops_per_image(cfg)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    model = build_cpm(cfg, seed=0)
    build_s = time.perf_counter() - t0
    quick = getattr(args, "quick", False)
    variants = _variants(model, keras_backend())
    default = make_predict_fn(model).compiled
    results: dict = {"config": cfg.name, "input_size": cfg.input_size, "stages": cfg.stages,
                     "params": count_params(cfg), "flops_per_image": flops,
                     "backend": keras_backend(), "make_predict_fn_default": default,
                     "quick": quick, "load_average_1min_before": load, "build_s": build_s,
                     "batches": {}}
    rows = [("model", f"{cfg.name}: {cfg.input_size} px, {cfg.stages} stages, "
                      f"{results['params']:,} params, {flops / 1e9:.1f} GFLOPs/image"),
            ("machine", f"{os.cpu_count()} CPUs; 1-min load average {load:.2f} before the "
                        "run (other processes share the cores)")]
    rng = np.random.default_rng(0)
    for batch in (1, 8):
        images = rng.integers(0, 256, (batch, cfg.input_size, cfg.input_size, 3)).astype(
            np.float32)
        repeat = 1 if quick else (3 if batch == 1 else 2)
        per_batch = _time_variants(model, variants, images, repeat, flops)
        results["batches"][str(batch)] = per_batch
        rows += _rows(batch, per_batch)
    results["load_average_1min_after"] = os.getloadavg()[0]
    rows.append(("make_predict_fn", f"uses {default} by default on this machine"))
    print_table("model: CPM forward pass, compiled vs eager (baseline)", rows)
    return results


def _variants(model, backend: str) -> dict:
    """name -> compiled predict function (None: the eager baseline)."""
    from cpm_nb.model.network import make_predict_fn

    variants = {"eager": None}
    if backend == "tensorflow":
        variants["tf.function"] = make_predict_fn(model, jit_compile=False)
        variants["tf.function+XLA"] = make_predict_fn(model, jit_compile=True)
    else:
        fn = make_predict_fn(model)
        variants[fn.compiled] = fn
    return variants


def _time_variants(model, variants: dict, images: np.ndarray, repeat: int, flops: int) -> dict:
    """Timings of every variant on one batch: first call apart, then interleaved calls."""
    from cpm_nb.core.runtime import import_keras

    x = import_keras().ops.convert_to_tensor(images)
    batch = len(images)
    calls, first, samples = {}, {}, {}
    for name, fn in variants.items():
        if fn is None:
            def call(x=x):
                return [np.asarray(o) for o in model(x, training=False)]
        else:
            def call(fn=fn, images=images):
                return fn(images)
        t0 = time.perf_counter()
        call()  # first call: tracing / compilation (+ one forward pass)
        first[name] = time.perf_counter() - t0
        calls[name], samples[name] = call, []
    # Interleave the variants (round robin), so that a change in the load from other
    # processes affects all of them alike; CPU time / wall time = cores we really got.
    for _ in range(repeat):
        for name, call in calls.items():
            cpu0 = time.process_time()
            t = timeit(call, items=batch, warmup=0, repeat=1, min_time=0.0)
            samples[name].append((t["median_s"], time.process_time() - cpu0))
    per_batch = {}
    for name, runs in samples.items():
        walls = sorted(w for w, _ in runs)
        median = walls[len(walls) // 2]
        t = {"calls": len(runs), "best_s": walls[0], "median_s": median,
             "per_s": batch / median, "gflops_per_s": batch / median * flops / 1e9,
             "first_call_s": first[name],
             "cores_used": sum(c for _, c in runs) / sum(w for w, _ in runs)}
        t["gflops_per_s_per_core"] = t["gflops_per_s"] / max(t["cores_used"], 1e-9)
        per_batch[name] = t
    return per_batch


def _rows(batch: int, per_batch: dict) -> list[tuple[str, str]]:
    eager = per_batch["eager"]["per_s"]
    rows = []
    for name, t in per_batch.items():
        ratio = "(baseline)" if name == "eager" else f"{t['per_s'] / eager:.2f}x eager"
        rows.append((f"batch {batch}  {name}",
                     f"{t['per_s']:6.2f} images/s {t['gflops_per_s']:7.1f} GFLOP/s  "
                     f"{ratio:<11} median {t['median_s']:.2f} s/batch over {t['calls']}, "
                     f"first call {t['first_call_s']:.1f} s, {t['cores_used']:.1f} cores "
                     f"({t['gflops_per_s_per_core']:.0f} GFLOP/s per core)"))
    return rows
