"""``python -m mpiml.predict``: distributed prediction (:mod:`mpiml.cli.predict`)."""

import sys

from mpiml.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
