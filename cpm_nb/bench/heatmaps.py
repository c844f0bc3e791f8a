"""Target maps/s: ``python -m cpm_nb.bench heatmaps``.

16 people x 16 joints on a 46x46 grid (a 368-px input): the in-graph
:func:`cpm_nb.model.heatmaps.render` (``keras.ops``, compiled) against the naive per-joint
NumPy loop (:func:`cpm_nb.model.heatmaps.render_numpy_loop`), with the vectorised NumPy
reference and the largest difference to it.
"""

from __future__ import annotations

import numpy as np

from cpm_nb.bench import print_table, timeit
from cpm_nb.model.heatmaps import compiled_render, render_numpy, render_numpy_loop


def bench_heatmaps(args) -> dict:
    """Maps/s for 16 people x 16 joints at 46x46 (368 input): in-graph vs a per-joint NumPy loop."""
    from cpm_nb.core.runtime import import_keras, visible_devices

    keras = import_keras()
    batch, joints_n, input_size, sigma = 16, 16, 368, 7.0
    rng = np.random.default_rng(0)
    joints = rng.uniform(0, input_size - 1, (batch, joints_n, 2)).astype(np.float32)
    vis = rng.integers(0, 3, (batch, joints_n)).astype(np.int32)
    vis[:, :8] = 2
    fn = compiled_render(input_size, sigma)
    j_t = keras.ops.convert_to_tensor(joints)
    v_t = keras.ops.convert_to_tensor(vis)
    check = np.max(np.abs(np.asarray(fn(j_t, v_t)) - render_numpy(joints, vis, input_size, sigma)))

    def graph():
        out = fn(j_t, v_t)
        np.asarray(out[0, 0, 0, 0])  # wait for the device

    maps_per_call = batch * joints_n
    kw = {"repeat": 3, "min_time": 0.2} if args.quick else {"repeat": 10, "min_time": 2.0}
    ours = timeit(graph, items=maps_per_call, warmup=2, **kw)
    loop = timeit(lambda: render_numpy_loop(joints, vis, input_size, sigma),
                  items=maps_per_call, **kw)
    vec = timeit(lambda: render_numpy(joints, vis, input_size, sigma), items=maps_per_call,
                 **kw)
    device = "GPU" if any(d.startswith("GPU") for d in visible_devices()) else "CPU"
    ratio = ours["per_s"] / loop["per_s"]
    print_table(
        f"heatmaps: {batch} people x {joints_n} joints, {input_size // 8}x{input_size // 8} "
        f"maps, sigma {sigma} px ({keras.config.backend()} on {device})",
        [
            ("in-graph keras.ops (compiled)", f"{ours['per_s']:>12,.0f} maps/s"),
            ("baseline: per-joint NumPy loop", f"{loop['per_s']:>12,.0f} maps/s"),
            ("vectorised NumPy reference", f"{vec['per_s']:>12,.0f} maps/s"),
            ("ratio in-graph / loop", f"{ratio:>12.1f} x"),
            ("max |in-graph - NumPy|", f"{check:>12.2e}"),
        ],
    )
    return {"batch": batch, "joints": joints_n, "map_size": input_size // 8, "sigma": sigma,
            "backend": keras.config.backend(), "device": device,
            "in_graph_maps_per_s": ours["per_s"], "numpy_loop_maps_per_s": loop["per_s"],
            "numpy_vectorised_maps_per_s": vec["per_s"], "ratio_in_graph_vs_loop": ratio,
            "max_abs_diff": float(check)}
