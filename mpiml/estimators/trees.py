"""Histogram gradient-boosted trees: HistGradientBoostingClassifier and
HistGradientBoostingRegressor, fitted by :mod:`mpiml.fit.boosting` on the rows of every rank.
The trees are identical at any rank count (integer histogram sums; see
:mod:`mpiml.models.trees`).

Parameters follow scikit-learn's estimators of the same names (``max_iter`` is the number of
boosting rounds), defaults included: trees grow best-first to ``max_leaf_nodes`` leaves (31;
None grows depth-wise, level by level, to ``max_depth``). Differences: early stopping
(``early_stopping``, ``validation_fraction``, ``n_iter_no_change``, ``tol``, "auto" from 10,000
rows as in scikit-learn) watches held-out rows only and ends with the trees of the best round;
missing values are not supported.
``sample_weight`` weighs gradients, hessians, the baseline and the bin percentiles as
scikit-learn's does; ``min_samples_leaf`` counts rows, not weight, as in scikit-learn.
There is no ``to_sklearn``: see :meth:`_Boosting.to_sklearn`.
"""

from __future__ import annotations

from ..models import trees
from ..models.saved import SavedModel
from .base import GlobalClassifierScore, GlobalRegressorScore, MpimlEstimator


class _Boosting(MpimlEstimator):
    """Parameters and fit shared by the two boosted-tree estimators."""

    def __init__(self, *, learning_rate=0.1, max_iter=100, max_leaf_nodes=31, max_depth=None,
                 min_samples_leaf=20, l2_regularization=0.0, max_bins=255,
                 early_stopping="auto", validation_fraction=0.1, n_iter_no_change=10, tol=1e-7,
                 random_state=None, allreduce_algorithm="auto", checkpoint_dir=None,
                 comm=None):
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_bins = max_bins
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.allreduce_algorithm = allreduce_algorithm
        self.checkpoint_dir = checkpoint_dir
        self.comm = comm

    def _fit(self, X, y, kind: str, target: str, sample_weight=None):
        comm = self._communicator()
        rows = self._agreed_input(comm, X, y, target, sample_weight,
                                  getattr(self, "class_weight", None))
        config = self._run_config([
            ("model.kind", "", kind),
            ("hgbt.n_estimators", "max_iter", self.max_iter),
            ("hgbt.learning_rate", "learning_rate", self.learning_rate),
            ("hgbt.max_leaf_nodes", "max_leaf_nodes", self.max_leaf_nodes),
            ("hgbt.max_depth", "max_depth", self.max_depth),
            ("hgbt.min_samples_leaf", "min_samples_leaf", self.min_samples_leaf),
            ("hgbt.l2", "l2_regularization", self.l2_regularization),
            ("hgbt.max_bins", "max_bins", self.max_bins),
            ("train.seed", "random_state", self._seed()),
            ("comm.algorithm", "allreduce_algorithm", self.allreduce_algorithm),
            *self._stopping_settings(rows.n_total),
        ])
        result = self._fit_rows(config, comm, rows)
        self._set_fitted(result.saved, {"n_iter_": result.steps})
        return self

    def _stopping_settings(self, n_total: int) -> list[tuple[str, str, object]]:
        """scikit-learn's early stopping: ``"auto"`` is on from 10,000 rows (all ranks' rows).
        It watches held-out rows only: ``validation_fraction=None`` (scikit-learn's "watch the
        training loss") is refused."""
        if self.early_stopping not in ("auto", True, False):
            raise ValueError(f"early_stopping must be 'auto', True or False; got "
                             f"{self.early_stopping!r}")
        on = n_total > 10_000 if self.early_stopping == "auto" else self.early_stopping
        if not on:
            return []
        if self.validation_fraction is None:
            raise ValueError(f"{type(self).__name__}: early stopping watches held-out rows; "
                             "validation_fraction=None (the training loss) is not supported")
        return [("train.patience", "n_iter_no_change", self.n_iter_no_change),
                ("train.min_delta", "tol", self.tol), *self._validation_settings(True)]

    def _set_fitted(self, saved: SavedModel, state: dict) -> None:
        self._set_common_fitted(saved, state)
        self.n_trees_per_iteration_ = len(saved.arrays["baseline"])
        if saved.classes is not None:
            self.classes_ = saved.classes

    def predict(self, X):
        """Class labels (classifier) or values (regressor) for the rows given (local)."""
        X = self._local_input(X)
        return self.model_.predict(X)

    def to_sklearn(self):
        """Always raises NotImplementedError: scikit-learn's histogram gradient boosting keeps
        its trees in private predictor objects that only its own ``fit`` builds, with no public
        way to construct one from given trees, so these trees cannot become its estimator."""
        raise NotImplementedError(
            f"{type(self).__name__}.to_sklearn: scikit-learn's HistGradientBoosting estimators "
            "build their tree predictors only inside their own fit and offer no public way to "
            "construct them from given trees; predict with this estimator (or python -m "
            "mpiml.predict) instead")


class HistGradientBoostingClassifier(GlobalClassifierScore, _Boosting):
    """Gradient-boosted trees for two (logistic loss) or more (softmax, one tree per class per
    round) classes, any sortable labels. ``class_weight`` (None, "balanced" or a mapping label
    -> weight) multiplies each row's weight by its class's, as scikit-learn's."""

    def __init__(self, *, learning_rate=0.1, max_iter=100, max_leaf_nodes=31, max_depth=None,
                 min_samples_leaf=20, l2_regularization=0.0, max_bins=255,
                 early_stopping="auto", validation_fraction=0.1, n_iter_no_change=10, tol=1e-7,
                 class_weight=None, random_state=None, allreduce_algorithm="auto",
                 checkpoint_dir=None, comm=None):
        super().__init__(learning_rate=learning_rate, max_iter=max_iter,
                         max_leaf_nodes=max_leaf_nodes, max_depth=max_depth,
                         min_samples_leaf=min_samples_leaf,
                         l2_regularization=l2_regularization, max_bins=max_bins,
                         early_stopping=early_stopping, validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, tol=tol,
                         random_state=random_state, allreduce_algorithm=allreduce_algorithm,
                         checkpoint_dir=checkpoint_dir, comm=comm)
        self.class_weight = class_weight

    def fit(self, X, y, sample_weight=None):
        """Fit on this rank's rows ``X``, ``y`` and their ``sample_weight`` (None: all 1)
        (collective: every rank calls it)."""
        return self._fit(X, y, "hgbt_classifier", "classes", sample_weight)

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

    def fit(self, X, y, sample_weight=None):
        """Fit on this rank's rows ``X``, ``y`` and their ``sample_weight`` (None: all 1)
        (collective: every rank calls it)."""
        return self._fit(X, y, "hgbt_regressor", "values", sample_weight)
