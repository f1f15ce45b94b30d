"""Compiled kernels (numba) for the loops numpy cannot make fast, each beside a pure-numpy
reference in :mod:`mpiml.models` that the tests compare it with.

Importing this package does not import numba (0.3 s): :func:`kmeans_tile` loads it on first
use. ``MPIML_KERNELS`` chooses once per process: ``numba`` (the default) or ``numpy`` (the
references, e.g. to compare them). When numba cannot be imported, the references run instead
and a ``RuntimeWarning`` says why, once. ``python -m mpiml.kernels`` compiles every kernel into
numba's on-disk cache (``make`` does this when it sets up the venv).
"""

from __future__ import annotations

import importlib
import os
import warnings
from functools import cache

#: The values ``MPIML_KERNELS`` may take.
CHOICES = ("numba", "numpy")


def choice() -> str:
    """``MPIML_KERNELS`` (default ``numba``), checked."""
    value = os.environ.get("MPIML_KERNELS", "numba")
    if value not in CHOICES:
        raise ValueError(f"MPIML_KERNELS must be one of {CHOICES}; got {value!r}")
    return value


def _compiled(module: str, what: str):
    """Module ``module`` of this package (importing it compiles or loads its kernels), or None
    when ``MPIML_KERNELS=numpy`` or numba cannot be imported; then ``what`` runs its numpy
    reference, and a ``RuntimeWarning`` says so."""
    if choice() == "numpy":
        return None
    try:
        return importlib.import_module(f"{__name__}.{module}")
    except ImportError as exc:
        warnings.warn(f"numba cannot be imported ({exc}): {what} runs its numpy reference, "
                      "several times slower", RuntimeWarning, stacklevel=3)
        return None


@cache
def kmeans_tile():
    """:func:`mpiml.kernels.kmeans.kmeans_tile`, or None (the caller runs its reference)."""
    module = _compiled("kmeans", "K-Means")
    return None if module is None else module.kmeans_tile


@cache
def tree_kernels():
    """:mod:`mpiml.kernels.histograms` (node histograms and row partitions of tree growth), or
    None (:mod:`mpiml.models.tree_growth` runs its references)."""
    return _compiled("histograms", "tree growth")


@cache
def binning_kernel():
    """:func:`mpiml.kernels.binning.bin_rows`, or None (:func:`mpiml.models.trees.bin_features`
    runs its reference)."""
    module = _compiled("binning", "binning")
    return None if module is None else module.bin_rows
