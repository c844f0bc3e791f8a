"""A session of the course: the active profile, the machine it runs on, and the set-up
every notebook's first cell does (:func:`cpm_nb.setup`) or ``cpm-nb info`` prints."""

from __future__ import annotations

from cpm_nb.core.config import Profile
from cpm_nb.core.runtime import (
    keras_backend,
    seed_everything,
    static_mode,
    versions,
    visible_devices,
)


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


# Inline figures are stored in the notebooks at this resolution: at 72 dpi small labels
# (the architecture diagram's) are unreadable; 100 keeps them sharp and the files small.
FIGURE_DPI = 100

GPU_HINT = (
    "No GPU visible. This notebook runs on the CPU (profile '{profile}'), but a GPU makes it "
    "much faster: on Colab choose Runtime > Change runtime type > T4 GPU, then re-run; "
    "elsewhere install a CUDA-enabled TensorFlow."
)


def setup(profile: Profile, seed: int = 0, wants_gpu: bool = False,
          verbose: bool = True) -> None:
    """Prepare a notebook that runs ``profile``: seeds, determinism, inline figures at
    :data:`FIGURE_DPI`; print the environment.  ``wants_gpu`` marks notebooks that benefit from an
    accelerator; they print how to switch one on when none is visible."""
    import matplotlib as mpl

    seed_everything(seed)
    mpl.rcParams.update({"figure.dpi": FIGURE_DPI, "savefig.dpi": FIGURE_DPI,
                         "figure.max_open_warning": 0})
    info = describe(profile)
    if verbose:
        print(format_description(info))
        if wants_gpu and not any(d.startswith("GPU") for d in info["devices"]):
            print(GPU_HINT.format(profile=info["profile"]))
