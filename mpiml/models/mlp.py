"""Multi-layer perceptron (classifier or regressor) over one flat float64 parameter vector.

Same interface as :class:`mpiml.models.base.LinearModel`, so the trainer and every optimizer
train it unchanged: the model returns loss and gradient SUMS over the rows it is given and the
trainer divides by the global row count after the allreduce.

Parameter layout: for each layer ``l`` in order, ``W_l`` of shape ``(fan_in, fan_out)``
row-major, then ``b_l`` of shape ``(fan_out,)``. Layers are views into the one vector, and the
backward pass writes each layer's gradient straight into the matching view of ``grad_out``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .base import (
    LinearModel,
    check_positive_int,
    check_sample_weight,
    class_indices,
    weighted_sum,
)

ACTIVATIONS = ("relu", "tanh")
TASKS = ("classification", "regression")


class MLP:
    """Fully connected network ``x -> act(x W_1 + b_1) -> ... -> scores = a W_L + b_L``.

    Objective formed by the trainer from the sums this class returns::

        J(theta) = (1/W) sum_i s_i loss(scores_i, y_i) + 0.5 * alpha * sum_l ||W_l||^2

    (biases are never penalised; ``s_i`` per-row sample weights, 1 without them, and W their
    global sum), with per-row losses

    * classification (labels 0..K-1, K >= 2 outputs, binary included):
      ``loss_i = logsumexp(s_i) - s_i[y_i]``, ``dloss_i/ds_i = softmax(s_i) - onehot(y_i)``;
    * regression (one output): ``loss_i = 0.5 (s_i - y_i)^2``, ``dloss_i/ds_i = s_i - y_i``.

    Backpropagation: ``delta_L = dloss/ds``; ``grad W_l = A_{l-1}^T delta_l``,
    ``grad b_l = sum_rows delta_l``, ``delta_{l-1} = (delta_l W_l^T) * act'(Z_{l-1})`` with
    ``relu' = [Z > 0]`` and ``tanh' = 1 - tanh(Z)^2``.
    """

    fit_intercept = True
    l1_ratio = 0.0

    def __init__(self, n_features: int, n_classes: int = 2, hidden=(64,), activation: str = "relu",
                 task: str = "classification", alpha: float = 0.0):
        self.n_features = check_positive_int("n_features", n_features)
        if task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; "
                             f"got {activation!r}")
        if not isinstance(alpha, numbers.Real) or not 0.0 <= alpha < np.inf:
            raise ValueError(f"alpha must be a finite number >= 0; got {alpha!r}")
        try:
            self.hidden = tuple(check_positive_int("hidden layer width", h) for h in hidden)
        except TypeError:
            raise ValueError(f"hidden must be a sequence of layer widths; got {hidden!r}") from None
        self.task, self.activation, self.alpha = task, activation, float(alpha)
        if task == "classification":
            self.n_classes = check_positive_int("n_classes", n_classes)
            if self.n_classes < 2:
                raise ValueError(f"n_classes must be at least 2; got {n_classes}")
            self.n_outputs = self.n_classes
            self.kind = "mlp_classifier"
        else:
            self.n_classes, self.n_outputs, self.kind = None, 1, "mlp_regressor"
        sizes = (self.n_features, *self.hidden, self.n_outputs)
        #: per layer: (offset of W, offset of b, end of b, fan_in, fan_out)
        self._layout = []
        offset = 0
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            bias_at = offset + fan_in * fan_out
            self._layout.append((offset, bias_at, bias_at + fan_out, fan_in, fan_out))
            offset = bias_at + fan_out
        self.n_params = offset

    def __repr__(self) -> str:
        return (f"MLP(n_features={self.n_features}, n_classes={self.n_classes}, "
                f"hidden={self.hidden}, activation={self.activation!r}, task={self.task!r}, "
                f"alpha={self.alpha!r})")

    def options(self) -> dict:
        """Constructor arguments other than n_features and n_classes that rebuild this model."""
        return dict(hidden=list(self.hidden), activation=self.activation, task=self.task,
                    alpha=self.alpha)

    # -- parameter vector -------------------------------------------------------------------

    def layers(self, vector: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Views ``(W_l, b_l)`` into a parameter (or gradient) vector, input layer first."""
        return [(vector[w_at:b_at].reshape(fan_in, fan_out), vector[b_at:end])
                for w_at, b_at, end, fan_in, fan_out in self._layout]

    def init_params(self, seed: int = 0) -> np.ndarray:
        """Seeded random weights, zero biases: He normal ``N(0, 2/fan_in)`` for relu, Glorot
        uniform ``U(+-sqrt(6/(fan_in+fan_out)))`` for tanh. The same seed gives the same vector."""
        rng = np.random.default_rng(seed)
        params = np.zeros(self.n_params, dtype=np.float64)
        for weights, _ in self.layers(params):
            fan_in, fan_out = weights.shape
            if self.activation == "relu":
                weights[...] = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=weights.shape)
            else:
                limit = np.sqrt(6.0 / (fan_in + fan_out))
                weights[...] = rng.uniform(-limit, limit, size=weights.shape)
        return params

    # the same argument checks as the linear models (they read n_params / n_features only)
    _check_params = LinearModel._check_params
    _check_data = LinearModel._check_data

    # -- forward and backward -----------------------------------------------------------------

    def _forward(self, params: np.ndarray, X) -> list[np.ndarray]:
        """Activations of every hidden layer then the float64 output scores ``(n, n_outputs)``.

        The first product runs in float32 for float32 X (the weights are cast, X is never
        copied); everything after it is float64.
        """
        outputs = []
        inputs = X
        last = len(self._layout) - 1
        for index, (weights, bias) in enumerate(self.layers(params)):
            if index == 0 and X.dtype == np.float32:
                weights = weights.astype(np.float32)
            scores = np.asarray(inputs @ weights, dtype=np.float64)
            scores += bias
            if index < last:
                if self.activation == "relu":
                    np.maximum(scores, 0.0, out=scores)
                else:
                    np.tanh(scores, out=scores)
            outputs.append(scores)
            inputs = scores
        return outputs

    def _loss_and_dscores(self, scores: np.ndarray, y: np.ndarray, sample_weight
                          ) -> tuple[float, np.ndarray]:
        """Summed (weighted) loss and its derivative with respect to the scores (overwrites
        ``scores``)."""
        if self.task == "regression":
            residual = scores
            residual[:, 0] -= y
            if sample_weight is None:
                return 0.5 * float(np.einsum("ij,ij->", residual, residual)), residual
            loss = 0.5 * float((residual[:, 0] * sample_weight) @ residual[:, 0])
            residual *= sample_weight[:, None]
            return loss, residual
        labels = class_indices(y, self.n_classes)
        rows = np.arange(len(labels))
        scores -= scores.max(axis=1, keepdims=True)
        log_partition = np.log(np.exp(scores).sum(axis=1))
        loss = (weighted_sum(log_partition, sample_weight)
                - weighted_sum(scores[rows, labels], sample_weight))
        scores -= log_partition[:, None]
        probabilities = np.exp(scores, out=scores)
        probabilities[rows, labels] -= 1.0
        if sample_weight is not None:
            probabilities *= sample_weight[:, None]
        return loss, probabilities

    def loss_grad_sum(self, params: np.ndarray, X, y: np.ndarray, grad_out: np.ndarray,
                      sample_weight: np.ndarray | None = None) -> float:
        """Sum over the rows of X of the loss; its gradient sum is written into ``grad_out``.

        ``X`` is dense (float32/float64) or CSR; ``grad_out`` (float64, ``n_params``, possibly a
        view into the reduction buffer) is overwritten layer by layer through its views.
        ``sample_weight`` (one weight per row, None: all 1) weighs each row's loss and gradient.
        """
        self._check_params("params", params)
        self._check_params("grad_out", grad_out)
        if not grad_out.flags.c_contiguous:
            raise ValueError("grad_out must be contiguous (a slice of the flat reduction buffer)")
        self._check_data(X, y)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        activations = self._forward(params, X)
        loss, delta = self._loss_and_dscores(activations[-1], y, sample_weight)
        layers, grads = self.layers(params), self.layers(grad_out)
        for index in range(len(layers) - 1, -1, -1):
            weight_grad, bias_grad = grads[index]
            delta.sum(axis=0, out=bias_grad)
            if index == 0:
                first_delta = delta.astype(np.float32) if X.dtype == np.float32 else delta
                weight_grad[...] = X.T @ first_delta
                break
            below = activations[index - 1]
            np.matmul(below.T, delta, out=weight_grad)
            delta = delta @ layers[index][0].T
            if self.activation == "relu":
                delta *= below > 0.0
            else:
                delta *= 1.0 - below * below
        return loss

    def loss_sum(self, params: np.ndarray, X, y: np.ndarray,
                 sample_weight: np.ndarray | None = None) -> float:
        """Sum over the rows of X of the (weighted) loss (no penalty)."""
        self._check_params("params", params)
        self._check_data(X, y)
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        return self._loss_and_dscores(self._forward(params, X)[-1], y, sample_weight)[0]

    # -- regularisation ---------------------------------------------------------------------

    penalty = LinearModel.penalty

    def add_penalty(self, params: np.ndarray, grad_out: np.ndarray) -> float:
        """``0.5 * alpha * sum_l ||W_l||^2``; adds its gradient ``alpha * W_l`` (zero on
        biases) to ``grad_out`` in place."""
        value = 0.0
        for (weights, _), (weight_grad, _) in zip(self.layers(params), self.layers(grad_out),
                                                  strict=True):
            value += float(np.einsum("ij,ij->", weights, weights))
            weight_grad += self.alpha * weights
        return 0.5 * self.alpha * value

    def l1_penalty(self, params: np.ndarray) -> float:
        """No L1 term: 0.0 (interface of the linear models)."""
        return 0.0

    def prox(self, params: np.ndarray, step: float) -> None:
        """No proximal step: the penalty is smooth (interface of the linear models)."""

    # -- prediction ---------------------------------------------------------------------------

    def decision_function(self, params: np.ndarray, X) -> np.ndarray:
        """Float64 output scores: ``(n, K)`` for the classifier, ``(n,)`` for the regressor."""
        self._check_params("params", params)
        self._check_data(X)
        scores = self._forward(params, X)[-1]
        return scores[:, 0] if self.task == "regression" else scores

    def predict(self, params: np.ndarray, X) -> np.ndarray:
        """Class indices 0..K-1 (int64) for the classifier, values for the regressor."""
        scores = self.decision_function(params, X)
        if self.task == "regression":
            return scores
        return np.argmax(scores, axis=1).astype(np.int64)

    probabilistic = True
    class_scores = LinearModel.class_scores

    def predict_proba(self, params: np.ndarray, X) -> np.ndarray:
        """Softmax class probabilities, shape ``(n, K)`` (classifier only)."""
        if self.task != "classification":
            raise AttributeError("predict_proba is defined for the classifier only")
        scores = self.decision_function(params, X)
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores
