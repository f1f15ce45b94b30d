"""Multi-layer perceptrons: MLPClassifier and MLPRegressor, trained by :mod:`mpiml.fit`'s
gradient loops on the rows of every rank (Adam on global mini-batches by default).

Parameters follow scikit-learn's MLPs. The L2 penalty is scikit-learn's too: per batch of B
rows, ``alpha / (2 B) * sum ||W||^2`` next to the mean loss, which is mpiml's
``model.alpha = alpha / B`` (B = N for the full-batch solvers; with ``sample_weight``, B is the
batch's mean weight, B * W / N, which is scikit-learn's weighted penalty for the full batch).
Differences: ``solver="sgd"`` is plain SGD; scikit-learn's default (Nesterov momentum) is
``solver="nesterov"``. The classifier always has one softmax output per class (scikit-learn: a
single logistic unit for two classes).

``to_sklearn()`` returns scikit-learn's MLP with the same predictions: the feature scaling of
``standardize=True`` folded into the first layer, and two softmax outputs as the one logistic
unit they equal (``softmax(z)[1] = sigmoid(z1 - z0)``).
"""

from __future__ import annotations

import copy
import numbers

from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.validation import check_is_fitted

from ..models.saved import SavedModel
from .base import GlobalClassifierScore, GlobalRegressorScore, GradientEstimator, check_number

#: scikit-learn's settings for the solvers it has (its ``"sgd"`` is SGD with momentum).
SKLEARN_SOLVERS = {"lbfgs": {"solver": "lbfgs"}, "adam": {"solver": "adam"},
                   "sgd": {"solver": "sgd", "momentum": 0.0},
                   "momentum": {"solver": "sgd", "nesterovs_momentum": False},
                   "nesterov": {"solver": "sgd", "nesterovs_momentum": True}}


class _MLP(GradientEstimator):
    """Parameters and fit shared by the two MLPs."""

    def __init__(self, hidden_layer_sizes=(100,), *, activation="relu", solver="adam",
                 alpha=1e-4, batch_size=200, learning_rate="constant", learning_rate_init=1e-3,
                 momentum=0.9, max_iter=200, tol=1e-4, n_iter_no_change=10, standardize=False,
                 random_state=None, comm_mode="sync", allreduce_algorithm="auto",
                 reproducible=False,
                 early_stopping=False, validation_fraction=0.1, checkpoint_dir=None, comm=None):
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
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
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

    def _fit(self, X, y, kind: str, target: str, sample_weight=None):
        comm = self._communicator()
        rows = self._agreed_input(comm, X, y, target, sample_weight)
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else hidden
        batch_weight = self._batch_rows(rows.n_total)
        if rows.w is not None:
            batch_weight *= rows.weight_total / rows.n_total
        alpha = check_number("alpha", self.alpha) / batch_weight
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

    def to_sklearn(self):
        """An equivalent fitted scikit-learn MLP (local): layers acting on the original
        features, the same predictions (and probabilities), and the hyperparameters
        scikit-learn has an equivalent for (solver and schedule only where it has them)."""
        check_is_fitted(self)
        twin = self._sklearn_class()(**self._sklearn_hyperparameters())
        coefs = [weights.copy() for weights in self.coefs_]
        intercepts = [bias.copy() for bias in self.intercepts_]
        if self.model_.scaler is not None:  # (x - m)/s W + b = x (W/s) + (b - m (W/s))
            mean, scale = self.model_.scaler
            coefs[0] /= scale[:, None]
            intercepts[0] -= mean @ coefs[0]
        twin.n_outputs_, twin.out_activation_ = self.n_outputs_, "identity"
        if hasattr(self, "classes_"):
            twin.classes_ = self.classes_.copy()
            twin._label_binarizer = LabelBinarizer().fit(self.classes_)
            twin.out_activation_ = "softmax"
            if len(self.classes_) == 2:
                coefs[-1] = coefs[-1][:, 1:] - coefs[-1][:, :1]
                intercepts[-1] = intercepts[-1][1:] - intercepts[-1][:1]
                twin.n_outputs_, twin.out_activation_ = 1, "logistic"
        twin.coefs_, twin.intercepts_, twin.n_layers_ = coefs, intercepts, self.n_layers_
        for name in ("n_features_in_", "feature_names_in_", "n_iter_"):
            if hasattr(self, name):
                setattr(twin, name, copy.copy(getattr(self, name)))
        return twin

    def _sklearn_hyperparameters(self) -> dict:
        """scikit-learn's MLP parameters that mean what ours mean (the solver, the schedule, the
        batch size and the patience only where it has the same)."""
        params = dict(hidden_layer_sizes=self.hidden_layer_sizes, activation=self.activation,
                      learning_rate_init=self.learning_rate_init, max_iter=self.max_iter,
                      tol=self.tol, momentum=self.momentum, random_state=self._seed())
        params.update(SKLEARN_SOLVERS.get(self.solver, {}))
        schedule = self.learning_rate if self.learning_rate in ("constant", "invscaling") else None
        optional = dict(alpha=self.alpha, batch_size=self.batch_size, learning_rate=schedule,
                        n_iter_no_change=self.n_iter_no_change)
        params.update({name: value for name, value in optional.items() if value is not None})
        return params


class MLPClassifier(GlobalClassifierScore, _MLP):
    """Multi-layer perceptron classifier (softmax output, cross-entropy loss) over the rows of
    every rank; two or more classes, any sortable labels."""

    def fit(self, X, y, sample_weight=None):
        """Fit on this rank's rows ``X``, ``y`` and their ``sample_weight`` (None: all 1)
        (collective: every rank calls it)."""
        return self._fit(X, y, "mlp_classifier", "classes", sample_weight)

    def _sklearn_class(self):
        from sklearn.neural_network import MLPClassifier as Twin

        return Twin

    def predict_proba(self, X):
        """Class probabilities, shape (n, K), columns in the order of ``classes_`` (local)."""
        X = self._model_input(X)
        return self.model_.predict_proba(X)


class MLPRegressor(GlobalRegressorScore, _MLP):
    """Multi-layer perceptron regressor (identity output, squared loss) over the rows of every
    rank."""

    def fit(self, X, y, sample_weight=None):
        """Fit on this rank's rows ``X``, ``y`` and their ``sample_weight`` (None: all 1)
        (collective: every rank calls it)."""
        return self._fit(X, y, "mlp_regressor", "values", sample_weight)

    def _sklearn_class(self):
        from sklearn.neural_network import MLPRegressor as Twin

        return Twin
