"""cpm_nb: Convolutional Pose Machines (Wei et al., CVPR 2016) as a Jupyter course.

The package holds the heavy lifting behind the numbered notebooks in
``notebooks/`` and the ``cpm-nb`` command line.  Importing it is cheap: the names
below are imported from their subpackages on first use, and modules that need
TensorFlow import it then.

What a practitioner needs (see the README, "From Python"):

* profiles and configurations: :func:`setup`, :func:`get_profile`, :func:`resolve_profile`,
  :class:`Profile`, :class:`CPMConfig`, :func:`get_config`;
* the network: :func:`build_cpm`, :class:`CPM` (a Keras model that carries its
  configuration), :class:`CPMLoss`, :func:`load_keras`;
* data: :class:`SyntheticSpec`, :func:`prepare_synthetic`, :func:`make_dataset`;
* training: :class:`TrainConfig`, :func:`train_config`, :func:`train`,
  :func:`load_or_train`, :func:`load_run`;
* prediction: :class:`Predictor`, :func:`load_predictor`, :func:`export_model`;
* scoring: :func:`evaluate`, :func:`collect`, :func:`pckh`, :func:`pcp`,
  :func:`evaluate_mpii`.
"""

import importlib
import os

__version__ = "0.1.0"

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) goes to the
# process's stderr, which notebooks capture; silence it unless the user asked
# for logs.  Must happen before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def setup(seed: int = 0, wants_gpu: bool = False, verbose: bool = True):
    """The notebooks' entry point: resolve the active profile (:func:`cpm_nb.core.config.get_profile`),
    prepare the session for it (:func:`cpm_nb.core.session.setup`: seeds, determinism,
    figures, a print-out of the environment) and return it, to be passed down explicitly."""
    from cpm_nb.core import config, session

    profile = config.get_profile()
    session.setup(profile, seed=seed, wants_gpu=wants_gpu, verbose=verbose)
    return profile


def get_profile():
    """The active run profile; see :mod:`cpm_nb.core.config`."""
    from cpm_nb.core.config import get_profile as _get_profile

    return _get_profile()


# name -> the module it lives in, imported on first use (keeps `import cpm_nb` cheap)
_API = {
    "resolve_profile": "cpm_nb.core.config",
    "Profile": "cpm_nb.core.config",
    "CPMConfig": "cpm_nb.model.architecture",
    "get_config": "cpm_nb.model.architecture",
    "build_cpm": "cpm_nb.model.cpm",
    "CPM": "cpm_nb.model.network",
    "load_keras": "cpm_nb.model.network",
    "CPMLoss": "cpm_nb.training.loss",
    "SyntheticSpec": "cpm_nb.data.synthetic_set",
    "prepare_synthetic": "cpm_nb.data.synthetic_set",
    "make_dataset": "cpm_nb.data.pipeline",
    "TrainConfig": "cpm_nb.training.config",
    "train_config": "cpm_nb.training.config",
    "train": "cpm_nb.training.loop",
    "load_or_train": "cpm_nb.training.loop",
    "load_run": "cpm_nb.training.runs",
    "Predictor": "cpm_nb.inference.predict",
    "load_predictor": "cpm_nb.inference.predict",
    "export_model": "cpm_nb.inference.export",
    "evaluate": "cpm_nb.evaluation.evaluate",
    "collect": "cpm_nb.evaluation.evaluate",
    "pckh": "cpm_nb.evaluation.metrics",
    "pcp": "cpm_nb.evaluation.metrics",
    "evaluate_mpii": "cpm_nb.evaluation.mpii_mat",
}

__all__ = ["__version__", "setup", "get_profile", *_API]


def __getattr__(name):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # found once
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
