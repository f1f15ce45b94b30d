"""What every fit loop returns, and the one place a :class:`~mpiml.models.saved.SavedModel` is
built from it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.run_rows import RunData
from ..data.weights import weight_total
from ..models.saved import SavedModel


@dataclass
class Fitted:
    """A loop's result, identical on every rank: the model's ``arrays`` and ``options``, the
    ``steps`` done (steps, L-BFGS or Lloyd iterations, boosting rounds), ``epochs`` done,
    final ``metrics`` (test set, plus the family's own: inertia, train_loss...), whether it
    stopped early, and the ``validation`` metrics (empty without a validation set)."""

    arrays: dict[str, np.ndarray]
    options: dict
    steps: int
    epochs: int = 0
    metrics: dict = field(default_factory=dict)
    stopped_early: bool = False
    validation: dict = field(default_factory=dict)


@dataclass
class FitResult:
    """A finished fit: the model as saved, the loop's counts and metrics, and ``comm``, the
    communicator the fit ended on (a shrunk one if ranks died under ``fault.mode: shrink``)."""

    saved: SavedModel
    steps: int
    epochs: int
    metrics: dict
    stopped_early: bool
    comm: object
    validation: dict = field(default_factory=dict)

    @property
    def params(self) -> np.ndarray | None:
        """The parameter vector of a linear model or MLP."""
        return self.saved.params


def result_of(kind: str, rows: RunData, fitted: Fitted, reducer) -> FitResult:
    """The :class:`FitResult` of ``fitted``, trained as ``kind`` on ``rows``; collective (the
    training weight total is summed on the exact grid: the same bits on any rank count)."""
    shard = rows.shard
    weight = (float(shard.n_total) if shard.w is None
              else weight_total(shard.w, shard.n_total, reducer))
    saved = SavedModel(kind, shard.n_features, fitted.arrays, fitted.options,
                       n_classes=rows.n_classes, classes=rows.classes, scaler=rows.scaler,
                       train_rows=shard.n_total, train_weight=weight)
    comm = reducer.comm
    return FitResult(saved, fitted.steps, fitted.epochs, fitted.metrics, fitted.stopped_early,
                     comm, fitted.validation)
