"""``python -m mpiml.plot``: training curves of a run directory (:mod:`mpiml.cli.plot`)."""

import sys

from mpiml.cli.plot import main

if __name__ == "__main__":
    sys.exit(main())
