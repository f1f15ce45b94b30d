"""Multi-layer perceptrons: MLPClassifier and MLPRegressor, trained by :mod:`mpiml.fit`'s
gradient loops on the rows of every rank (Adam on global mini-batches by default).

Parameters follow scikit-learn's MLPs. The L2 penalty is scikit-learn's too: per batch of B
rows, ``alpha / (2 B) * sum ||W||^2`` next to the mean loss, which is mpiml's
``model.alpha = alpha / B`` (B = N for the full-batch solvers). Differences: ``solver="sgd"`` is
plain SGD; scikit-learn's default (Nesterov momentum) is ``solver="nesterov"``. The classifier
always has one softmax output per class (scikit-learn: a single logistic unit for two classes).
"""

from __future__ import annotations

import numbers

from ..models.saved import SavedModel
from .base import GlobalClassifierScore, GlobalRegressorScore, GradientEstimator, check_number


class _MLP(GradientEstimator):
    """Parameters and fit shared by the two MLPs."""

    def __init__(self, hidden_layer_sizes=(100,), *, activation="relu", solver="adam",
                 alpha=1e-4, batch_size=200, learning_rate="constant", learning_rate_init=1e-3,
                 momentum=0.9, max_iter=200, tol=1e-4, n_iter_no_change=10, standardize=False,
                 random_state=None, comm_mode="sync", allreduce_algorithm="auto",
                 reproducible=False,
                 checkpoint_dir=None, comm=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.momentum = momentum
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.standardize = standardize
        self.random_state = random_state
        self.comm_mode = comm_mode
        self.allreduce_algorithm = allreduce_algorithm
        self.reproducible = reproducible
        self.checkpoint_dir = checkpoint_dir
        self.comm = comm

    def _batch_rows(self, n_total: int) -> int:
        """Rows per global batch, B of the penalty ``alpha / (2 B)``."""
        if self.solver in ("lbfgs", "gd") or self.batch_size is None:
            return n_total
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"batch_size must be a positive integer or None; got {size!r}")
        return min(int(size), n_total)

    def _fit(self, X, y, kind: str, target: str):
        comm = self._communicator()
        rows = self._agreed_input(comm, X, y, target)
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else hidden
        alpha = check_number("alpha", self.alpha) / self._batch_rows(rows.n_total)
        settings = [("model.kind", "", kind),
                    ("model.hidden", "hidden_layer_sizes", hidden),
                    ("model.activation", "activation", self.activation),
                    ("model.alpha", "alpha", alpha),
                    ("optimizer.schedule", "learning_rate", self.learning_rate),
                    ("optimizer.momentum", "momentum", self.momentum)]
        self._fit_gradient_model(comm, rows, kind, settings)
        return self

    def _set_fitted(self, saved: SavedModel, state: dict) -> None:
        """``coefs_`` and ``intercepts_`` per layer, as scikit-learn's MLPs (with
        ``standardize=True`` the first layer acts on the standardised features)."""
        self._set_common_fitted(saved, state)
        model = saved.model
        layers = model.layers(saved.params)
        self.coefs_ = [weights.copy() for weights, _ in layers]
        self.intercepts_ = [bias.copy() for _, bias in layers]
        self.n_layers_ = len(layers) + 1
        self.n_outputs_ = model.n_outputs
        if saved.classes is not None:
            self.classes_ = saved.classes

    def predict(self, X):
        """Class labels (classifier) or values (regressor) for the rows given (local)."""
        X = self._model_input(X)
        return self.model_.predict(X)


class MLPClassifier(GlobalClassifierScore, _MLP):
    """Multi-layer perceptron classifier (softmax output, cross-entropy loss) over the rows of
    every rank; two or more classes, any sortable labels."""

    def fit(self, X, y):
        """Fit on this rank's rows ``X``, ``y`` (collective: every rank calls it)."""
        return self._fit(X, y, "mlp_classifier", "classes")

    def predict_proba(self, X):
        """Class probabilities, shape (n, K), columns in the order of ``classes_`` (local)."""
        X = self._model_input(X)
        return self.model_.predict_proba(X)


class MLPRegressor(GlobalRegressorScore, _MLP):
    """Multi-layer perceptron regressor (identity output, squared loss) over the rows of every
    rank."""

    def fit(self, X, y):
        """Fit on this rank's rows ``X``, ``y`` (collective: every rank calls it)."""
        return self._fit(X, y, "mlp_regressor", "values")
