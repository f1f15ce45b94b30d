"""What every mpiml estimator shares: the communicator, input checks agreed across ranks, the
config a fit runs with, the global ``score``, and saving.

``fit`` is collective: every rank of ``comm`` calls it with ITS OWN rows (rank r's rows come
after rank r-1's in the global order) and every rank ends with the same fitted model. Any input
problem found on one rank is raised on every rank, so no rank is left waiting in a collective.
``predict``, ``predict_proba``, ``decision_function`` and ``transform`` are local: no
communication, any rows. ``score`` and ``save`` are collective.
"""

from __future__ import annotations

import copy
import hashlib
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_array,
    check_consistent_length,
    check_is_fitted,
    validate_data,
)

from ..comm import allgather_object, mark_raised_together, on_root, raise_together, world
from ..config import Config, ConfigError, dump, from_dict
from ..data.run_rows import distinct_labels, from_arrays, merge_classes
from ..data.weights import check_weights, row_weights
from ..fit import FitResult, fit
from ..models.kinds import KINDS
from ..run import open_run

FLOAT_DTYPES = (np.float64, np.float32)


@dataclass
class FitInput:
    """This rank's validated rows and what all ranks agreed on."""

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray | None  # classification: indices into ``classes``
    n_total: int
    classes: np.ndarray | None
    w: np.ndarray | None = None  # sample weights times class weights; None: every row weighs 1
    weight_total: float = 0.0  # over all ranks (n_total without weights)


def check_number(name: str, value, minimum: float = 0.0) -> float:
    """``value`` as a float, or a ValueError naming the parameter (before it is divided by N)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= minimum:
        raise ValueError(f"{name} must be a number >= {minimum}; got {value!r}")
    return float(value)


def csr_or_dense(X):
    """Sparse input as a CSR matrix (the layout every mpiml model computes with)."""
    return sp.csr_matrix(X) if sp.issparse(X) else X


class MpimlEstimator(BaseEstimator):
    """Base of the mpiml estimators (see the module docstring for what is collective).

    Subclasses turn their hyperparameters into ``(config key, parameter, value)`` triples for
    :meth:`_run_config` (the parameter names the value in error messages), and define
    ``_set_fitted``, which sets every fitted attribute from a :class:`mpiml.models.saved.SavedModel`
    plus a small JSON-able dict (``_fitted_state``), so that ``fit`` and
    :func:`mpiml.estimators.load` share one code path and give identical predictions.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def __sklearn_clone__(self):
        """Like :func:`sklearn.base.clone`, but the clone shares ``comm``: a communicator is a
        handle on a group of processes, not a value to copy (mpi4py cannot deep-copy one)."""
        params = {name: value if name == "comm" else clone(value, safe=False)
                  for name, value in self.get_params(deep=False).items()}
        twin = type(self)(**params)
        for attribute in ("_metadata_request", "_sklearn_output_config"):
            if hasattr(self, attribute):
                setattr(twin, attribute, copy.deepcopy(getattr(self, attribute)))
        return twin

    def _communicator(self):
        """``comm``, or COMM_WORLD when it is None."""
        return world(self.comm)

    # -- input ---------------------------------------------------------------------------------

    def _agreed_input(self, comm, X, y=None, target: str = "none", sample_weight=None,
                      class_weight=None) -> FitInput:
        """Validate this rank's rows, then agree across ranks (collective).

        ``target``: ``none`` (y ignored), ``values`` (regression) or ``classes`` (then ``y``
        becomes indices 0..K-1 into the sorted classes of all ranks: the fit loops see only
        those, whatever the labels are, and ``classes_`` maps back). Raises the
        same error on every rank if any rank's rows are invalid, if the ranks disagree on the
        feature count, the hyperparameters or the label type (text or numbers), or if no rank
        holds a row. A rank may hold no rows. ``sample_weight`` (this rank's rows; a rank
        without may pass None: its rows weigh 1) times ``class_weight`` (scikit-learn's, with
        "balanced" from the classes of all ranks) give the rows' weights
        (:func:`mpiml.data.weights.row_weights`).
        """
        error, labels = None, None
        try:
            options = dict(accept_sparse="csr", dtype=FLOAT_DTYPES, ensure_min_samples=0)
            if target == "none":
                X = validate_data(self, X, **options)
            else:
                X, y = validate_data(self, X, y, y_numeric=target == "values", **options)
            if sample_weight is not None:
                sample_weight = _checked_sample_weight(sample_weight, X.shape[0])
                check_weights(sample_weight, 0, f"sample_weight on rank {comm.Get_rank()}",
                              "row")
            if target == "classes":
                if len(y):
                    check_classification_targets(y)
                labels = distinct_labels(y)
        except ValueError as exc:
            error = exc
        except TypeError as exc:
            # as a plain TypeError, which every rank can rebuild from its message (numpy's
            # UFuncTypeError, raised for labels that mix text and numbers, cannot be)
            error = TypeError(str(exc)).with_traceback(exc.__traceback__)
        raise_together(error, comm)
        reports = allgather_object(
            (X.shape[0], X.shape[1], self._params_digest(), labels, sample_weight is not None),
            comm)
        n_total = sum(rows for rows, *_ in reports)
        widths = [width for _, width, *_ in reports]
        digests = [digest for _, _, digest, *_ in reports]
        name = type(self).__name__
        if len(set(widths)) > 1:
            other = next(r for r, width in enumerate(widths) if width != widths[0])
            raise mark_raised_together(ValueError(
                f"X has {widths[other]} features on rank {other} but {widths[0]} on rank 0: "
                f"every rank must pass the same features to {name}.fit"))
        if len(set(digests)) > 1:
            differing = [r for r, digest in enumerate(digests) if digest != digests[0]]
            raise mark_raised_together(ValueError(
                f"{name} has different hyperparameters on ranks {differing} than on rank 0: "
                "construct the estimator identically on every rank"))
        if n_total == 0:
            raise mark_raised_together(ValueError(
                f"Found array with 0 sample(s) (shape=(0, {widths[0]})) on every rank while a "
                f"minimum of 1 is required by {name}."))
        classes = None
        if target == "classes":
            classes = merge_classes([local for *_, local, _ in reports])
            if len(classes) < 2:
                raise mark_raised_together(ValueError(
                    f"{name} needs samples of at least 2 classes in the data, but the data "
                    f"contain only one class: {classes[0]!r}"))
            y = np.searchsorted(classes, y)
        if sample_weight is None and any(weighted for *_, weighted in reports):
            sample_weight = np.ones(X.shape[0])
        weights, total = row_weights(y if classes is not None else None, sample_weight, classes,
                                     class_weight, n_total, self._reducer(comm),
                                     ("sample_weight", "class_weight"))
        return FitInput(csr_or_dense(X), y, n_total, classes, weights, total)

    def _params_digest(self) -> str:
        """Hash of every hyperparameter but ``comm``, to check that all ranks agree."""
        params = sorted((name, repr(value)) for name, value in self.get_params(deep=False).items()
                        if name != "comm")
        return hashlib.sha256(repr(params).encode()).hexdigest()

    def _local_input(self, X):
        """Validate rows to predict (local: no communication) against the fitted feature count.
        No rows is fine: a rank may hold none, and a collective ``score`` still needs it."""
        check_is_fitted(self)
        return csr_or_dense(validate_data(self, X, accept_sparse="csr", dtype=FLOAT_DTYPES,
                                          ensure_min_samples=0, reset=False))

    def _model_input(self, X):
        """:meth:`_local_input`, then the fitted feature scaling (on a copy: never the caller's
        array) -- the rows as ``model_`` expects them."""
        X = self._local_input(X)
        return X if self.model_.scaler is None else self.model_.transform(X.copy())

    # -- the config a fit runs with --------------------------------------------------------------

    def _run_config(self, settings: list[tuple[str, str, object]]) -> Config:
        """The checked Config for this fit: ``settings``, plus no checkpoints (unless
        ``checkpoint_dir`` is given) and no stall watchdog, so a fit writes or moves no file and
        starts no thread (and keeps no log). A bad value is reported with its parameter name.
        The resolved config is kept for :meth:`save`."""
        raw: dict = {"fault": {"stall_seconds": None},
                     "checkpoint": ({"enabled": False} if self.checkpoint_dir is None
                                    else {"enabled": True, "dir": str(self.checkpoint_dir)})}
        for key, _, value in settings:
            section, name = key.split(".")
            raw.setdefault(section, {})[name] = value
        try:
            config = from_dict(raw)
        except ConfigError as exc:
            named = sorted({parameter for key, parameter, _ in settings if key in str(exc)})
            which = f" ({', '.join(named)})" if named else ""
            raise ValueError(f"{type(self).__name__}: invalid hyperparameter{which}: {exc}") \
                from None
        self._config_yaml = dump(config)  # saved with the model, as mpiml.train saves it
        return config

    def _reducer(self, comm):
        """The reducer of this estimator's reductions outside a fit (scores)."""
        from ..comm import Reducer

        return Reducer(comm, getattr(self, "allreduce_algorithm", "auto"))

    def _fit_rows(self, config: Config, comm, rows: FitInput, standardize: bool = False
                  ) -> FitResult:
        """Fit ``config``'s model on the agreed ``rows``: one run context, the rows on its
        reducer, and the loop the kind needs -- the path ``python -m mpiml.train`` takes."""
        with open_run(config, comm) as run:
            data = from_arrays(rows.X, rows.y, run.reducer, KINDS[config.model.kind].task,
                               standardize=standardize, classes=rows.classes,
                               sample_weight=rows.w,
                               validation_fraction=config.data.validation_fraction,
                               seed=config.train.seed)
            return fit(run, data)

    def _validation_settings(self, early_stopping: bool) -> list[tuple[str, str, object]]:
        """With ``early_stopping``, as in scikit-learn: ``validation_fraction`` of the rows (by
        global row, the same on any number of ranks) are held out, and ``n_iter_no_change``
        epochs or rounds without an improvement of ``tol`` on them stop the fit; the fit ends
        with the best parameters on them (``train.restore_best``)."""
        if not early_stopping:
            return []
        return [("data.validation_fraction", "validation_fraction", self.validation_fraction)]

    def _seed(self):
        """``random_state`` as ``train.seed``: None means 0, because every rank must draw the same
        numbers (an mpiml fit is reproducible by default)."""
        return 0 if self.random_state is None else self.random_state

    def _warn_not_converged(self, comm, message: str) -> None:
        """A ConvergenceWarning, from rank 0 only (the fit is identical on every rank). Should
        the caller's warning filters make it an error, that error is raised on every rank."""
        def warn():
            warnings.warn(message, ConvergenceWarning, stacklevel=8)  # the caller of fit

        on_root(warn, comm, share=False)

    # -- fitted state ----------------------------------------------------------------------------

    def _fitted_state(self) -> dict:
        """What ``_set_fitted`` needs besides the model file (JSON-able). An estimator loaded
        from a ``python -m mpiml.train`` file has no ``n_iter_`` (None): the file does not
        record it."""
        state = {"n_iter_": int(self.n_iter_) if hasattr(self, "n_iter_") else None}
        if hasattr(self, "feature_names_in_"):
            state["feature_names_in_"] = [str(name) for name in self.feature_names_in_]
        return state

    def _set_common_fitted(self, saved, state: dict) -> None:
        self.model_ = saved
        self.n_features_in_ = int(saved.n_features)
        if state["n_iter_"] is not None:
            self.n_iter_ = int(state["n_iter_"])
        if "feature_names_in_" in state:
            self.feature_names_in_ = np.asarray(state["feature_names_in_"], dtype=object)

    def save(self, path) -> None:
        """Write the fitted estimator to ``path`` (HDF5, no pickle). Collective: rank 0 writes
        atomically, and every rank returns once the file is complete (a failure is raised on
        every rank). :func:`mpiml.estimators.load` reads it back."""
        from .persist import write

        check_is_fitted(self)
        write(path, self, self._communicator())


def _checked_sample_weight(sample_weight, n_rows: int) -> np.ndarray:
    """``sample_weight`` for a fit: a private float64 copy of one finite weight per row."""
    weights = check_array(sample_weight, ensure_2d=False, dtype=np.float64, copy=True,
                          ensure_min_samples=0, input_name="sample_weight")
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},) (one weight per row of X); "
                         f"got {weights.shape}")
    return weights


def sample_weights(sample_weight, n_rows: int) -> np.ndarray:
    """``sample_weight`` of this rank's rows as float64 (None: all ones)."""
    if sample_weight is None:
        return np.ones(n_rows)
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},); got {weights.shape}")
    return weights


class GlobalClassifierScore(ClassifierMixin):
    """``score``: accuracy over every rank's rows (one allreduce of [weighted hits, weight])."""

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy of ``predict`` on the rows of ALL ranks; identical on every rank.
        Collective: every rank calls it with its own rows (which may be none)."""
        comm = self._communicator()
        sums, error = np.zeros(2), None
        try:
            predicted = self.predict(X)
            y = np.asarray(y).reshape(-1)
            check_consistent_length(predicted, y)
            weights = sample_weights(sample_weight, len(y))
            sums[:] = weights @ (predicted == y), weights.sum()
        except (TypeError, ValueError) as exc:
            error = exc
        raise_together(error, comm)
        self._reducer(comm).sum(sums)
        return float(sums[0] / sums[1]) if sums[1] > 0 else float("nan")


class GlobalRegressorScore(RegressorMixin):
    """``score``: R² over every rank's rows, from two allreduces (the weighted mean of y first,
    then the squared deviations from it: the two-pass form, without cancellation)."""

    def score(self, X, y, sample_weight=None) -> float:
        """R² of ``predict`` on the rows of ALL ranks; identical on every rank. As scikit-learn's
        ``r2_score``: 1.0 for a perfect fit of constant targets, 0.0 for an imperfect one.
        Collective: every rank calls it with its own rows (which may be none)."""
        comm = self._communicator()
        sums, error = np.zeros(3), None
        y_true, weights = np.zeros(0), np.zeros(0)
        try:
            predicted = np.asarray(self.predict(X), dtype=np.float64)
            y_true = np.asarray(y, dtype=np.float64).reshape(-1)
            check_consistent_length(predicted, y_true)
            weights = sample_weights(sample_weight, len(y_true))
            residual = y_true - predicted
            sums[:] = weights.sum(), weights @ y_true, weights @ (residual * residual)
        except (TypeError, ValueError) as exc:
            error = exc
        raise_together(error, comm)
        self._reducer(comm).sum(sums)
        total_weight, weighted_sum, residual_sum = sums
        mean = weighted_sum / total_weight if total_weight > 0 else 0.0
        deviation = y_true - mean
        spread = self._reducer(comm).sum(np.array([weights @ (deviation * deviation)]))[0]
        if spread == 0.0:
            return 1.0 if residual_sum == 0.0 else 0.0
        return float(1.0 - residual_sum / spread)


class GradientEstimator(MpimlEstimator):
    """Base of the estimators trained by the gradient loops (linear models, MLPs):
    the optimizer settings they share and their convergence report."""

    def _fit_gradient_model(self, comm, rows, kind: str, settings) -> None:
        """Train model ``kind`` on the agreed rows with these model ``settings`` plus the solver's
        (:meth:`_gradient_settings`); store the fitted model."""
        config = self._run_config(settings + self._gradient_settings(comm, rows))
        result = self._fit_rows(config, comm, rows, standardize=self.standardize)
        self._set_fitted(result.saved, {"n_iter_": self._iterations(comm, result)})

    def _learning_rate(self, comm, rows: FitInput):
        """The first-order solvers' learning rate: ``learning_rate_init``."""
        return self.learning_rate_init

    def _gradient_settings(self, comm, rows: FitInput) -> list[tuple[str, str, object]]:
        """``solver`` and friends as config settings. ``max_iter`` is L-BFGS iterations for
        ``lbfgs`` and epochs for the first-order solvers, which stop early (``train.patience``)
        once the training loss has not improved by ``tol`` for ``n_iter_no_change`` epochs."""
        full_batch = self.solver in ("lbfgs", "gd")
        settings = [
            ("optimizer.name", "solver", self.solver),
            ("optimizer.lr", "learning_rate_init", self._learning_rate(comm, rows)),
            ("train.batch_size", "batch_size", None if full_batch else self.batch_size),
            ("train.seed", "random_state", self._seed()),
            ("comm.mode", "comm_mode", self.comm_mode),
            ("comm.algorithm", "allreduce_algorithm", self.allreduce_algorithm),
            ("train.reproducible", "reproducible", self.reproducible),
        ]
        if self.solver == "lbfgs":
            if self.early_stopping:
                raise ValueError(f"{type(self).__name__}: early_stopping needs a first-order "
                                 "solver (sgd, momentum, nesterov, adam, adagrad, gd); L-BFGS "
                                 "runs to convergence")
            return settings + [("train.max_steps", "max_iter", self.max_iter),
                               ("optimizer.tol", "tol", self.tol)]
        return settings + [("train.epochs", "max_iter", self.max_iter),
                           ("train.patience", "n_iter_no_change", self.n_iter_no_change),
                           ("train.min_delta", "tol", self.tol),
                           *self._validation_settings(bool(self.early_stopping))]

    def _iterations(self, comm, result: FitResult) -> int:
        """``n_iter_`` of a fit (L-BFGS iterations or epochs);
        warns when the fit stopped at ``max_iter`` rather than by convergence."""
        if self.solver == "lbfgs":
            if result.steps >= self.max_iter:
                self._warn_not_converged(comm, f"L-BFGS did not converge in max_iter="
                                               f"{self.max_iter} iterations (tol={self.tol})")
            return result.steps
        if self.n_iter_no_change is not None and not result.stopped_early:
            self._warn_not_converged(
                comm, f"{self.solver} ran max_iter={self.max_iter} epochs and the training loss "
                      f"was still improving by more than tol={self.tol}")
        return result.epochs
