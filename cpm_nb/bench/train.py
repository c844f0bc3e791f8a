"""Training throughput: ``python -m cpm_nb.bench train`` (TensorFlow or JAX backend).

For each configuration it measures, in the same run,

* **ours** -- the real training loop: ``keras.Model.fit`` with the run's callbacks, fed
  by the real data path (:func:`cpm_nb.data.batches.fit_batches`: tf.data, or NumPy/PIL without
  TensorFlow) from a prepared synthetic set; steady state, after compilation;
* **baseline** -- the bare compiled step: the same model, loss (:func:`cpm_nb.training.loss.map_loss`
  on rendered targets, plus the L2 term) and optimizer in one ``jax.jit`` /
  ``tf.function`` (XLA where the run uses it) on one batch already on the device.

The ratio ours/baseline is what the loop and its data cost.  Images/s become FLOP/s
as 3 x the forward FLOPs (:func:`cpm_nb.model.cpm.flops_per_image`: forward + backward);
on a GPU the share of the bf16 matrix-multiply rate measured in the same run
(JAX) or of the datasheet peak is printed too.  Configurations: the ``fast`` and
``cpu`` profiles on a CPU; on a GPU the paper's network (``source-article``: 368 px,
6 stages) at batch 32 in the automatic precision (bf16 on Ampere and newer).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

# Dense peak TFLOP/s (datasheets): (16-bit tensor cores, float32 without TF32), by name part.
GPU_PEAK_TFLOPS = {"H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5),
                   "L4": (121.0, 30.3), "V100": (125.0, 15.7), "T4": (65.0, 8.1)}
PAPER_BATCH = 32
BENCH_IMAGES = {"fast": 64, "cpu": 3000, "paper": 2000}  # synthetic training images used


def gpu_peak(name: str) -> tuple[float, float] | None:
    """(16-bit, float32) peak TFLOP/s of a GPU model named in ``name``, if known."""
    for key, peak in GPU_PEAK_TFLOPS.items():
        if key.lower() in name.lower():
            return peak
    return None


def _configs(n_gpus: int) -> dict:
    from cpm_nb.core.config import resolve_profile
    from cpm_nb.model import architecture
    from cpm_nb.training.config import train_config

    if not n_gpus:  # the cpu profile in float32 beside bf16 where the CPU computes bf16
        from cpm_nb.core.runtime import cpu_has_bf16, keras_backend

        cpu = train_config(resolve_profile("cpu"))
        out = {"fast": train_config(resolve_profile("fast")),
               "cpu": cpu.replace(precision="float32")}
        if cpu_has_bf16() and keras_backend() == "tensorflow":
            out["cpu bf16"] = cpu.replace(precision="mixed_bfloat16")
        return out
    paper = train_config(resolve_profile("gpu"), batch_size=PAPER_BATCH)
    return {"paper": paper.replace(model=architecture.get_config("source-article"))}


def _data_folder(name: str, cfg) -> str:
    from cpm_nb.data.synthetic_set import prepare_synthetic

    spec = cfg.synthetic.replace(input_size=cfg.input_size, n_train=BENCH_IMAGES[name], n_val=32)
    return prepare_synthetic(spec).folder


def _random_batch(cfg, seed: int = 0):
    from cpm_nb.model.targets import pack_targets_numpy

    rng = np.random.default_rng(seed)
    s, b = cfg.input_size, cfg.batch_size
    images = rng.integers(0, 256, (b, s, s, 3)).astype(np.float32)
    joints = rng.uniform(0, s - 1, (b, 16, 2)).astype(np.float32)
    return images, pack_targets_numpy(joints, np.full((b, 16), 2))


def bare_step(model, cfg, xla: bool):
    """``step() -> loss`` (synchronised): one compiled training step on a device-resident
    batch, the same model, loss and optimizer as ``fit`` uses, without Keras' loop."""
    from cpm_nb.core.runtime import import_keras, keras_backend
    from cpm_nb.model.heatmaps import render
    from cpm_nb.model.targets import unpack_targets
    from cpm_nb.training.loss import map_loss

    keras = import_keras()
    ops = keras.ops
    optimizer = model.optimizer
    images, packed = _random_batch(cfg)

    def objective(outputs, losses, y):
        joints, vis = unpack_targets(y)
        targets = render(joints, vis, cfg.input_size, cfg.sigma)
        data = sum(ops.mean(map_loss(o, targets)) for o in outputs)
        return data + (sum(losses) if losses else 0.0)

    if keras_backend() == "jax":
        import jax

        x, y = jax.device_put(images), jax.device_put(packed)
        state = [[v.value for v in model.trainable_variables],
                 [v.value for v in model.non_trainable_variables],
                 [v.value for v in optimizer.variables]]

        def loss_fn(tv, ntv, x, y):
            outs, ntv, losses = model.stateless_call(tv, ntv, x, training=True,
                                                     return_losses=True)
            return objective(outs, losses, y), ntv

        grad = jax.value_and_grad(loss_fn, has_aux=True)

        @jax.jit
        def step(tv, ntv, ov, x, y):
            (loss, ntv), g = grad(tv, ntv, x, y)
            tv, ov = optimizer.stateless_apply(ov, g, tv)
            return tv, ntv, ov, loss

        def run():
            tv, ntv, ov, loss = step(*state, x, y)
            state[:] = [tv, ntv, ov]
            return float(loss)

        return run
    import tensorflow as tf

    x, y = tf.constant(images), tf.constant(packed)

    @tf.function(jit_compile=xla)
    def step():
        with tf.GradientTape() as tape:
            loss = objective(model(x, training=True), model.losses, y)
            scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        return loss

    return lambda: float(step())


def fit_rate(model, cfg, folder, steps: int, skip: int = 3) -> dict:
    """Steady-state images/s of ``fit`` with the run's callbacks and real data path."""
    from cpm_nb.core.runtime import import_keras
    from cpm_nb.data import batches as data
    from cpm_nb.training import callbacks as callbacks_of
    from cpm_nb.training import loop as train

    keras = import_keras()
    marks = {}

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == skip - 1:
                marks["t0"] = time.perf_counter()

        def on_train_end(self, logs=None):
            marks["t1"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as tmp:
        run = callbacks_of.Run(cfg.replace(steps=10**9, checkpoint_every=steps, eval_every=0), Path(tmp), 0,
                         train.empty_history(), folder)
        writer = callbacks_of.scalar_writer(Path(tmp) / "logs")
        callbacks = callbacks_of.make_callbacks(run, 10**9, False, False, writer)
        t_start = time.perf_counter()
        model.fit(data.fit_batches(folder, cfg, 0, steps), epochs=1, steps_per_epoch=steps,
                  verbose=0, callbacks=[*callbacks, Clock()], shuffle=False)
        writer.close()
    n = (steps - skip) * cfg.batch_size
    return {"per_s": n / (marks["t1"] - marks["t0"]), "first_call_s": marks["t0"] - t_start,
            "steps": steps}


def bench_train(args) -> dict:
    from cpm_nb import bench
    from cpm_nb.core.runtime import keras_backend
    from cpm_nb.model import architecture
    from cpm_nb.training.config import accelerators, devices_for
    from cpm_nb.training.loop import compile_model

    quick = getattr(args, "quick", False)
    gpus = accelerators()
    backend = keras_backend()
    gpu_name = gpus[0].name if gpus else ""
    load = os.getloadavg()[0]
    results = {"backend": backend, "gpus": len(gpus), "gpu_name": gpu_name,
               "load_average_1min_before": load, "quick": quick, "configs": {}}
    rows = [("machine", f"{os.cpu_count()} CPUs, {len(gpus)} GPUs {gpu_name}; Keras backend "
                        f"{backend}; 1-min load average {load:.2f} before the run")]
    matmul = measured_matmul_peak() if gpus and backend == "jax" else None
    if matmul:
        results["measured_bf16_matmul_tflops"] = matmul
        rows.append(("bf16 matmul 8192^3", f"{matmul:.0f} TFLOP/s (this device's practical peak)"))
    for name, cfg in _configs(len(gpus)).items():
        dev = devices_for(cfg)
        folder = _data_folder(name.split()[0], cfg)
        model = compile_model(cfg, dev)
        flops = 3 * architecture.flops_per_image(cfg.model)
        step = bare_step(model, cfg, dev.xla)
        t0 = time.perf_counter()
        step()
        compile_s = time.perf_counter() - t0
        repeat = 3 if quick else (20 if gpus else 8)
        base = bench.timeit(step, items=cfg.batch_size, warmup=2, repeat=repeat, min_time=0.0)
        base["first_call_s"] = compile_s
        steps = (8 if quick else 25) if not gpus else (30 if quick else 120)
        ours = fit_rate(model, cfg, folder, steps)
        entry = {"config": cfg.to_json(), "precision": dev.precision, "xla": dev.xla,
                 "flops_per_image": flops, "bare_step": base, "fit": ours,
                 "fit_over_bare": ours["per_s"] / base["per_s"]}
        for key in ("bare_step", "fit"):
            t = entry[key]
            t["tflops_per_s"] = t["per_s"] * flops / 1e12
            peak = matmul or (gpu_peak(gpu_name) or (None,))[0]
            if gpus and peak and dev.precision != "float32":
                t["share_of_peak"] = t["tflops_per_s"] / peak
        results["configs"][name] = entry
        label = f"{name} ({cfg.input_size} px, {cfg.stages} st, batch {cfg.batch_size}, " \
                f"{dev.precision})"
        for key, title in (("bare_step", "bare compiled step (baseline)"),
                           ("fit", "fit + data path (ours)")):
            t = entry[key]
            share = f" = {t['share_of_peak']:.0%} of peak" if "share_of_peak" in t else ""
            ratio = "" if key == "bare_step" else f"  {entry['fit_over_bare']:.2f}x baseline"
            rows.append((f"{label} {title}",
                         f"{t['per_s']:8.1f} images/s {t['tflops_per_s'] * 1e3:9.1f} GFLOP/s"
                         f"{share}{ratio}"))
    both = results["configs"].get("cpu"), results["configs"].get("cpu bf16")
    if all(both):
        speedup = {k: both[1][k]["per_s"] / both[0][k]["per_s"] for k in ("bare_step", "fit")}
        results["bf16_over_float32"] = speedup
        rows.append(("cpu: mixed_bfloat16 / float32", f"bare step {speedup['bare_step']:.2f}x, "
                                                       f"fit + data path {speedup['fit']:.2f}x"))
    if not gpus:
        rows.append(("GPU", "none visible: the paper configuration is measured only on a GPU"))
    results["load_average_1min_after"] = os.getloadavg()[0]
    bench.print_table(f"train ({backend}): fit with its data path vs the bare compiled step",
                      rows)
    return results


def measured_matmul_peak(n: int = 8192) -> float:
    """bf16 matrix-multiply TFLOP/s on the first JAX device (the practical peak)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.bfloat16)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    t = time.perf_counter()
    for _ in range(10):
        r = f(a)
    r.block_until_ready()
    return 2 * n**3 * 10 / (time.perf_counter() - t) / 1e12
