"""Data parallelism, run for real on two devices without a GPU: TensorFlow's
``MirroredStrategy`` on the CPU split into two logical devices, Keras' JAX ``DataParallel``
on two fake host devices (``--xla_force_host_platform_device_count=2``).

Each backend trains in a subprocess, because the devices must be configured before
TensorFlow or JAX starts.  There the `fast` profile's network trains 4 steps on one device,
then 4 steps with the same global batch split across the two (``TrainConfig(distribute=True)``
forces what :func:`cpm_nb.training.config.devices_for` decides on several GPUs): the two
checkpoints (every variable of the model and of the optimizer) must agree to float
round-off.  The optimizer is SGD with momentum (the `gpu` profile's, the one data parallelism
is for), with a weight decay large enough that a regulariser counted once per device would
show.  Then the checkpoint written under the distribution resumes on one device, and its next
step must equal the one-device run's next step.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-6  # float32 round-off of a different summation order, after 5 steps

SCRIPT = r"""
import json, sys
import numpy as np

out, backend = sys.argv[1], sys.argv[2]
if backend == "tensorflow":  # two logical CPU devices, before TensorFlow initialises
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from cpm_nb.core.config import resolve_profile
from cpm_nb.core.runtime import import_keras
from cpm_nb.training import config as TC, loop as T, runs

keras = import_keras()
cfg = TC.train_config(resolve_profile("fast"), steps=100, checkpoint_every=2, optimizer="sgd", weight_decay=0.05,
                     precision="float32")  # bf16 on CPUs that have it: equal only in float32


def devices_of(model):
    if backend == "jax":
        return len(model.weights[0].value.sharding.device_set)
    return model.distribute_strategy.num_replicas_in_sync


def train(name, distribute, steps, resume=False):
    result = T.train(cfg.replace(distribute=distribute), f"{out}/{name}", resume=resume,
                     progress=False, verbose=False, stop_after=steps)
    return result, devices_of(result.model)


def largest_difference(a, b):
    assert sorted(a) == sorted(b), sorted(set(a) ^ set(b))
    return max(float(np.max(np.abs(np.asarray(a[k], np.float64) - b[k]))) for k in a)


start = {v.path: np.asarray(v) for v in T.compile_model(cfg.replace(distribute=False)).weights}
one, one_devices = train("one", False, 4)
two, two_devices = train("two", True, 4)
weights_one, state_one = runs.read_checkpoint(f"{out}/one/checkpoint.npz")
weights_two, state_two = runs.read_checkpoint(f"{out}/two/checkpoint.npz")
moved = max(float(np.max(np.abs(weights_one["model/" + k] - v))) for k, v in start.items())
# the distributed run's checkpoint, resumed on one device, against the one-device run's
resumed, resumed_devices = train("two", False, 1, resume=True)
reference, _ = train("one", False, 1, resume=True)
after = largest_difference({v.path: np.asarray(v) for v in resumed.model.weights},
                           {v.path: np.asarray(v) for v in reference.model.weights})
print("RESULT " + json.dumps({
    "backend": keras.config.backend(), "devices": [one_devices, two_devices, resumed_devices],
    "steps": [state_one["step"], state_two["step"], resumed.step, reference.step],
    "loss": [one.history["loss"], two.history["loss"]], "variables": len(weights_two),
    "max_difference_4_steps": largest_difference(weights_one, weights_two),
    "max_change_from_init": moved, "max_difference_after_resume": after}))
"""


def run_two_devices(tmp_path, backend: str, extra_env: dict) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "CPM_NB_STATIC": "1",
           "TF_CPP_MIN_LOG_LEVEL": "3", **extra_env}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), backend], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    print(f"\n{backend}: {result}")
    return result


def check(result: dict, backend: str) -> None:
    assert result["backend"] == backend
    assert result["devices"] == [1, 2, 1], "one device, then two, then one again"
    assert result["steps"] == [4, 4, 5, 5]
    assert result["max_change_from_init"] > 1e-3  # training moved the weights: not trivial
    assert result["max_difference_4_steps"] < TOLERANCE
    assert result["max_difference_after_resume"] < TOLERANCE
    one, two = result["loss"]
    assert one == pytest.approx(two, rel=1e-5)


def test_mirrored_strategy_on_two_logical_cpus_equals_one_device(tmp_path):
    check(run_two_devices(tmp_path, "tensorflow", {}), "tensorflow")


def test_jax_data_parallel_on_two_host_devices_equals_one_device(tmp_path):
    pytest.importorskip("jax")
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2")
    check(run_two_devices(tmp_path, "jax", {"XLA_FLAGS": flags.strip()}), "jax")
