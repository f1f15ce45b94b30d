"""``python -m mpiml.train``: the training command (:mod:`mpiml.cli.train`)."""

import sys

from mpiml.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
