"""Compiling every kernel ahead of its first use, for every dtype mpiml calls it with."""

from __future__ import annotations

import numpy as np

from . import binning_kernel, kmeans_tile, tree_kernels


def warm_all() -> tuple[int, int]:
    """Call each kernel once per signature on tiny arrays; returns (signatures compiled now,
    signatures loaded from numba's on-disk cache). (0, 0) when the kernels are off."""
    kernel = kmeans_tile()
    if kernel is None:
        return 0, 0
    for dtype in (np.float32, np.float64):
        for sample_weight in (None, np.ones(2)):
            kernel(np.zeros((2, 1), dtype=dtype), np.zeros(1), np.zeros(2),
                   np.zeros((2, 3), dtype=dtype), sample_weight, np.empty(2, dtype=np.int64),
                   np.empty(2), np.zeros((1, 3)), np.zeros(1))
    compiled = [kernel]
    histograms, bin_rows = tree_kernels(), binning_kernel()
    binned = np.zeros((2, 2), dtype=np.uint8, order="F")  # F layout (not also C, as (2, 1))
    rows, scratch = np.arange(2), np.empty(2, dtype=np.int64)
    histograms.node_histogram(binned, rows, np.zeros(2), np.zeros(2), np.zeros((2, 2, 3)))
    histograms.root_histogram(binned, np.zeros(2), np.zeros(2), np.zeros((2, 2, 3)))
    histograms.union_histograms(binned, rows, np.zeros(2, dtype=np.int32), np.zeros(2),
                                np.zeros(2), np.zeros((1, 2, 2, 3)))
    histograms.partition_rows(binned, rows, 0, 0, scratch)
    histograms.best_split(np.zeros((2, 2, 3)), np.zeros(3), 1.0, 1.0, 1, 0.0, 1e-3)
    for dtype in (np.float32, np.float64):
        bin_rows(np.zeros((2, 2), dtype=dtype), np.zeros(2), np.array([0, 1, 2]), binned, 0)
    compiled += [histograms.node_histogram, histograms.root_histogram,
                 histograms.union_histograms, histograms.partition_rows, histograms.best_split,
                 bin_rows]
    return (sum(sum(k.stats.cache_misses.values()) for k in compiled),
            sum(sum(k.stats.cache_hits.values()) for k in compiled))
