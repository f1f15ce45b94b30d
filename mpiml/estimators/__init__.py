"""scikit-learn-style estimators that train on the rows of every rank of an MPI communicator.

Each estimator takes the CALLER'S rows on each rank -- ``fit(X, y)`` with this rank's rows, rank
r's rows after rank r-1's -- and an optional ``comm`` (default ``MPI.COMM_WORLD``; mpiml never
initialises or finalises MPI). See docs/library.md. This subpackage needs scikit-learn; the rest
of mpiml does not, and ``import mpiml`` does not import it.
"""

from __future__ import annotations

from .cluster import KMeans
from .elastic_net import ElasticNet, Lasso
from .linear import LinearRegression, LinearSVC, LogisticRegression, Ridge, SoftmaxRegression
from .neural import MLPClassifier, MLPRegressor
from .persist import read
from .trees import HistGradientBoostingClassifier, HistGradientBoostingRegressor

ESTIMATORS = {cls.__name__: cls for cls in (
    LinearRegression, Ridge, Lasso, ElasticNet, LogisticRegression, SoftmaxRegression,
    LinearSVC, KMeans, MLPClassifier, MLPRegressor, HistGradientBoostingClassifier,
    HistGradientBoostingRegressor)}

__all__ = sorted(ESTIMATORS) + ["load"]


def load(path, comm=None):
    """The fitted estimator saved at ``path`` by its ``save`` method, or of the model file
    ``python -m mpiml.train`` wrote (its kind chooses the estimator, its run's config the
    hyperparameters), working on ``comm`` (default ``MPI.COMM_WORLD``). Collective: rank 0
    reads the file, every rank gets the same estimator, whose predictions equal the saved
    model's; a missing or malformed file, or a model no estimator has, raises the same error on
    every rank."""
    return read(path, ESTIMATORS, comm)
