"""The command lines: train, predict, data, plot. They parse arguments, build the run, and turn
any rank's uncaught exception into a job-wide abort; nothing in the library imports them.

Each is installed as a console script (``mpiml-train``, ``mpiml-predict``, ``mpiml-data``,
``mpiml-plot``) and reached as ``python -m mpiml <command>`` or ``python -m mpiml.<command>``.
"""

from __future__ import annotations

import argparse

from .. import __version__

#: command -> (module under mpiml.cli, one line of help)
COMMANDS = {"train": ("train", "train a model on the ranks of an MPI job"),
            "predict": ("predict", "predict the rows of an HDF5 file with a model file"),
            "data": ("data", "make, convert and inspect HDF5 data files"),
            "plot": ("plot", "draw the training curves of a run directory")}


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Give ``parser`` the ``--version`` option every mpiml command has."""
    parser.add_argument("--version", action="version", version=f"mpiml {__version__}")
    return parser
