"""Models over one flat float64 parameter vector (pure numpy/scipy, no MPI): the generalised
linear models and the MLP. They share one interface (``loss_grad_sum``, ``penalty``, ``prox``,
``predict``, ``options``...), so the one trainer, the optimizers and the checkpoints serve all.

:func:`make_model` builds a model by its kind name, as the configuration spells it.
"""

from __future__ import annotations

from .base import LinearModel
from .linear import LinearRegression
from .logistic import LogisticRegression
from .mlp import MLP
from .softmax import SoftmaxRegression
from .svm import LinearSVM

MODEL_KINDS: dict[str, type] = {
    "linear": LinearRegression,
    "logistic": LogisticRegression,
    "softmax": SoftmaxRegression,
    "svm": LinearSVM,
    "mlp_classifier": MLP,
    "mlp_regressor": MLP,
}

__all__ = [
    "MODEL_KINDS",
    "LinearModel",
    "LinearRegression",
    "LinearSVM",
    "LogisticRegression",
    "MLP",
    "SoftmaxRegression",
    "make_model",
]


def make_model(kind: str, n_features: int, n_classes: int = 2, **params):
    """Build the model ``kind`` (a key of MODEL_KINDS) for ``n_features``.

    ``n_classes`` sizes the softmax model and the MLP classifier and must be 2 for the binary
    classifiers (logistic, svm); regression ignores it. ``params`` are the model's other
    constructor arguments (``fit_intercept``, ``alpha``, ``l1_ratio``, ``loss`` for svm;
    ``hidden``, ``activation``, ``alpha`` for the MLPs), as ``model.options()`` returns them.
    """
    model_class = MODEL_KINDS.get(kind)
    if model_class is None:
        raise ValueError(f"model kind must be one of {', '.join(MODEL_KINDS)}; got {kind!r}")
    if model_class is MLP:
        params = {key: value for key, value in params.items() if key != "task"}
        task = "classification" if kind == "mlp_classifier" else "regression"
        return MLP(n_features, n_classes=n_classes, task=task, **params)
    if model_class is SoftmaxRegression:
        return SoftmaxRegression(n_features, n_classes=n_classes, **params)
    if model_class in (LogisticRegression, LinearSVM) and n_classes != 2:
        raise ValueError(
            f"model kind {kind!r} is binary and needs n_classes=2; got n_classes={n_classes!r} "
            f"(use kind 'softmax' for more classes)"
        )
    return model_class(n_features, **params)
