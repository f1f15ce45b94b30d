"""``python -m mpiml.data``: the data command line (:mod:`mpiml.cli.data`)."""

import sys

from ..cli.data import main

sys.exit(main())
