"""Test-session defaults: the `fast` profile, static widgets, figures in a temp folder.

These are set before pytest collects anything, so the nbval kernels started for
the notebooks inherit them too.  An explicit CPM_NB_PROFILE wins.
"""

import os
import tempfile

os.environ.setdefault("CPM_NB_PROFILE", "fast")
os.environ["CPM_NB_STATIC"] = "1"
os.environ.setdefault("CPM_NB_FIGURES", tempfile.mkdtemp(prefix="cpm_nb_figures_"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
