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


def fit_scaler(X, comm=None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) of the columns of all ranks' rows ``X``; identical on every rank."""
    n_features = X.shape[1]
    sparse = sp.issparse(X)
    sums = np.zeros(n_features + 1)
    sums[:n_features] = np.asarray(X.sum(axis=0), dtype=np.float64).ravel()
    sums[n_features] = X.shape[0]
    collectives.allreduce(sums, comm)
    count = max(sums[n_features], 1.0)
    mean = sums[:n_features] / count
    squares = np.zeros(n_features)
    if sparse:
        squares[:] = np.asarray(X.multiply(X).sum(axis=0), dtype=np.float64).ravel()
        collectives.allreduce(squares, comm)
        variance = squares / count - mean * mean
        mean = np.zeros(n_features)
    else:
        deviation = np.asarray(X, dtype=np.float64) - mean
        squares[:] = np.einsum("ij,ij->j", deviation, deviation)
        collectives.allreduce(squares, comm)
        variance = squares / count
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
