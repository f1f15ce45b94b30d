"""K-Means arithmetic on one rank's rows (no MPI): distances to centres, nearest centres, and
the sufficient statistics of a Lloyd update, packed for one allreduce.

:func:`assign_with_statistics` is a Lloyd pass: dense rows go through the compiled kernel
(:func:`mpiml.kernels.kmeans.kmeans_tile`, one pass over each tile of rows); CSR rows, and every
row when the kernels are off, through the numpy reference :func:`assign` then
:func:`cluster_statistics`. Both compute the same products tile by tile (:func:`_products`), so
their labels and distances are identical bit for bit.

The distributed fit (seeding, Lloyd and mini-batch iterations) is :mod:`mpiml.fit.kmeans`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..kernels import kmeans_tile
from .base import weighted_sum

#: Bytes of rows per tile of the distance products: the tile stays in cache between the
#: product and the kernel's pass over its rows (256 KiB: 2,048 rows of 32 float32) ...
TILE_BYTES = 1 << 18
#: ... and entries of its (rows x clusters) products: bounds that temporary for large k ...
TILE_VALUES = 1 << 20
#: ... but at least this many rows, so that the per-tile calls stay cheap for wide rows.
MIN_TILE_ROWS = 256
#: Rows per tile of the dense cluster-sum product (a k x rows indicator times the rows).
STATISTICS_TILE_ROWS = 1 << 14


def row_norms(X) -> np.ndarray:
    """``||x_i||^2`` for every row, float64."""
    if sp.issparse(X):
        return np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", X, X, dtype=np.float64)


def _products(X, centers: np.ndarray):
    """``(lo, hi, -2 X[lo:hi] @ centers.T)`` per tile of rows, in X's dtype (float32 rows are
    never copied to float64; the centres are cast instead), and ``||c||^2`` (float64).

    The one place the products are computed, with the same tiles for the kernel and the
    reference: a BLAS product's rounding may depend on the shape of the tile."""
    center_norms = np.einsum("ij,ij->i", centers, centers)
    weights = (-2.0 * centers.T).astype(np.float32 if X.dtype == np.float32 else np.float64)
    n, d = X.shape
    tile = max(MIN_TILE_ROWS, min(TILE_BYTES // max(1, d * X.dtype.itemsize),
                                  TILE_VALUES // len(centers)))

    def tiles():
        for lo in range(0, n, tile):
            hi = min(n, lo + tile)
            yield lo, hi, np.asarray(X[lo:hi] @ weights)

    return tiles(), center_norms


def assign(X, centers: np.ndarray, x_norms: np.ndarray | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest of ``centers`` for every row of ``X`` and the squared distance to it (numpy).

    ``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2``, the products per tile (:func:`_products`),
    the scores ``-2 x.c + ||c||^2`` in float64. ``||x||^2`` does not change which centre is
    nearest, so it is added only to each row's minimum; the distance is clipped at 0 against
    rounding. Ties go to the lowest centre index (argmin), as in scikit-learn. ``x_norms``:
    :func:`row_norms` of X, when the caller keeps them.
    """
    centers = np.asarray(centers, dtype=np.float64)
    x_norms = row_norms(X) if x_norms is None else x_norms
    n = X.shape[0]
    labels = np.empty(n, dtype=np.int64)
    distances = np.empty(n, dtype=np.float64)
    tiles, center_norms = _products(X, centers)
    for lo, hi, products in tiles:
        scores = products.astype(np.float64)
        scores += center_norms
        labels[lo:hi] = np.argmin(scores, axis=1)
        nearest = scores[np.arange(hi - lo), labels[lo:hi]]
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


def assign_with_statistics(out: np.ndarray, X, centers: np.ndarray, x_norms: np.ndarray,
                           sample_weight: np.ndarray | None = None
                           ) -> tuple[np.ndarray, np.ndarray]:
    """One Lloyd pass: the labels and squared distances of :func:`assign`, and ``out`` filled
    as :func:`cluster_statistics` fills it. Returns (labels, distances).

    Dense rows of float32 or float64 go through the compiled kernel, one pass over each tile
    of rows after its product; CSR rows, other dtypes, and every row when the kernels are off
    (``MPIML_KERNELS=numpy``, or no numba), through :func:`assign` and
    :func:`cluster_statistics`. The two agree bit for bit on labels and distances and to
    float64 rounding on the sums and the inertia (added in another order).
    """
    kernel = kmeans_tile()
    if kernel is None or sp.issparse(X) or X.dtype not in (np.float32, np.float64):
        labels, distances = assign(X, centers, x_norms)
        cluster_statistics(out, X, labels, distances, sample_weight)
        return labels, distances
    centers = np.asarray(centers, dtype=np.float64)
    x_norms = np.ascontiguousarray(x_norms, dtype=np.float64)  # one compiled layout
    if sample_weight is not None:
        sample_weight = np.ascontiguousarray(sample_weight, dtype=np.float64)
    n, d = X.shape
    k = len(centers)
    labels = np.empty(n, dtype=np.int64)
    distances = np.empty(n, dtype=np.float64)
    out[:] = 0.0
    sums = out[: k * d].reshape(k, d)
    cluster_weights = out[k * d : k * d + k]
    tiles, center_norms = _products(X, centers)
    for lo, hi, products in tiles:
        out[-1] += kernel(products, center_norms, x_norms[lo:hi], np.ascontiguousarray(X[lo:hi]),
                          None if sample_weight is None else sample_weight[lo:hi],
                          labels[lo:hi], distances[lo:hi], sums, cluster_weights)
    return labels, distances
