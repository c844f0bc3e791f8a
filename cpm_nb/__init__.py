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
    """Notebook set-up; see :func:`cpm_nb.runtime.setup`."""
    from cpm_nb.runtime import setup as _setup

    return _setup(seed=seed, wants_gpu=wants_gpu, verbose=verbose)


def get_profile():
    """The active run profile; see :mod:`cpm_nb.config`."""
    from cpm_nb.config import get_profile as _get_profile

    return _get_profile()
