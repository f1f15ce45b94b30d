"""The data tools behind ``python -m mpiml.data``: make (:func:`synth`), convert
(:func:`convert`), join files into one data set (:func:`link`), inspect (:func:`inspect`) and
fetch bundled examples (:func:`write_example`), all in bounded memory. Each writes atomically
(:func:`mpiml.files.atomic.atomic_hdf5`)."""

from .converters import convert
from .examples import write_example, write_line_example
from .inspection import inspect
from .linking import link
from .synthetic import synth

__all__ = ["convert", "inspect", "link", "synth", "write_example", "write_line_example"]
