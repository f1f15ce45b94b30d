"""The distributed StandardScaler: column means and standard deviations over every rank's rows.

Two reductions through the run's reducer: column sums first, then the sums of squared deviations
from the global mean (the two-pass form, accurate where E[x^2] - E[x]^2 would cancel); CSR data
sums raw squares and is not centred (:func:`mpiml.models.scaling.scaler_from_moments`). In
reproducible mode both are exact block sums, so the scaler has the same bits on any rank count.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..models.scaling import scaler_from_moments
from .stream import chunk_sums


def fit_scaler(X, reducer, n_total: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the columns of all ranks' rows ``X``; identical on every rank.
    Collective; ``n_total`` is the number of rows over all ranks."""
    n_features = X.shape[1]
    sparse = sp.issparse(X)

    def column_sums(lo, hi):
        out = np.empty(n_features + 1)
        out[:n_features] = np.asarray(X[lo:hi].sum(axis=0), dtype=np.float64).ravel()
        out[n_features] = hi - lo
        return out

    sums = reducer.sum_over_rows(chunk_sums(column_sums, X), X.shape[0], n_total)
    count = max(sums[n_features], 1.0)
    mean = sums[:n_features] / count

    def squares(lo, hi):
        rows = X[lo:hi]
        if sparse:
            return np.asarray(rows.multiply(rows).sum(axis=0), dtype=np.float64).ravel()
        deviation = np.asarray(rows, dtype=np.float64) - mean
        return np.einsum("ij,ij->j", deviation, deviation)

    squared = reducer.sum_over_rows(chunk_sums(squares, X), X.shape[0], n_total)
    return scaler_from_moments(mean, squared, count, sparse)
