"""Held-out metrics from sufficient statistics: one reduction evaluates every rank's test (or
validation) rows.

Identical on every rank; in reproducible mode the statistics are exact block sums, the same on
any number of ranks (so early stopping decides identically).
"""

from __future__ import annotations

import numpy as np

from ..data.run_rows import RunData
from ..models import metrics


def evaluate(rows: RunData, predict, class_scores, reducer, probabilistic: bool = True,
             part: str = "test") -> dict[str, float]:
    """Metrics on the ``part`` rows (test or validation) from ``predict(X)`` (values,
    regression) or ``class_scores(X)`` ((n, K) scores, classification); empty without such rows
    or labels. ``probabilistic=False`` (scores that only rank rows, e.g. the SVM's) leaves out
    the log-loss. Collective."""
    held = getattr(rows, part)
    if held is None or held.y is None:
        return {}

    def stats_of(lo, hi):
        X, y = held.X[lo:hi], held.y[lo:hi]
        if rows.task == "regression":
            return metrics.regression_stats(np.asarray(predict(X), dtype=np.float64), y)
        return metrics.classification_stats(class_scores(X), y)

    totals = reducer.sum_over_rows(stats_of, held.n_local, held.n_total)
    if rows.task == "regression":
        return metrics.regression_metrics(totals)
    result = metrics.classification_metrics(totals, rows.n_classes)
    if not probabilistic:
        result.pop("log_loss", None)
    return result
