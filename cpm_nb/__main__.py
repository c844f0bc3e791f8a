"""``python -m cpm_nb`` is the ``cpm-nb`` command line."""

import sys

from cpm_nb.cli import main

sys.exit(main())
