"""Generalised linear models over one flat float64 parameter vector (pure numpy/scipy, no MPI).

:func:`make_model` builds a model by its kind name, as the configuration spells it.
"""

from __future__ import annotations

from .base import LinearModel
from .linear import LinearRegression
from .logistic import LogisticRegression
from .softmax import SoftmaxRegression
from .svm import LinearSVM

MODEL_KINDS: dict[str, type[LinearModel]] = {
    "linear": LinearRegression,
    "logistic": LogisticRegression,
    "softmax": SoftmaxRegression,
    "svm": LinearSVM,
}

__all__ = [
    "MODEL_KINDS",
    "LinearModel",
    "LinearRegression",
    "LinearSVM",
    "LogisticRegression",
    "SoftmaxRegression",
    "make_model",
]


def make_model(kind: str, n_features: int, n_classes: int = 2, **params) -> LinearModel:
    """Build the model ``kind`` ("linear", "logistic", "softmax" or "svm") for ``n_features``.

    ``n_classes`` sizes the softmax model and must be 2 for the binary classifiers (logistic,
    svm); regression ignores it. ``params`` are the model's other constructor arguments
    (``fit_intercept``, ``alpha``, ``l1_ratio``, and ``loss`` for svm).
    """
    model_class = MODEL_KINDS.get(kind)
    if model_class is None:
        raise ValueError(f"model kind must be one of {', '.join(MODEL_KINDS)}; got {kind!r}")
    if model_class is SoftmaxRegression:
        return SoftmaxRegression(n_features, n_classes=n_classes, **params)
    if model_class in (LogisticRegression, LinearSVM) and n_classes != 2:
        raise ValueError(
            f"model kind {kind!r} is binary and needs n_classes=2; got n_classes={n_classes!r} "
            f"(use kind 'softmax' for more classes)"
        )
    return model_class(n_features, **params)
