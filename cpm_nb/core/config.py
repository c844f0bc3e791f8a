"""Run profiles: every size in the course comes from here.

Three profiles trade fidelity for time:

* ``fast`` -- continuous integration: every notebook runs well under two minutes
  on 2 CPU cores.  Tiny inputs, few stages, a handful of steps.
* ``cpu``  -- the default without a GPU: a learner's laptop, minutes per notebook.
* ``gpu``  -- the default when a GPU is visible: the paper-size configuration
  (368x368 input, 6 stages, full width).

The active profile is chosen by the ``CPM_NB_PROFILE`` environment variable,
otherwise automatically (``gpu`` when the Keras backend sees a GPU, else ``cpu``).
Only entry points read it: the commands (``cpm-nb --profile``) and the notebooks'
:func:`cpm_nb.setup` call :func:`get_profile` once and pass the profile (or the sizes
and configurations made from it) down; library functions take them as arguments.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from cpm_nb.core.errors import ConfigError

PROFILE_ENV = "CPM_NB_PROFILE"

# The CPM networks downsample by three 2x2 max-pools: belief maps live on a grid
# 8x coarser than the input (368 px -> 46 cells).
OUTPUT_STRIDE = 8


@dataclass(frozen=True)
class Profile:
    """All sizes one run of the course uses.  Frozen: derive variants with ``replace``."""

    name: str
    description: str
    # model
    input_size: int  # side of the square person crop, pixels (multiple of OUTPUT_STRIDE)
    stages: int  # CPM stages (the paper: 6)
    width: float  # channel multiplier on the paper's trunk/stage widths
    # labels
    sigma: float  # Gaussian label-map sigma, in input pixels
    # data
    n_train: int  # synthetic training images
    n_val: int  # synthetic validation images
    # training
    batch_size: int
    train_steps: int
    learning_rate: float
    seed: int = 0
    # the named network (cpm_nb.model.architecture.NAMED_CONFIGS) the sizes above scale
    architecture: str = "source-article"

    def __post_init__(self):
        for name in ("input_size", "stages", "n_train", "n_val", "batch_size", "train_steps",
                     "seed"):
            value, lowest = getattr(self, name), 0 if name == "seed" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ProfileError(f"profile {self.name!r}: {name} must be an integer >= "
                                   f"{lowest}, got {value!r}")
        if self.input_size % OUTPUT_STRIDE:
            raise ProfileError(f"profile {self.name!r}: input_size must be a multiple of "
                               f"{OUTPUT_STRIDE}, got {self.input_size}")
        for name in ("width", "sigma", "learning_rate"):  # `not (x > 0)`: NaN fails too
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ProfileError(f"profile {self.name!r}: {name} must be a finite number "
                                   f"> 0, got {value!r}")

    @property
    def map_size(self) -> int:
        """Side of the belief maps (input_size / OUTPUT_STRIDE)."""
        return self.input_size // OUTPUT_STRIDE

    def replace(self, **changes) -> Profile:
        return dataclasses.replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "fast": Profile(
        name="fast",
        description="CI smoke run: every notebook well under 2 minutes on 2 CPU cores",
        input_size=64,
        stages=2,
        width=0.125,
        sigma=3.0,
        n_train=64,
        n_val=32,
        batch_size=8,
        train_steps=20,
        learning_rate=1e-3,
    ),
    "cpu": Profile(
        name="cpu",
        description="laptop CPU: synthetic data; a trained preset loads in seconds, "
                    "retraining takes about 9 minutes on 2 cores with bf16",
        # the stage experiment's network, which keeps the paper's proportions: stage 1 sees
        # 62 px = 0.48 of the crop (the paper: 160 of 368 px), stage 2 the whole crop
        architecture="stage-experiment",
        input_size=128,
        stages=2,
        width=0.25,
        sigma=5.0,
        n_train=3000,
        n_val=300,
        batch_size=16,
        train_steps=6000,
        learning_rate=3e-3,
    ),
    "gpu": Profile(
        name="gpu",
        description="the paper configuration: 368 px, 6 stages, full width, on a GPU",
        input_size=368,
        stages=6,
        width=1.0,
        sigma=7.0,
        n_train=20000,
        n_val=2000,
        batch_size=16,
        train_steps=320_000,  # real MPII: the released model's iterations
        learning_rate=8e-5,
    ),
}

_active: Profile | None = None


class ProfileError(ConfigError):
    """An unknown profile name."""


def profile_names() -> list[str]:
    return list(PROFILES)


def resolve_profile(name: str) -> Profile:
    """The profile called ``name``; a clear error naming the valid ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        valid = ", ".join(PROFILES)
        raise ProfileError(
            f"unknown profile {name!r} (from {PROFILE_ENV} or --profile); valid profiles: {valid}"
        ) from None


def default_profile_name() -> str:
    """``CPM_NB_PROFILE`` if set, else ``gpu`` when a GPU is visible, else ``cpu``."""
    name = os.environ.get(PROFILE_ENV, "").strip()
    if name:
        return name
    from cpm_nb.core.runtime import gpu_available

    return "gpu" if gpu_available() else "cpu"


def get_profile() -> Profile:
    """The active profile (chosen once per process, or by ``set_profile``)."""
    global _active
    if _active is None:
        _active = resolve_profile(default_profile_name())
    return _active


def set_profile(profile: str | Profile) -> Profile:
    """Make ``profile`` (a name or a Profile) the active profile and return it."""
    global _active
    _active = resolve_profile(profile) if isinstance(profile, str) else profile
    return _active
