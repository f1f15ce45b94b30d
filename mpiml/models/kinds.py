"""The one table of model kinds: what each ``model.kind`` is, which loop trains it, which task
its labels are, and which ``model.*`` options build it.

Everything that needs to know the kinds -- the config's allowed values and checks, model files,
the fit dispatcher, the estimators, the tests -- reads this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from .linear import LinearRegression
from .logistic import LogisticRegression
from .mlp import MLP
from .softmax import SoftmaxRegression
from .svm import LinearSVM

#: The loops (:mod:`mpiml.fit`): gradient-trained parameter vectors, K-Means, boosted trees.
FAMILIES = ("linear", "mlp", "kmeans", "hgbt")
#: What the labels are: values, exactly two classes, two or more classes, or none.
TASKS = ("regression", "binary", "multiclass", "unsupervised")

_LINEAR_OPTIONS = ("fit_intercept", "alpha", "l1_ratio")
_MLP_OPTIONS = ("hidden", "activation", "alpha")


@dataclass(frozen=True)
class Kind:
    """One ``model.kind``: its ``family`` (the loop that trains it), the ``task`` of its labels,
    the ``model.*`` config ``options`` its model is built from, and ``builder``, the class of
    its parameter-vector model (None for K-Means and trees, which keep arrays)."""

    name: str
    family: str
    task: str
    options: tuple[str, ...] = ()
    builder: type | None = None

    @property
    def gradient_trained(self) -> bool:
        """Trained by the first-order loops or L-BFGS over one flat parameter vector."""
        return self.builder is not None


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("linear", "linear", "regression", _LINEAR_OPTIONS, LinearRegression),
    Kind("logistic", "linear", "binary", _LINEAR_OPTIONS, LogisticRegression),
    Kind("softmax", "linear", "multiclass", _LINEAR_OPTIONS, SoftmaxRegression),
    Kind("svm", "linear", "binary", _LINEAR_OPTIONS + ("loss",), LinearSVM),
    Kind("mlp_classifier", "mlp", "multiclass", _MLP_OPTIONS, MLP),
    Kind("mlp_regressor", "mlp", "regression", _MLP_OPTIONS, MLP),
    Kind("kmeans", "kmeans", "unsupervised"),
    Kind("hgbt_classifier", "hgbt", "multiclass"),
    Kind("hgbt_regressor", "hgbt", "regression"),
)}


def kind_of(name: str) -> Kind:
    """The :class:`Kind` called ``name``; a ValueError listing the kinds otherwise."""
    kind = KINDS.get(name)
    if kind is None:
        raise ValueError(f"model kind must be one of {', '.join(KINDS)}; got {name!r}")
    return kind


def make_model(kind: str, n_features: int, n_classes: int = 2, **options):
    """Build the parameter-vector model of ``kind`` for ``n_features``.

    ``n_classes`` sizes the softmax model and the MLP classifier and must be 2 for the binary
    classifiers (logistic, svm); regression ignores it. ``options`` are the model's other
    constructor arguments (the kind's ``options``), as ``model.options()`` returns them.
    """
    spec = kind_of(kind)
    if spec.builder is None:
        raise ValueError(f"model kind {kind!r} has no parameter-vector model")
    if spec.builder is MLP:
        task = "regression" if spec.task == "regression" else "classification"
        options = {key: value for key, value in options.items() if key != "task"}
        return MLP(n_features, n_classes=n_classes, task=task, **options)
    if spec.builder is SoftmaxRegression:
        return SoftmaxRegression(n_features, n_classes=n_classes, **options)
    if spec.task == "binary" and n_classes != 2:
        raise ValueError(f"model kind {kind!r} is binary and needs n_classes=2; got "
                         f"n_classes={n_classes!r} (use kind 'softmax' for more classes)")
    return spec.builder(n_features, **options)
