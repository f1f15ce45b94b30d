"""K-Means over the rows of every rank, fitted by :mod:`mpiml.fit.kmeans`: k-means++
seeding (the same centres at any rank count), then Lloyd iterations, or mini-batch updates with
``batch_size``. One initialisation (scikit-learn's ``n_init="auto"`` for k-means++).
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.base import ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.utils.validation import check_is_fitted

from ..comm import raise_together
from ..models.kmeans import assign
from ..models.saved import SavedModel
from .base import MpimlEstimator, sample_weights


class KMeans(ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, MpimlEstimator):
    """K-Means clustering of the rows of every rank of ``comm``.

    Fitted attributes are identical on every rank, except ``labels_``: the clusters of THIS
    rank's rows. ``score`` is minus the inertia of the rows of all ranks (collective).
    """

    def __init__(self, n_clusters=8, *, max_iter=300, tol=1e-4, batch_size=None,
                 random_state=None, allreduce_algorithm="auto", reproducible=False,
                 checkpoint_dir=None, comm=None):
        self.n_clusters = n_clusters
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.random_state = random_state
        self.allreduce_algorithm = allreduce_algorithm
        self.reproducible = reproducible
        self.checkpoint_dir = checkpoint_dir
        self.comm = comm

    def fit(self, X, y=None):
        """Cluster this rank's rows ``X`` with those of every other rank (collective)."""
        comm = self._communicator()
        rows = self._agreed_input(comm, X)
        config = self._run_config([
            ("model.kind", "", "kmeans"),
            ("kmeans.n_clusters", "n_clusters", self.n_clusters),
            ("kmeans.max_iter", "max_iter", self.max_iter),
            ("kmeans.tol", "tol", self.tol),
            ("kmeans.batch_size", "batch_size", self.batch_size),
            ("train.seed", "random_state", self._seed()),
            ("comm.algorithm", "allreduce_algorithm", self.allreduce_algorithm),
            ("train.reproducible", "reproducible", self.reproducible),
        ])
        result = self._fit_rows(config, comm, rows)
        self._set_fitted(result.saved, {"n_iter_": result.steps,
                                        "inertia_": result.metrics["inertia"]})
        self.labels_ = self.model_.predict_index(rows.X)
        return self

    def _set_fitted(self, saved: SavedModel, state: dict) -> None:
        self._set_common_fitted(saved, state)
        self.cluster_centers_ = np.array(saved.arrays["centers"], dtype=np.float64)
        self.inertia_ = float(state["inertia_"])

    def _fitted_state(self) -> dict:
        return dict(super()._fitted_state(), inertia_=self.inertia_)

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
        predictions), ``inertia_``, ``n_iter_`` and, after a fit, this rank's ``labels_``.

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
        twin.inertia_, twin.n_iter_ = self.inertia_, self.n_iter_
        if hasattr(self, "labels_"):
            twin.labels_ = self.labels_.copy()
        else:
            del twin.labels_
        if hasattr(self, "feature_names_in_"):
            twin.feature_names_in_ = self.feature_names_in_.copy()
        return twin
