"""Feature standardisation from global statistics: the distributed StandardScaler.

Mean and variance are computed over every rank's rows with two allreduces (mean first, then the
sum of squared deviations: the two-pass form, accurate where E[x^2] - E[x]^2 would cancel). CSR
data is scaled but not centred, which would destroy its sparsity (scikit-learn's
``with_mean=False``). Constant features keep scale 1.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from . import collectives
from .exactsum import exact_sum


def fit_scaler(X, comm=None, block: int = 1, n_total: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the columns of all ranks' rows ``X``; identical on every rank.

    ``block > 1`` (reproducible mode; ``n_total`` = all ranks' rows): the sums are exact block
    sums (:mod:`mpiml.exactsum`), so the scaler has the same bits on any number of ranks.
    """
    n_features = X.shape[1]
    sparse = sp.issparse(X)

    def total(per_rows) -> np.ndarray:
        """Sum over all ranks' rows of ``per_rows(lo, hi)`` (a vector)."""
        if block == 1:
            return collectives.allreduce(per_rows(0, X.shape[0]), comm)
        vectors = [per_rows(lo, min(lo + block, X.shape[0]))
                   for lo in range(0, X.shape[0], block)]
        return exact_sum(vectors, n_features + 1, -(-n_total // block), comm)[0]

    def column_sums(lo, hi):
        out = np.empty(n_features + 1)
        out[:n_features] = np.asarray(X[lo:hi].sum(axis=0), dtype=np.float64).ravel()
        out[n_features] = hi - lo
        return out

    sums = total(column_sums)
    count = max(sums[n_features], 1.0)
    mean = sums[:n_features] / count

    def squares(lo, hi):
        out = np.zeros(n_features + 1)
        rows = X[lo:hi]
        if sparse:
            out[:n_features] = np.asarray(rows.multiply(rows).sum(axis=0),
                                          dtype=np.float64).ravel()
        else:
            deviation = np.asarray(rows, dtype=np.float64) - mean
            out[:n_features] = np.einsum("ij,ij->j", deviation, deviation)
        return out

    squared = total(squares)[:n_features]
    if sparse:
        variance = squared / count - mean * mean
        mean = np.zeros(n_features)
    else:
        variance = squared / count
    scale = np.sqrt(np.maximum(variance, 0.0))
    scale[scale == 0.0] = 1.0
    return mean, scale


def apply_scaler(X, mean: np.ndarray, scale: np.ndarray):
    """Transform ``X`` in place to (X - mean) / scale (CSR: X / scale) and return it."""
    if sp.issparse(X):
        X.data /= np.asarray(scale, dtype=X.dtype)[X.indices]
        return X
    X -= mean.astype(X.dtype)
    X /= scale.astype(X.dtype)
    return X
