"""Binary logistic regression on labels in {0, 1}."""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from .base import LinearModel, binary_signs


class LogisticRegression(LinearModel):
    """Binary logistic regression; ``y`` holds 0 or 1 (the data layer maps the two classes).

    Per row, with ``s_i = 2 y_i - 1`` and ``z_i = x_i . w + b``::

        loss_i = log(1 + exp(-s_i z_i)),    dloss_i/dz_i = -s_i * expit(-s_i z_i)

    computed with ``logaddexp`` and ``expit`` so that no score magnitude overflows.
    ``C`` of scikit-learn's ``LogisticRegression`` is ``1 / (N * alpha)``.
    """

    kind = "logistic"

    def _loss_sum(self, scores, y):
        margins = binary_signs(y) * scores
        return float(np.logaddexp(0.0, -margins).sum())

    def _loss_and_dz(self, scores, y):
        signs = binary_signs(y)
        margins = signs * scores
        return float(np.logaddexp(0.0, -margins).sum()), -signs * expit(-margins)

    def predict_proba(self, params, X):
        """Probabilities of classes 0 and 1, shape ``(n, 2)``."""
        positive = expit(self.decision_function(params, X))
        return np.column_stack([1.0 - positive, positive])

    def predict(self, params, X):
        """Labels in {0, 1} (int64): 1 where the score is positive."""
        return (self.decision_function(params, X) > 0.0).astype(np.int64)
