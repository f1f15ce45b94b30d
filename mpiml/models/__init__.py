"""The models: pure numpy/scipy arithmetic on the rows one rank holds; no MPI, no run state.

* parameter-vector models (one flat float64 vector each, so one step is one allreduce): the
  generalised linear models and the MLP, sharing one interface (``loss_grad_sum``, ``add_penalty``,
  ``prox``, ``predict``, ``options``...) that the gradient loops, optimizers and checkpoints
  serve;
* K-Means statistics (:mod:`.kmeans`), boosted trees as arrays (:mod:`.trees`,
  :mod:`.tree_growth`), evaluation statistics (:mod:`.metrics`);
* the table of model kinds (:mod:`.kinds`) and :func:`make_model`.
"""

from __future__ import annotations

from .base import LinearModel
from .kinds import KINDS, Kind, kind_of, make_model
from .linear import LinearRegression
from .logistic import LogisticRegression
from .mlp import MLP
from .softmax import SoftmaxRegression
from .svm import LinearSVM

__all__ = [
    "KINDS",
    "MLP",
    "Kind",
    "LinearModel",
    "LinearRegression",
    "LinearSVM",
    "LogisticRegression",
    "SoftmaxRegression",
    "kind_of",
    "make_model",
]
