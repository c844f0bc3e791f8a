"""``python -m cpm_nb.bench NAME``: run one benchmark."""

import sys

from cpm_nb.bench import main

sys.exit(main())
