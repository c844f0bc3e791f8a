"""The runtime: the Keras backend, versions, devices and seeds, and quiet imports of
TensorFlow and Keras.  It knows no profile (:mod:`cpm_nb.core.config` imports it to look
for a GPU; :mod:`cpm_nb.core.session` combines the two)."""

from __future__ import annotations

import contextlib
import os
import platform
import sys

from cpm_nb import __version__

STATIC_ENV = "CPM_NB_STATIC"


@contextlib.contextmanager
def quiet_native_stderr():
    """Send the process's native stderr (file descriptor 2) to /dev/null for a moment.

    TensorFlow's C++ start-up messages (CUDA probing, oneDNN notices) are written
    before its log level is read, straight to descriptor 2, which Jupyter kernels
    forward into notebook outputs.  Python exceptions are unaffected.
    """
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") < "2":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_keras():
    """Import Keras (and its backend) without the backend's native start-up chatter."""
    if "keras" not in sys.modules:
        with quiet_native_stderr():
            import keras  # noqa: F401
            if keras.config.backend() == "tensorflow":
                import tensorflow as tf

                tf.config.list_physical_devices()  # device probing logs happen here
    return sys.modules["keras"]


def import_tensorflow():
    """Import TensorFlow (for tf.data and TFRecord files) without its native start-up
    chatter."""
    if "tensorflow" not in sys.modules:
        with quiet_native_stderr():
            import tensorflow  # noqa: F401
    return sys.modules["tensorflow"]


def keras_backend() -> str:
    """The Keras backend name, read without importing Keras (``KERAS_BACKEND``)."""
    if "keras" in sys.modules:
        return sys.modules["keras"].config.backend()
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def visible_devices() -> list[str]:
    """Devices the Keras backend can compute on, e.g. ``['CPU:0', 'GPU:0']``."""
    backend = keras_backend()
    if backend == "jax":
        import jax

        return [f"{d.platform.upper()}:{d.id}" for d in jax.devices()]
    if backend == "torch":
        import torch

        gpus = [f"GPU:{i}" for i in range(torch.cuda.device_count())]
        return ["CPU:0", *gpus]
    import_keras()
    import tensorflow as tf

    return [f"{d.device_type}:{d.name.rsplit(':', 1)[-1]}" for d in tf.config.list_physical_devices()]


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # instructions that make bf16 fast on a CPU


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_has_bf16() -> bool:
    """Whether the CPU computes bfloat16 in hardware (AMX-BF16 or AVX512-BF16).  Without it
    oneDNN emulates bf16 (2.3x slower than float32, measured here) or fails outright."""
    return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)


def gpu_available() -> bool:
    return any(d.startswith("GPU") for d in visible_devices())


def static_mode() -> bool:
    """True for headless runs (``CPM_NB_STATIC=1``): widgets render static figures."""
    return os.environ.get(STATIC_ENV, "0").strip().lower() not in ("", "0", "false", "no")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and the backend, and ask TensorFlow for deterministic ops."""
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    if keras_backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def versions() -> dict[str, str]:
    """Versions of Python and the numeric stack (libraries that are not imported are skipped)."""
    import numpy

    import_keras()
    out = {"cpm_nb": __version__, "python": platform.python_version(), "numpy": numpy.__version__}
    for name in ("tensorflow", "keras", "jax"):
        if name in sys.modules:
            out[name] = getattr(sys.modules[name], "__version__", "?")
    return out


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported here (imported quietly when it can)."""
    try:
        import_tensorflow()
    except ImportError:
        return False
    return True
