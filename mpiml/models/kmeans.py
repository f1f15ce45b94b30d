"""K-Means arithmetic on one rank's rows (no MPI): distances to centres, nearest centres, and
the sufficient statistics of a Lloyd update, packed for one allreduce.

The distributed fit (seeding, Lloyd and mini-batch iterations) is :mod:`mpiml.fit.kmeans`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .base import weighted_sum

#: Entries of the (rows x clusters) distance tile computed at a time: bounds the temporaries.
TILE_VALUES = 1 << 20
#: Rows per tile of the dense cluster-sum product (a k x rows indicator times the rows).
STATISTICS_TILE_ROWS = 1 << 14


def row_norms(X) -> np.ndarray:
    """``||x_i||^2`` for every row, float64."""
    if sp.issparse(X):
        return np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", X, X, dtype=np.float64)


def assign(X, centers: np.ndarray, x_norms: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest of ``centers`` for every row of ``X`` and the squared distance to it.

    ``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2``, one matrix product per tile of rows, in X's
    dtype (float32 rows are never copied to float64; the centres are cast instead). ``||x||^2``
    does not change which centre is nearest, so it is added only to each row's minimum; the
    distance is clipped at 0 against rounding. Ties go to the lowest centre index (argmin), as
    in scikit-learn. ``x_norms``: :func:`row_norms` of X, when the caller keeps them.
    """
    centers = np.asarray(centers, dtype=np.float64)
    x_norms = row_norms(X) if x_norms is None else x_norms
    n = X.shape[0]
    labels = np.empty(n, dtype=np.int64)
    distances = np.empty(n, dtype=np.float64)
    center_norms = np.einsum("ij,ij->i", centers, centers)
    weights = (-2.0 * centers.T).astype(np.float32 if X.dtype == np.float32 else np.float64)
    tile = max(1, TILE_VALUES // len(centers))
    for lo in range(0, n, tile):
        hi = min(n, lo + tile)
        partial = np.asarray(X[lo:hi] @ weights, dtype=np.float64)  # -2 x.c
        partial += center_norms
        labels[lo:hi] = np.argmin(partial, axis=1)
        nearest = partial[np.arange(hi - lo), labels[lo:hi]]
        nearest += x_norms[lo:hi]
        np.maximum(nearest, 0.0, out=distances[lo:hi])
    return labels, distances


def nearest_center(X, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest of ``centers`` for every row of ``X`` (prediction)."""
    return assign(X, centers)[0]


def statistics_size(n_clusters: int, n_features: int) -> int:
    """Length of the buffer :func:`cluster_statistics` fills."""
    return n_clusters * n_features + n_clusters + 1


def cluster_statistics(out: np.ndarray, X, labels: np.ndarray, distances: np.ndarray,
                       sample_weight: np.ndarray | None = None) -> None:
    """``out`` = [per-cluster sums of rows (k*d) | counts (k) | sum of squared distances],
    with per-row ``sample_weight`` (None: all 1) the weighted sums, the weight of each cluster
    in place of its count, and the weighted sum of squared distances.

    Dense rows: per tile of rows a dense (k x rows) indicator (holding the weights) times the
    tile (one small matrix product in float64; a float32 tile is widened, a copy that stays in
    cache); CSR rows: one sparse one-hot product. Sums are float64 whatever X's dtype, so they
    do not depend on how the rows are split into tiles or over ranks beyond float64 rounding.
    """
    n, d = X.shape
    k = (out.size - 1) // (d + 1)
    if sp.issparse(X):
        entries = np.ones(n) if sample_weight is None else sample_weight
        one_hot = sp.csr_matrix((entries, (labels, np.arange(n))), shape=(k, n))
        out[: k * d] = (one_hot @ X).toarray().ravel()
    else:
        sums = out[: k * d].reshape(k, d)
        sums[...] = 0.0
        clusters = np.arange(k)[:, None]
        for lo in range(0, n, STATISTICS_TILE_ROWS):
            hi = min(n, lo + STATISTICS_TILE_ROWS)
            indicator = (labels[lo:hi] == clusters).astype(np.float64)
            if sample_weight is not None:
                indicator *= sample_weight[lo:hi]
            sums += indicator @ np.asarray(X[lo:hi], dtype=np.float64)
    out[k * d : k * d + k] = np.bincount(labels, weights=sample_weight, minlength=k)
    out[-1] = weighted_sum(distances, sample_weight)
