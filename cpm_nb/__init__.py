"""cpm_nb: Convolutional Pose Machines (Wei et al., CVPR 2016) as a Jupyter course.

The package holds the heavy lifting behind the numbered notebooks in
``notebooks/`` and the ``cpm-nb`` command line.  Importing it is cheap: modules
that need TensorFlow import it on first use.
"""

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
