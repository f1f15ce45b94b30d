"""Shared machinery of the generalised linear models: one flat float64 parameter vector.

Layout of the vector: ``coef`` of shape ``(n_outputs, n_features)`` row-major, then ``intercept``
of shape ``(n_outputs,)`` when ``fit_intercept``. A single contiguous vector lets the gradient of
any model travel in one allreduce buffer and lets every optimizer work on plain 1-D arrays.

Models return sums over the rows they are given, never means: the trainer reduces the sums over
all ranks and divides by the global row count (with sample weights: the global weight sum),
which stays exact for uneven shards.
"""

from __future__ import annotations

import numbers

import numpy as np

#: Bytes of dense X per tile of rows in :meth:`LinearModel.loss_grad_sum`. A tile of this size
#: stays in the core's L2 cache between the product that gives its scores and the one that gives
#: its gradient, so one pass reads X from memory once instead of twice, every temporary is a few
#: hundred KB instead of a multiple of the shard, and float32 gradient sums accumulate in float64
#: across tiles (scripts/bench_training.py measures the effect).
TILE_BYTES = 1 << 20


def check_fraction(name: str, value) -> float:
    if not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}")
    return float(value)


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def check_binary(y) -> np.ndarray:
    """``y`` as an array after checking that every label is 0 or 1 (ValueError naming the first
    other one). int64 labels (what the data layer gives) take one reduction: viewed as
    unsigned, negative labels are huge."""
    y = np.asarray(y)
    if y.dtype == np.int64:
        if not y.size or y.view(np.uint64).max() <= 1:
            return y
        invalid = y.view(np.uint64) > 1
    else:
        invalid = (y != 0) & (y != 1)
        if not invalid.any():
            return y
    raise ValueError(f"binary labels must be 0 or 1; got {y[np.argmax(invalid)]!r}")


def binary_signs(y: np.ndarray) -> np.ndarray:
    """Map labels in {0, 1} to signs s = 2y - 1 in {-1, +1} (float64); reject any other label."""
    signs = np.multiply(check_binary(y), 2.0, dtype=np.float64)
    signs -= 1.0
    return signs


def weighted_sum(values: np.ndarray, sample_weight: np.ndarray | None) -> float:
    """``sum_i values_i``, or ``sum_i w_i values_i`` with per-row weights ``w``."""
    return float(values.sum() if sample_weight is None else values @ sample_weight)


def check_sample_weight(sample_weight, n_rows: int) -> np.ndarray | None:
    """Per-row weights as a float64 vector of ``n_rows`` (None stays None: every row weighs 1).
    Their values are checked where they enter (:mod:`mpiml.data.weights`)."""
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight must be 1-D with {n_rows} entries (rows of X); got "
                         f"shape {weights.shape}")
    return weights


def class_indices(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Labels 0..n_classes-1 of any numeric dtype as an index array; reject any other label.
    Index labels (what the data layer gives) take one reduction and no copy."""
    y = np.asarray(y)
    if y.dtype == np.intp and (not y.size or y.view(np.uintp).max() < n_classes):
        return y
    indices = y.astype(np.intp)
    invalid = (indices != y) | (indices < 0) | (indices >= n_classes)
    if invalid.any():
        raise ValueError(
            f"class labels must be integers in 0..{n_classes - 1}; got {y[np.argmax(invalid)]!r}"
        )
    return indices


class LinearModel:
    """Base of the models whose scores are ``z = X @ coef.T + intercept``.

    Objective, formed by the trainer from the sums this class returns::

        J(w) = (1/W) sum_i s_i loss(z_i, y_i)
               + 0.5 * alpha * (1 - l1_ratio) * ||coef||^2 + alpha * l1_ratio * ||coef||_1

    where ``s_i`` are the per-row sample weights (1 without them), W their global sum (the
    row count N without them), and the intercept is never penalised. The smooth L2 term
    comes from :meth:`penalty`; the L1 term is applied by :meth:`prox` (proximal step).

    Subclasses set ``kind`` and define ``_loss_sum(z, y, s)`` and ``_loss_and_dz(z, y, s)`` on
    float64 scores ``z`` of shape ``(n,)`` (one output) or ``(n, n_outputs)`` and per-row
    weights ``s`` (None: all 1); ``dz`` is the derivative of each row's weighted loss with
    respect to its scores. Both may overwrite ``z`` (a temporary).
    A subclass may instead override :meth:`_tile_loss_grad`, the step of
    :meth:`loss_grad_sum` for one tile of rows.
    """

    kind = ""

    def __init__(
        self,
        n_features: int,
        fit_intercept: bool = True,
        alpha: float = 0.0,
        l1_ratio: float = 0.0,
        *,
        n_outputs: int = 1,
    ):
        self.n_features = check_positive_int("n_features", n_features)
        self.n_outputs = check_positive_int("n_outputs", n_outputs)
        if not isinstance(fit_intercept, (bool, np.bool_)):
            raise ValueError(f"fit_intercept must be True or False; got {fit_intercept!r}")
        self.fit_intercept = bool(fit_intercept)
        if not isinstance(alpha, numbers.Real) or not 0.0 <= alpha < np.inf:
            raise ValueError(f"alpha must be a finite number >= 0; got {alpha!r}")
        self.alpha = float(alpha)
        self.l1_ratio = check_fraction("l1_ratio", l1_ratio)
        self._n_coef = self.n_outputs * self.n_features
        self.n_params = self._n_coef + (self.n_outputs if self.fit_intercept else 0)

    #: Attributes shown by ``repr``; subclasses with extra constructor arguments extend it.
    _repr_fields: tuple[str, ...] = ("n_features", "fit_intercept", "alpha", "l1_ratio")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._repr_fields)
        return f"{type(self).__name__}({fields})"

    def options(self) -> dict:
        """Constructor arguments other than n_features and n_classes that rebuild this model
        with :func:`mpiml.models.make_model` (saved with the model)."""
        return {name: getattr(self, name) for name in self._repr_fields
                if name not in ("n_features", "n_classes")}

    # -- parameter vector -------------------------------------------------------------------

    def init_params(self, seed: int = 0) -> np.ndarray:
        """Starting point: zeros (the losses are convex). ``seed`` keeps one interface for all."""
        return np.zeros(self.n_params, dtype=np.float64)

    def coef(self, params: np.ndarray) -> np.ndarray:
        """View of the coefficients in ``params``, shape ``(n_outputs, n_features)``."""
        return params[: self._n_coef].reshape(self.n_outputs, self.n_features)

    def intercept(self, params: np.ndarray) -> np.ndarray:
        """View of the intercepts in ``params``; zeros (a new array) without an intercept."""
        if self.fit_intercept:
            return params[self._n_coef :]
        return np.zeros(self.n_outputs, dtype=params.dtype)

    def _check_params(self, name: str, params: np.ndarray) -> None:
        if params.shape != (self.n_params,) or params.dtype != np.float64:
            raise ValueError(
                f"{name} must be a float64 vector of length {self.n_params} for {self!r}; "
                f"got dtype {params.dtype} and shape {params.shape}"
            )

    def _check_data(self, X, y=None) -> None:
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X must be 2-D with {self.n_features} columns; got shape {X.shape}")
        if y is not None and np.shape(y) != (X.shape[0],):
            raise ValueError(
                f"y must be 1-D with {X.shape[0]} entries (rows of X); got shape {np.shape(y)}"
            )

    # -- scores, loss and gradient ----------------------------------------------------------

    @staticmethod
    def _compute_dtype(X) -> type:
        """float32 for float32 X (cast the small weights, never copy X), float64 otherwise."""
        return np.float32 if X.dtype == np.float32 else np.float64

    def _weights(self, params: np.ndarray, X) -> np.ndarray:
        """``coef`` in the dtype the products with X run in (a small cast, never a copy of X)."""
        return self.coef(params).astype(self._compute_dtype(X), copy=False)

    def _tile_scores(self, X, weights: np.ndarray, intercept: np.ndarray | None) -> np.ndarray:
        """Float64 scores of the rows of X from prepared ``weights`` (see :meth:`_weights`)."""
        raw = X @ weights[0] if self.n_outputs == 1 else X @ weights.T
        scores = np.asarray(raw, dtype=np.float64)
        if intercept is not None:
            scores += intercept[0] if self.n_outputs == 1 else intercept
        return scores

    def _scores(self, params: np.ndarray, X) -> np.ndarray:
        """Float64 scores: shape ``(n,)`` for one output, ``(n, n_outputs)`` otherwise."""
        intercept = self.intercept(params) if self.fit_intercept else None
        return self._tile_scores(X, self._weights(params, X), intercept)

    def loss_grad_sum(self, params: np.ndarray, X, y: np.ndarray, grad_out: np.ndarray,
                      sample_weight: np.ndarray | None = None) -> float:
        """Sum over the rows of X of the loss; its gradient sum is written into ``grad_out``.

        ``X`` is a dense 2-D array (float32 or float64) or a CSR matrix, ``y`` is 1-D;
        ``sample_weight`` (one weight per row, None: all 1) weighs each row's loss and
        gradient.
        ``grad_out`` (float64, length ``n_params``, may be a view into a larger buffer) is
        overwritten. Dense X is processed in tiles of rows (:data:`TILE_BYTES`): per tile,
        one product gives the scores for the loss and one gives the gradient, while the tile is
        still in cache; the tile sums accumulate in float64.
        """
        self._check_params("params", params)
        self._check_params("grad_out", grad_out)
        if not grad_out.flags.c_contiguous:
            raise ValueError("grad_out must be contiguous (a slice of the flat reduction buffer)")
        self._check_data(X, y)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        weights = self._weights(params, X)
        intercept = self.intercept(params) if self.fit_intercept else None
        coef_grad = self.coef(grad_out)
        intercept_grad = grad_out[self._n_coef :] if self.fit_intercept else None
        n, row_bytes = X.shape[0], X.shape[1] * X.dtype.itemsize
        if not isinstance(X, np.ndarray) or n * row_bytes <= TILE_BYTES:  # one tile; CSR too
            return self._tile_loss_grad(X, y, sample_weight, weights, intercept, coef_grad,
                                         intercept_grad, False)
        step = max(1, TILE_BYTES // row_bytes)
        loss = 0.0
        for lo in range(0, n, step):
            tile_weight = None if sample_weight is None else sample_weight[lo : lo + step]
            loss += self._tile_loss_grad(X[lo : lo + step], y[lo : lo + step], tile_weight,
                                          weights, intercept, coef_grad, intercept_grad, lo > 0)
        return float(loss)

    def _tile_loss_grad(self, X, y, sample_weight, weights, intercept, coef_grad,
                         intercept_grad, accumulate: bool) -> float:
        """Loss sum of one tile of rows (weighted by ``sample_weight``, None: all 1); writes
        (``accumulate``: adds) its gradient sums into ``coef_grad`` (a view of shape
        ``(n_outputs, n_features)``) and ``intercept_grad`` (None without intercept)."""
        loss, dz = self._loss_and_dz(self._tile_scores(X, weights, intercept), y, sample_weight)
        row_weights = dz.astype(weights.dtype, copy=False)
        tile_grad = X.T @ row_weights if self.n_outputs == 1 else (X.T @ row_weights).T
        intercept_sum = dz.sum(axis=0) if intercept_grad is not None else None
        if accumulate:
            coef_grad += tile_grad
            if intercept_sum is not None:
                intercept_grad += intercept_sum
        else:
            coef_grad[...] = tile_grad
            if intercept_sum is not None:
                intercept_grad[...] = intercept_sum
        return float(loss)

    def loss_sum(self, params: np.ndarray, X, y: np.ndarray,
                 sample_weight: np.ndarray | None = None) -> float:
        """Sum over the rows of X of the (weighted) loss (no penalty)."""
        self._check_params("params", params)
        self._check_data(X, y)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        return float(self._loss_sum(self._scores(params, X), y, sample_weight))

    # -- regularisation ---------------------------------------------------------------------

    def penalty(self, params: np.ndarray) -> tuple[float, np.ndarray]:
        """Smooth part of the penalty and its gradient as a new vector (see
        :meth:`add_penalty`)."""
        grad = np.zeros(self.n_params, dtype=np.float64)
        return self.add_penalty(params, grad), grad

    def add_penalty(self, params: np.ndarray, grad_out: np.ndarray) -> float:
        """Smooth part of the penalty, ``0.5 * alpha * (1 - l1_ratio) * ||coef||^2``; adds its
        gradient (zero on the intercept) to ``grad_out`` in place, so that the loop's step
        allocates no vector of ``n_params`` for it."""
        strength = self.alpha * (1.0 - self.l1_ratio)
        coef = params[: self._n_coef]
        grad_out[: self._n_coef] += strength * coef
        return 0.5 * strength * float(coef @ coef)

    def l1_penalty(self, params: np.ndarray) -> float:
        """Non-smooth part of the penalty, ``alpha * l1_ratio * ||coef||_1`` (for reporting J)."""
        if self.l1_ratio == 0.0 or self.alpha == 0.0:
            return 0.0  # the trainer asks every step: skip the pass over coef
        return self.alpha * self.l1_ratio * float(np.abs(params[: self._n_coef]).sum())

    def prox(self, params: np.ndarray, step: float) -> None:
        """Proximal step of the L1 term, in place: soft-threshold coef by ``step*alpha*l1_ratio``.

        After a gradient step of size ``step`` on the smooth part, this makes SGD-type
        optimizers minimise the full elastic-net objective and produce exact zeros.
        """
        threshold = step * self.alpha * self.l1_ratio
        if threshold == 0.0:
            return
        coef = params[: self._n_coef]
        magnitude = np.abs(coef) - threshold
        np.maximum(magnitude, 0.0, out=magnitude)
        np.copysign(magnitude, coef, out=coef)

    # -- prediction ---------------------------------------------------------------------------

    def decision_function(self, params: np.ndarray, X) -> np.ndarray:
        """Float64 scores ``X @ coef.T + intercept``: ``(n,)`` for one output, else ``(n, K)``."""
        self._check_params("params", params)
        self._check_data(X)
        return self._scores(params, X)

    def predict(self, params: np.ndarray, X) -> np.ndarray:
        """Predictions for the rows of X (values for regression, labels for classifiers)."""
        return self.decision_function(params, X)

    #: Whether :meth:`class_scores` are probabilities (their log-loss means something).
    probabilistic = True

    def class_scores(self, params: np.ndarray, X) -> np.ndarray:
        """Classifiers: ``(n, K)`` scores whose argmax is the predicted class and whose column
        k ranks rows by how likely class k is (what evaluation needs): the probabilities."""
        return self.predict_proba(params, X)

    def _loss_sum(self, scores: np.ndarray, y: np.ndarray, sample_weight) -> float:
        raise NotImplementedError

    def _loss_and_dz(self, scores: np.ndarray, y: np.ndarray, sample_weight
                     ) -> tuple[float, np.ndarray]:
        raise NotImplementedError
