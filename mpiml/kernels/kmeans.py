"""The compiled K-Means kernel (numba): from a tile of rows and their products with the centres,
each row's nearest centre and squared distance, and the tile's per-cluster sums, weights and
inertia, in one pass over the rows.

Compiled on first use for the dtypes it meets and cached on disk (``cache=True``: in
``__pycache__`` beside this file, or numba's user-wide cache where that is not writable), so
a machine compiles it once, not every rank of every run. Single-threaded: no ``parallel=True``,
because every rank already has a core of its own.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def kmeans_tile(products, center_norms, x_norms, X, sample_weight, labels, distances, sums,
                cluster_weights) -> float:
    """Nearest centre of every row of the tile ``X`` and the tile's Lloyd statistics.

    ``products[i, c]`` is ``-2 x_i.c`` (X's dtype); the score ``products[i, c] + ||c||^2`` is
    added in float64 and the lowest score wins, the lowest index on a tie (as ``np.argmin``).
    Writes ``labels[i]`` and ``distances[i] = max(score + ||x_i||^2, 0)``, adds ``w_i x_i`` to
    ``sums[label]`` and ``w_i`` to ``cluster_weights[label]`` (float64; ``sample_weight`` None:
    every ``w_i`` is 1) and returns ``sum_i w_i distances[i]``. The same arithmetic as the
    numpy reference (:func:`mpiml.models.kmeans.assign`) for labels and distances; the sums
    add the same products in row order.
    """
    n_rows, n_clusters = products.shape
    n_features = X.shape[1]
    scores = np.empty(n_clusters)
    inertia = 0.0
    for i in range(n_rows):
        for c in range(n_clusters):  # first all scores (vectorised), then the minimum: 20% faster
            scores[c] = np.float64(products[i, c]) + center_norms[c]
        best = scores[0]
        label = 0
        for c in range(1, n_clusters):
            if scores[c] < best:
                best = scores[c]
                label = c
        distance = max(best + x_norms[i], 0.0)
        labels[i] = label
        distances[i] = distance
        weight = 1.0 if sample_weight is None else sample_weight[i]
        for j in range(n_features):
            sums[label, j] += weight * np.float64(X[i, j])
        cluster_weights[label] += weight
        inertia += weight * distance
    return inertia
