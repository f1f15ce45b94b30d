"""Histogram gradient-boosted trees: HistGradientBoostingClassifier and
HistGradientBoostingRegressor, fitted by :mod:`mpiml.fit.boosting` on the rows of every rank.
The trees are identical at any rank count (integer histogram sums; see
:mod:`mpiml.models.trees`).

Parameters follow scikit-learn's estimators of the same names (``max_iter`` is the number of
boosting rounds). Differences: trees grow depth-wise to ``max_depth`` (default 6; scikit-learn
grows leaf-wise to 31 leaves), there is no early stopping, and missing values are not supported.
"""

from __future__ import annotations

from ..models import trees
from ..models.saved import SavedModel
from .base import GlobalClassifierScore, GlobalRegressorScore, MpimlEstimator


class _Boosting(MpimlEstimator):
    """Parameters and fit shared by the two boosted-tree estimators."""

    def __init__(self, *, learning_rate=0.1, max_iter=100, max_depth=6, min_samples_leaf=20,
                 l2_regularization=1.0, max_bins=255, random_state=None,
                 allreduce_algorithm="auto", checkpoint_dir=None, comm=None):
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_bins = max_bins
        self.random_state = random_state
        self.allreduce_algorithm = allreduce_algorithm
        self.checkpoint_dir = checkpoint_dir
        self.comm = comm

    def _fit(self, X, y, kind: str, target: str):
        comm = self._communicator()
        rows = self._agreed_input(comm, X, y, target)
        config = self._run_config([
            ("model.kind", "", kind),
            ("hgbt.n_estimators", "max_iter", self.max_iter),
            ("hgbt.learning_rate", "learning_rate", self.learning_rate),
            ("hgbt.max_depth", "max_depth", self.max_depth),
            ("hgbt.min_samples_leaf", "min_samples_leaf", self.min_samples_leaf),
            ("hgbt.l2", "l2_regularization", self.l2_regularization),
            ("hgbt.max_bins", "max_bins", self.max_bins),
            ("train.seed", "random_state", self._seed()),
            ("comm.algorithm", "allreduce_algorithm", self.allreduce_algorithm),
        ])
        result = self._fit_rows(config, comm, rows)
        self._set_fitted(result.saved, {"n_iter_": result.steps})
        return self

    def _set_fitted(self, saved: SavedModel, state: dict) -> None:
        self._set_common_fitted(saved, state)
        self.n_trees_per_iteration_ = len(saved.arrays["baseline"])
        if saved.classes is not None:
            self.classes_ = saved.classes

    def predict(self, X):
        """Class labels (classifier) or values (regressor) for the rows given (local)."""
        X = self._local_input(X)
        return self.model_.predict(X)


class HistGradientBoostingClassifier(GlobalClassifierScore, _Boosting):
    """Gradient-boosted trees for two (logistic loss) or more (softmax, one tree per class per
    round) classes, any sortable labels."""

    def fit(self, X, y):
        """Fit on this rank's rows ``X``, ``y`` (collective: every rank calls it)."""
        return self._fit(X, y, "hgbt_classifier", "classes")

    def predict_proba(self, X):
        """Class probabilities, shape (n, K), columns in the order of ``classes_`` (local)."""
        X = self._local_input(X)
        return self.model_.predict_proba(X)

    def decision_function(self, X):
        """Raw scores before the sigmoid / softmax (local): (n,) for two classes, else (n, K)."""
        X = self._local_input(X)
        raw = trees.predict_raw(self.model_.arrays, X)
        return raw[:, 0] if raw.shape[1] == 1 else raw


class HistGradientBoostingRegressor(GlobalRegressorScore, _Boosting):
    """Gradient-boosted trees for real targets (squared error)."""

    def fit(self, X, y):
        """Fit on this rank's rows ``X``, ``y`` (collective: every rank calls it)."""
        return self._fit(X, y, "hgbt_regressor", "values")
