"""K-Means over the rows of every rank, fitted by :mod:`mpiml.fit.kmeans`: k-means++ or random
seeding (the same centres at any rank count) or given centres, then Lloyd iterations, or
mini-batch updates with ``batch_size``; the best of ``n_init`` fits.
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.utils.validation import check_is_fitted

from ..comm import raise_together
from ..data.run_rows import from_arrays
from ..fit.kmeans import run_kmeans
from ..fit.result import FitResult, result_of
from ..models.kinds import KINDS
from ..models.kmeans import assign
from ..models.saved import SavedModel
from ..run import open_run
from .base import FitInput, MpimlEstimator, sample_weights


class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, MpimlEstimator):
    """K-Means clustering of the rows of every rank of ``comm``.

    ``init``: "k-means++", "random" (``n_clusters`` distinct rows drawn uniformly from all
    ranks' rows) or an array of initial centres ``(n_clusters, n_features)``. ``n_init``: fits
    run (fit i seeded with ``random_state + i``), the one with the lowest inertia kept; "auto"
    is 10 for "random" and 1 otherwise (scikit-learn >= 1.4); with an array, more than 1 warns
    and runs one.

    Fitted attributes are identical on every rank, except ``labels_``: the clusters of THIS
    rank's rows. ``score`` is minus the inertia of the rows of all ranks (collective).
    """

    def __init__(self, n_clusters=8, *, init="k-means++", n_init="auto", max_iter=300,
                 tol=1e-4, batch_size=None, random_state=None, allreduce_algorithm="auto",
                 reproducible=False, checkpoint_dir=None, comm=None):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.random_state = random_state
        self.allreduce_algorithm = allreduce_algorithm
        self.reproducible = reproducible
        self.checkpoint_dir = checkpoint_dir
        self.comm = comm

    def fit(self, X, y=None, sample_weight=None):
        """Cluster this rank's rows ``X`` with those of every other rank (collective), each row
        weighing its ``sample_weight`` (None: 1) in the seeding, the centres and the inertia."""
        comm = self._communicator()
        rows = self._agreed_input(comm, X, sample_weight=sample_weight)
        seeding = isinstance(self.init, str)
        config = self._run_config([
            ("model.kind", "", "kmeans"),
            ("kmeans.n_clusters", "n_clusters", self.n_clusters),
            *([("kmeans.init", "init", self.init)] if seeding else []),
            ("kmeans.n_init", "n_init", self._n_init()),
            ("kmeans.max_iter", "max_iter", self.max_iter),
            ("kmeans.tol", "tol", self.tol),
            ("kmeans.batch_size", "batch_size", self.batch_size),
            ("train.seed", "random_state", self._seed()),
            ("comm.algorithm", "allreduce_algorithm", self.allreduce_algorithm),
            ("train.reproducible", "reproducible", self.reproducible),
        ])
        result = (self._fit_rows(config, comm, rows) if seeding
                  else self._fit_from_centers(config, comm, rows))
        self._set_fitted(result.saved, {"n_iter_": result.steps,
                                        "inertia_": result.metrics["inertia"]})
        self.labels_ = self.model_.predict_index(rows.X)
        return self

    def _n_init(self):
        """``n_init`` as ``kmeans.n_init``: "auto" is 10 fits for init="random", else 1."""
        if not (isinstance(self.n_init, str) and self.n_init == "auto"):
            return self.n_init
        return 10 if isinstance(self.init, str) and self.init == "random" else 1

    def _fit_from_centers(self, config, comm, rows: FitInput) -> FitResult:
        """:meth:`_fit_rows` started from the centres ``init`` holds: an array is no config
        value, so they go to the K-Means loop directly (checked there on every rank)."""
        with open_run(config, comm) as run:
            data = from_arrays(rows.X, rows.y, run.reducer, KINDS[config.model.kind].task,
                               classes=rows.classes, sample_weight=rows.w)
            return result_of(config.model.kind, data, run_kmeans(run, data, self.init),
                             run.reducer)

    def _set_fitted(self, saved: SavedModel, state: dict) -> None:
        self._set_common_fitted(saved, state)
        self.cluster_centers_ = np.array(saved.arrays["centers"], dtype=np.float64)
        if state["inertia_"] is not None:  # None: not in a python -m mpiml.train file
            self.inertia_ = float(state["inertia_"])

    def _fitted_state(self) -> dict:
        return dict(super()._fitted_state(), inertia_=getattr(self, "inertia_", None))

    @property
    def _n_features_out(self) -> int:
        """Columns of :meth:`transform` (one distance per cluster), for get_feature_names_out."""
        return self.cluster_centers_.shape[0]

    def predict(self, X):
        """Index of the nearest centre for the rows given (local)."""
        X = self._local_input(X)
        return self.model_.predict_index(X)

    def transform(self, X):
        """Euclidean distance of every row given to every centre, (n, n_clusters) (local)."""
        return euclidean_distances(self._local_input(X), self.cluster_centers_)

    def score(self, X, y=None, sample_weight=None) -> float:
        """Minus the (weighted) inertia of the rows of ALL ranks with respect to the fitted
        centres; identical on every rank. Collective."""
        comm = self._communicator()
        total, error = np.zeros(1), None
        try:
            X = self._local_input(X)
            weights = sample_weights(sample_weight, X.shape[0])
            total[0] = weights @ assign(X, self.cluster_centers_)[1]
        except (TypeError, ValueError) as exc:
            error = exc
        raise_together(error, comm)
        return -float(self._reducer(comm).sum(total)[0])

    def to_sklearn(self):
        """An equivalent fitted ``sklearn.cluster.KMeans`` (local): the same centres (so the same
        predictions), ``inertia_``, ``n_iter_`` and, after a fit, this rank's ``labels_``
        (each only if this estimator has it: one loaded from a ``python -m mpiml.train`` file
        has neither ``inertia_`` nor ``n_iter_``).

        It is fitted through scikit-learn's public API on the centres themselves, started at
        the centres, so that all its internal state is set; then our attributes replace its own.
        """
        from sklearn.cluster import KMeans as Twin
        from sklearn.exceptions import ConvergenceWarning

        check_is_fitted(self)
        twin = Twin(n_clusters=self.cluster_centers_.shape[0], init=self.cluster_centers_,
                    n_init=1, max_iter=self.max_iter, tol=self.tol,
                    random_state=self.random_state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # duplicate centres
            twin.fit(self.cluster_centers_)
        twin.cluster_centers_ = self.cluster_centers_.copy()
        for name in ("inertia_", "n_iter_", "labels_"):
            if hasattr(self, name):
                setattr(twin, name, copy.copy(getattr(self, name)))
            else:
                delattr(twin, name)
        if hasattr(self, "feature_names_in_"):
            twin.feature_names_in_ = self.feature_names_in_.copy()
        return twin
