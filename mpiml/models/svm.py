"""Linear support vector machine (hinge or squared hinge) on labels in {0, 1}."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from .base import LinearModel, binary_signs, weighted_sum

LOSSES = ("hinge", "squared_hinge")


class LinearSVM(LinearModel):
    """Linear SVM in the primal; ``y`` holds 0 or 1 (the data layer maps the two classes).

    Per row, with ``s_i = 2 y_i - 1``, ``z_i = x_i . w + b`` and margin gap
    ``g_i = max(0, 1 - s_i z_i)``::

        hinge:          loss_i = g_i,     dloss_i/dz_i = -s_i * [g_i > 0]  (a subgradient)
        squared_hinge:  loss_i = g_i^2,   dloss_i/dz_i = -2 s_i g_i        (differentiable)

    scikit-learn's ``LinearSVC(C)`` minimises ``C * sum_i loss_i + 0.5 ||w||^2``, that is
    ``alpha = 1 / (W * C)`` (W: the global weight sum, N without sample weights); it also
    penalises its intercept, which this model never does.
    """

    kind = "svm"
    _repr_fields = LinearModel._repr_fields + ("loss",)

    def __init__(self, n_features, fit_intercept=True, alpha=0.0, l1_ratio=0.0, loss="hinge"):
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}; got {loss!r}")
        super().__init__(n_features, fit_intercept, alpha, l1_ratio)
        self.loss = loss

    def _loss_sum(self, scores, y, sample_weight):
        return self._loss_and_dz(scores, y, sample_weight)[0]

    def _loss_and_dz(self, scores, y, sample_weight):
        signs = binary_signs(y)
        gaps = np.maximum(1.0 - signs * scores, 0.0)
        if self.loss == "hinge":
            loss, dz = weighted_sum(gaps, sample_weight), np.where(gaps > 0.0, -signs, 0.0)
        else:
            weighted = gaps if sample_weight is None else gaps * sample_weight
            loss, dz = float(weighted @ gaps), -2.0 * signs * gaps
        if sample_weight is not None:
            dz *= sample_weight
        return loss, dz

    def predict(self, params, X):
        """Labels in {0, 1} (int64): 1 where the score is positive."""
        return (self.decision_function(params, X) > 0.0).astype(np.int64)

    #: The SVM has no probabilities: its class scores only rank rows.
    probabilistic = False

    def class_scores(self, params, X):
        """``[1 - sigmoid(z), sigmoid(z)]`` of the margin z: ranks rows exactly as the margin
        does (so ROC-AUC is right) and predicts the same class; not a probability."""
        positive = expit(self.decision_function(params, X))
        return np.column_stack([1.0 - positive, positive])
