"""Small deterministic HDF5 data sets for tests (dense and CSR layouts)."""

from __future__ import annotations

import h5py
import numpy as np
import scipy.sparse as sp


def make_problem(task: str, n: int, d: int, seed: int = 0, classes: int = 3,
                 dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels from a fixed random linear model (noisy, so optima are interior)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    if task == "multiclass":
        W = rng.standard_normal((d, classes))
        y = np.argmax(X @ W + rng.gumbel(size=(n, classes)), axis=1).astype(np.float64)
    else:
        score = X @ rng.standard_normal(d) + 0.5 + rng.standard_normal(n)
        y = score if task == "regression" else (score > 0).astype(np.float64)
    return X, y


def write_dense(path, X, y, X_test=None, y_test=None) -> None:
    with h5py.File(path, "w") as out:
        out["X"], out["y"] = X, y
        if X_test is not None:
            out["X_test"], out["y_test"] = X_test, y_test


def write_csr(path, X, y) -> None:
    matrix = sp.csr_matrix(X)
    with h5py.File(path, "w") as out:
        group = out.create_group("X")
        group["data"], group["indices"], group["indptr"] = (matrix.data, matrix.indices,
                                                            matrix.indptr)
        group.attrs["shape"] = matrix.shape
        out["y"] = y
