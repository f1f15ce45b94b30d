"""Least-squares linear regression (ridge / lasso / elastic net through ``alpha``, ``l1_ratio``)."""

from __future__ import annotations

from .base import LinearModel


class LinearRegression(LinearModel):
    """Linear regression with the squared loss, for real-valued ``y``.

    Per row: ``loss_i = 0.5 * (x_i . w + b - y_i)^2``, so ``dloss_i/dz_i = z_i - y_i``.
    With ``alpha > 0`` and ``l1_ratio = 0`` this is ridge regression (scikit-learn's
    ``Ridge(alpha=W * alpha)``, W the global weight sum: N without sample weights); with
    ``l1_ratio = 1`` it is scikit-learn's ``Lasso(alpha)``, weighted or not.
    """

    kind = "linear"

    def _loss_sum(self, scores, y, sample_weight):
        return self._loss_and_dz(scores, y, sample_weight)[0]

    def _loss_and_dz(self, scores, y, sample_weight):
        residual = scores - y
        if sample_weight is None:
            return 0.5 * float(residual @ residual), residual
        weighted = residual * sample_weight
        return 0.5 * float(weighted @ residual), weighted
