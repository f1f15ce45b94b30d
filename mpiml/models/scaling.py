"""Feature standardisation arithmetic: the scaler from column moments, and applying it.

The moments are global sums over every rank's rows (:func:`mpiml.data.scaling.fit_scaler`).
CSR data is scaled but not centred, which would destroy its sparsity (scikit-learn's
``with_mean=False``). Constant features keep scale 1.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def scaler_from_moments(mean: np.ndarray, squared: np.ndarray, count: float, sparse: bool
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(mean, scale) from the column means and the sums of squares: of deviations from the mean
    (dense; the two-pass form, accurate where E[x^2] - E[x]^2 would cancel), of raw values (CSR,
    which is not centred)."""
    if sparse:
        variance = squared / count - mean * mean
        mean = np.zeros_like(mean)
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
