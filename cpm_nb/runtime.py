"""The runtime: versions, devices, seeds and the notebook setup.

Every notebook's first code cell calls :func:`cpm_nb.setup`, which resolves the
active profile and passes it to :func:`setup` here: seeds for Python, NumPy and the
Keras backend, deterministic ops, small figures, and a print-out of what the notebook
will run on.  ``cpm-nb info`` prints the same facts (:func:`describe`).  This module
reads no profile itself (:mod:`cpm_nb.config` imports it to look for a GPU).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from typing import TYPE_CHECKING

from cpm_nb import __version__

if TYPE_CHECKING:
    from cpm_nb.config import Profile

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


def describe(profile: Profile) -> dict:
    """Versions, backend, devices and ``profile``, as a dict."""
    return {
        "versions": versions(),
        "keras_backend": keras_backend(),
        "devices": visible_devices(),
        "profile": profile.name,
        "profile_description": profile.description,
        "profile_sizes": {
            "input_size": profile.input_size,
            "map_size": profile.map_size,
            "stages": profile.stages,
            "width": profile.width,
            "batch_size": profile.batch_size,
            "train_steps": profile.train_steps,
            "n_train": profile.n_train,
            "n_val": profile.n_val,
        },
        "static_widgets": static_mode(),
    }


def format_description(info: dict) -> str:
    v = info["versions"]
    lines = [
        "cpm_nb " + v["cpm_nb"] + "  |  python " + v["python"],
        "  ".join(f"{k} {v[k]}" for k in ("numpy", "tensorflow", "keras", "jax") if k in v),
        f"Keras backend: {info['keras_backend']}  |  devices: {', '.join(info['devices'])}",
        f"profile: {info['profile']} ({info['profile_description']})",
        "  " + ", ".join(f"{k}={val}" for k, val in info["profile_sizes"].items()),
    ]
    return "\n".join(lines)


GPU_HINT = (
    "No GPU visible. This notebook runs on the CPU (profile '{profile}'), but a GPU makes it "
    "much faster: on Colab choose Runtime > Change runtime type > T4 GPU, then re-run; "
    "elsewhere install a CUDA-enabled TensorFlow."
)


def setup(profile: Profile, seed: int = 0, wants_gpu: bool = False,
          verbose: bool = True) -> None:
    """Prepare a notebook that runs ``profile``: seeds, determinism, small inline figures;
    print the environment.  ``wants_gpu`` marks notebooks that benefit from an
    accelerator; they print how to switch one on when none is visible."""
    import matplotlib as mpl

    seed_everything(seed)
    mpl.rcParams.update({"figure.dpi": 72, "savefig.dpi": 100, "figure.max_open_warning": 0})
    info = describe(profile)
    if verbose:
        print(format_description(info))
        if wants_gpu and not any(d.startswith("GPU") for d in info["devices"]):
            print(GPU_HINT.format(profile=info["profile"]))
