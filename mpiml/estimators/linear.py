"""Linear estimators: LinearRegression, Ridge, LogisticRegression, SoftmaxRegression, LinearSVC.

Each fit runs the gradient loops (:mod:`mpiml.fit`) on the rows of every rank (L-BFGS by
default). The
penalties use scikit-learn's conventions and are converted to mpiml's objective
``J = mean loss + alpha/2 ||w||^2`` with the GLOBAL row count N: ``Ridge(alpha)`` is
``alpha / N``; ``C`` (LogisticRegression, SoftmaxRegression, LinearSVC) is ``1 / (C N)``. With
``sample_weight`` (and ``class_weight``) the mean loss is weighted and N is the global weight
sum, which keeps scikit-learn's weighted optimum.

``coef_`` and ``intercept_`` have scikit-learn's shapes and act on the ORIGINAL features, also
with ``standardize=True`` (the global scaler is folded into them), so ``to_sklearn()`` returns a
plain scikit-learn estimator with the same attributes and the same predictions.
"""

from __future__ import annotations

import copy
import numbers

import numpy as np
from scipy.special import expit
from sklearn.utils.extmath import safe_sparse_dot, softmax
from sklearn.utils.validation import check_is_fitted

from ..models.saved import SavedModel
from .base import (
    GlobalClassifierScore,
    GlobalRegressorScore,
    GradientEstimator,
    check_number,
    mark_raised_together,
)


def _alpha_from_C(C, total_weight: float) -> float:
    """``alpha = 1 / (C W)``: scikit-learn's ``C * sum(w loss) + ||w||^2 / 2`` divided by C W
    (W: the global weight sum, the row count N without weights)."""
    if isinstance(C, bool) or not isinstance(C, numbers.Real) or not C > 0:
        raise ValueError(f"C must be a number > 0 (np.inf: no penalty); got {C!r}")
    return 1.0 / (C * total_weight)


class _LinearEstimator(GradientEstimator):
    """The fit shared by the linear estimators; subclasses choose the model kind and alpha."""

    _target = "values"

    def _kind(self, classes) -> str:
        raise NotImplementedError

    def _penalty(self, total_weight: float) -> tuple[str, float]:
        """(parameter that sets it, mpiml's alpha) for rows of this global weight."""
        raise NotImplementedError

    def _fit(self, X, y, sample_weight=None):
        comm = self._communicator()
        rows = self._agreed_input(comm, X, y, self._target, sample_weight,
                                  getattr(self, "class_weight", None))
        kind = self._kind(rows.classes)
        parameter, alpha = self._penalty(rows.weight_total)
        settings = [("model.kind", "", kind),
                    ("model.fit_intercept", "fit_intercept", self.fit_intercept),
                    ("model.alpha", parameter, alpha),
                    ("model.l1_ratio", "l1_ratio", getattr(self, "l1_ratio", 0.0))]
        if kind == "svm":
            settings.append(("model.loss", "loss", self.loss))
        self._fit_gradient_model(comm, rows, kind, settings)
        return self

    def _set_fitted(self, saved: SavedModel, state: dict) -> None:
        self._set_common_fitted(saved, state)
        model = saved.model
        coef = model.coef(saved.params).copy()
        intercept = model.intercept(saved.params).copy()
        if saved.scaler is not None:  # w.(x - m)/s + b = (w/s).x + (b - (w/s).m)
            mean, scale = saved.scaler
            coef /= scale
            intercept -= coef @ mean
        if saved.classes is not None:
            self.classes_ = saved.classes
            if len(coef) == 2:  # two-class softmax: the same model as one logistic row
                coef, intercept = coef[1:] - coef[:1], intercept[1:] - intercept[:1]
            self.coef_, self.intercept_ = coef, intercept
        else:
            self.coef_, self.intercept_ = coef[0], float(intercept[0])

    def to_sklearn(self):
        """An equivalent fitted scikit-learn estimator (local): the same ``coef_``,
        ``intercept_`` and ``classes_``, hence the same predictions. With ``standardize=True``
        too: the scaler is folded into ``coef_`` and ``intercept_``, so no Pipeline is needed."""
        check_is_fitted(self)
        twin = self._sklearn_twin()
        fitted = vars(self)
        for name in ("coef_", "intercept_", "classes_", "n_features_in_", "feature_names_in_"):
            if name in fitted:
                setattr(twin, name, copy.copy(fitted[name]))
        return twin


class _LinearRegressor(GlobalRegressorScore, _LinearEstimator):
    """Least squares: ``predict`` and the global R² ``score``."""

    def _kind(self, classes) -> str:
        return "linear"

    def fit(self, X, y, sample_weight=None):
        """Fit on this rank's rows ``X``, ``y`` and their ``sample_weight`` (None: all 1)
        (collective: every rank calls it)."""
        return self._fit(X, y, sample_weight)

    def predict(self, X):
        """``X @ coef_ + intercept_`` for the rows given (local)."""
        X = self._local_input(X)
        return safe_sparse_dot(X, self.coef_, dense_output=True) + self.intercept_


class LinearRegression(_LinearRegressor):
    """Ordinary least squares over the rows of every rank of ``comm``.

    Minimises ``(1/2N) sum_i (x_i.w + b - y_i)^2`` with ``solver`` (L-BFGS by default, to
    ``tol``); scikit-learn's ``LinearRegression`` solves the same problem directly.
    """

    def __init__(self, *, fit_intercept=True, solver="lbfgs", max_iter=500, tol=1e-10,
                 learning_rate_init=0.1, batch_size=None, n_iter_no_change=5,
                 standardize=False, random_state=None, comm_mode="sync",
                 allreduce_algorithm="auto", reproducible=False,
                 early_stopping=False, validation_fraction=0.1, checkpoint_dir=None, comm=None):
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
        return "", 0.0

    def _sklearn_twin(self):
        from sklearn.linear_model import LinearRegression as Twin

        return Twin(fit_intercept=self.fit_intercept)


class Ridge(_LinearRegressor):
    """Least squares with an L2 penalty, scikit-learn's objective
    ``||y - Xw - b||^2 + alpha ||w||^2`` over the rows of every rank (mpiml alpha = alpha / N).
    """

    def __init__(self, alpha=1.0, *, fit_intercept=True, solver="lbfgs", max_iter=500, tol=1e-10,
                 learning_rate_init=0.1, batch_size=None, n_iter_no_change=5,
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

    def _penalty(self, total_weight):
        return "alpha", check_number("alpha", self.alpha) / total_weight

    def _sklearn_twin(self):
        from sklearn.linear_model import Ridge as Twin

        return Twin(alpha=self.alpha, fit_intercept=self.fit_intercept)


class _LinearClassifier(GlobalClassifierScore, _LinearEstimator):
    """Linear classifiers: scores, labels, the ``C`` penalty and the global accuracy ``score``."""

    _target = "classes"

    def fit(self, X, y, sample_weight=None):
        """Fit on this rank's rows ``X``, ``y`` and their ``sample_weight`` (None: all 1)
        (collective: every rank calls it). The classes are those of all ranks together,
        sorted; ``class_weight`` multiplies each row's weight by its class's."""
        return self._fit(X, y, sample_weight)

    def _penalty(self, total_weight):
        return "C", _alpha_from_C(self.C, total_weight)

    def decision_function(self, X):
        """Scores ``X @ coef_.T + intercept_`` (local): shape (n,) for two classes (positive:
        ``classes_[1]``), (n, K) for K > 2."""
        X = self._local_input(X)
        scores = safe_sparse_dot(X, self.coef_.T, dense_output=True) + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X):
        """The class of the largest score (local)."""
        scores = self.decision_function(X)
        index = (scores > 0).astype(np.intp) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]


class _Probabilistic:
    """Probabilities of the logistic models: sigmoid of the score (two classes), softmax of the
    scores (more), computed exactly as scikit-learn's LogisticRegression computes them."""

    def predict_proba(self, X):
        """Class probabilities, shape (n, K), columns in the order of ``classes_`` (local)."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            positive = expit(scores)
            return np.stack([1 - positive, positive], axis=1)
        return softmax(scores, copy=False)

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba` (local)."""
        return np.log(self.predict_proba(X))

    def _sklearn_twin(self):
        from sklearn.linear_model import LogisticRegression as Twin

        twin = Twin(C=self.C, l1_ratio=self.l1_ratio, fit_intercept=self.fit_intercept,
                    class_weight=self.class_weight,
                    tol=self.tol, max_iter=self.max_iter,
                    solver="saga" if self.l1_ratio > 0 else "lbfgs")
        if hasattr(self, "n_iter_"):
            twin.n_iter_ = np.array([self.n_iter_], dtype=np.int32)
        return twin


class LogisticRegression(_Probabilistic, _LinearClassifier):
    """Logistic regression over the rows of every rank: binary (one weight row) for two classes,
    multinomial (one row per class) for more, as scikit-learn's LogisticRegression.

    Minimises ``C sum_i loss_i + ||w||^2 / 2`` (``alpha = 1 / (C N)``; ``l1_ratio > 0`` adds
    an L1 share and needs a first-order ``solver``, e.g. ``"sgd"``).
    """

    def __init__(self, C=1.0, *, l1_ratio=0.0, fit_intercept=True, class_weight=None,
                 solver="lbfgs", max_iter=100, tol=1e-8, learning_rate_init=0.1,
                 batch_size=None, n_iter_no_change=5, standardize=False, random_state=None,
                 comm_mode="sync", allreduce_algorithm="auto", reproducible=False,
                 early_stopping=False, validation_fraction=0.1, checkpoint_dir=None, comm=None):
        self.C = C
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
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

    def _kind(self, classes) -> str:
        return "logistic" if len(classes) == 2 else "softmax"


class SoftmaxRegression(LogisticRegression):
    """Multinomial logistic regression: one weight row per class, even for two classes. Same
    objective and parameters as :class:`LogisticRegression`.

    With two classes, ``coef_`` is reported as the equivalent single row (row 1 minus row 0,
    scikit-learn's binary shape). The two rows are penalised separately, so that model is
    ``LogisticRegression(C=2 * C)``.
    """

    def _kind(self, classes) -> str:
        return "softmax"


class LinearSVC(_LinearClassifier):
    """Linear support vector machine for two classes over the rows of every rank.

    Minimises ``C sum_i loss_i + ||w||^2 / 2`` with ``loss`` ``"squared_hinge"`` (default, as
    scikit-learn; smooth, so L-BFGS suits it) or ``"hinge"`` (use a first-order ``solver``).
    Unlike scikit-learn's liblinear, the intercept is not penalised. Binary only: more classes
    raise ValueError.
    """

    def __init__(self, C=1.0, *, loss="squared_hinge", fit_intercept=True, class_weight=None,
                 solver="lbfgs", max_iter=1000, tol=1e-8, learning_rate_init=0.1,
                 batch_size=None, n_iter_no_change=5, standardize=False, random_state=None,
                 comm_mode="sync", allreduce_algorithm="auto", reproducible=False,
                 early_stopping=False, validation_fraction=0.1, checkpoint_dir=None, comm=None):
        self.C = C
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
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

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags

    def _kind(self, classes) -> str:
        if len(classes) > 2:
            raise mark_raised_together(ValueError(
                f"Only binary classification is supported. The type of the target is multiclass "
                f"({len(classes)} classes over all ranks)."))
        return "svm"

    def _sklearn_twin(self):
        from sklearn.svm import LinearSVC as Twin

        twin = Twin(C=self.C, loss=self.loss, fit_intercept=self.fit_intercept,
                    class_weight=self.class_weight, tol=self.tol,
                    max_iter=self.max_iter)
        if hasattr(self, "n_iter_"):
            twin.n_iter_ = self.n_iter_
        return twin
