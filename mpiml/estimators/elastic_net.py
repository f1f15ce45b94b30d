"""Least squares with an L1 share in the penalty: ElasticNet and Lasso.

mpiml's linear objective ``(1/2W) sum_i s_i (x_i.w + b - y_i)^2 + alpha (l1_ratio |w|_1 +
(1 - l1_ratio)/2 |w|^2)`` (W: the global weight sum, N without weights) is scikit-learn's
ElasticNet objective with the same ``alpha`` and ``l1_ratio`` (scikit-learn rescales sample
weights to sum to N, which gives the same weighted optimum), so no conversion is needed.

The L1 term is not smooth: the first-order solvers take a proximal step after each gradient
step (soft-thresholding, which gives exact zeros); L-BFGS cannot and is refused. The default,
full-batch ``gd`` with ``learning_rate_init="auto"``, is proximal gradient descent with the step
``1/L`` for a bound L on the Lipschitz constant of the smooth part, so every step lowers the
objective and the fit converges to the ElasticNet optimum.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from ..data.scaling import fit_scaler
from .base import FitInput, check_number
from .linear import _LinearRegressor


def lipschitz_bound(rows: FitInput, reducer, standardize: bool, fit_intercept: bool,
                    alpha: float) -> float:
    """An upper bound on the Lipschitz constant of the smooth part's gradient, the largest
    eigenvalue of ``[X 1]' S [X 1] / W`` plus ``alpha (1 - l1_ratio) <= alpha``: the trace
    ``sum_i s_i (|x_i|^2 + 1) / W + alpha``, over the rows the fit sees (standardised with the
    fit's scaler when ``standardize``). Collective."""
    X = rows.X
    if standardize:
        mean, scale = fit_scaler(X, reducer, rows.n_total)
        X = X.multiply(1.0 / scale).tocsr() if sp.issparse(X) else (X - mean) / scale
    squares = (np.asarray(X.multiply(X).sum(axis=1)).ravel() if sp.issparse(X)
               else np.einsum("ij,ij->i", X, X, dtype=np.float64))
    local = squares.sum() if rows.w is None else squares @ rows.w
    total = reducer.sum(np.array([float(local)]))[0]
    return total / rows.weight_total + float(fit_intercept) + alpha


class ElasticNet(_LinearRegressor):
    """Least squares with a mixed L1/L2 penalty, scikit-learn's objective
    ``(1/2N) |y - Xw - b|^2 + alpha l1_ratio |w|_1 + alpha (1 - l1_ratio)/2 |w|^2`` over the
    rows of every rank (mpiml's ``model.alpha`` and ``model.l1_ratio`` unchanged).

    ``solver`` is a first-order solver (``gd`` by default: proximal gradient descent; ``sgd``
    for mini-batches); ``lbfgs`` raises ValueError. ``learning_rate_init="auto"`` (``gd``
    only) is ``1/L`` rounded down to a power of two, L the bound of :func:`lipschitz_bound`;
    ``max_iter`` counts gradient steps (epochs), and the fit stops once the training loss has
    not improved by ``tol`` for ``n_iter_no_change`` steps.
    """

    def __init__(self, alpha=1.0, *, l1_ratio=0.5, fit_intercept=True, solver="gd",
                 max_iter=1000, tol=1e-10, learning_rate_init="auto", batch_size=None,
                 n_iter_no_change=5, standardize=False, random_state=None, comm_mode="sync",
                 allreduce_algorithm="auto", reproducible=False,
                 early_stopping=False, validation_fraction=0.1, checkpoint_dir=None, comm=None):
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.standardize = standardize
        self.random_state = random_state
        self.comm_mode = comm_mode
        self.allreduce_algorithm = allreduce_algorithm
        self.reproducible = reproducible
        self.checkpoint_dir = checkpoint_dir
        self.comm = comm

    def _penalty(self, total_weight):
        if self.solver == "lbfgs":
            raise ValueError(f"{type(self).__name__}: solver 'lbfgs' cannot minimise the L1 "
                             "term, which needs proximal steps: use a first-order solver "
                             "('gd', the default, or 'sgd')")
        return "alpha", check_number("alpha", self.alpha)

    def _learning_rate(self, comm, rows):
        """``learning_rate_init``; ``"auto"``: the largest power of two not above ``1/L``
        (a power of two, so rounding differences in L between rank counts do not change it)."""
        if not (isinstance(self.learning_rate_init, str) and self.learning_rate_init == "auto"):
            return self.learning_rate_init
        if self.solver != "gd":
            raise ValueError(f"{type(self).__name__}: learning_rate_init='auto' is the step of "
                             f"solver 'gd'; give a number for solver {self.solver!r}")
        bound = lipschitz_bound(rows, self._reducer(comm), self.standardize,
                                self.fit_intercept, check_number("alpha", self.alpha))
        return 1.0 if bound == 0.0 else 2.0 ** math.floor(-math.log2(bound))

    def _sklearn_twin(self):
        from sklearn.linear_model import ElasticNet as Twin

        return Twin(alpha=self.alpha, l1_ratio=self.l1_ratio, fit_intercept=self.fit_intercept)


class Lasso(ElasticNet):
    """Least squares with an L1 penalty: :class:`ElasticNet` with ``l1_ratio`` fixed at 1,
    scikit-learn's ``(1/2N) |y - Xw - b|^2 + alpha |w|_1``."""

    l1_ratio = 1.0  # not a parameter: fixed

    def __init__(self, alpha=1.0, *, fit_intercept=True, solver="gd", max_iter=1000, tol=1e-10,
                 learning_rate_init="auto", batch_size=None, n_iter_no_change=5,
                 standardize=False, random_state=None, comm_mode="sync",
                 allreduce_algorithm="auto", reproducible=False,
                 early_stopping=False, validation_fraction=0.1, checkpoint_dir=None, comm=None):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.learning_rate_init = learning_rate_init
        self.batch_size = batch_size
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.standardize = standardize
        self.random_state = random_state
        self.comm_mode = comm_mode
        self.allreduce_algorithm = allreduce_algorithm
        self.reproducible = reproducible
        self.checkpoint_dir = checkpoint_dir
        self.comm = comm

    def _sklearn_twin(self):
        from sklearn.linear_model import Lasso as Twin

        return Twin(alpha=self.alpha, fit_intercept=self.fit_intercept)
