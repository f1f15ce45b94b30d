"""A trained model of any kind as plain arrays, and prediction with it (no MPI, no files).

Model files (:mod:`mpiml.files.model`) store exactly this; every fit returns one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import trees
from .kinds import kind_of, make_model
from .kmeans import nearest_center
from .scaling import apply_scaler


@dataclass
class SavedModel:
    """A trained model: kind, arrays and options, plus what prediction needs around it.

    ``arrays``: ``params`` for the parameter-vector models, ``centers`` for K-Means, the tree
    arrays (:mod:`mpiml.models.trees`) for boosted trees. ``classes`` are the original labels
    (classification); ``scaler`` = (mean, scale) means the features were transformed as
    (x - mean) / scale before the model saw them. ``train_rows`` and ``train_weight`` are the
    training rows' count and total weight (penalties in other libraries' units scale with them;
    None when unknown). ``attrs`` are a model file's attributes.
    """

    kind: str
    n_features: int
    arrays: dict[str, np.ndarray]
    options: dict = field(default_factory=dict)
    n_classes: int = 2
    classes: np.ndarray | None = None
    scaler: tuple[np.ndarray, np.ndarray] | None = None
    attrs: dict = field(default_factory=dict)
    train_rows: int | None = None
    train_weight: float | None = None

    @property
    def family(self) -> str:
        return kind_of(self.kind).family

    @property
    def model(self):
        """The parameter-vector model (linear models, MLPs); None for K-Means and trees."""
        if not kind_of(self.kind).gradient_trained:
            return None
        return make_model(self.kind, self.n_features, n_classes=self.n_classes, **self.options)

    @property
    def params(self) -> np.ndarray | None:
        return self.arrays.get("params")

    def transform(self, X):
        """Apply the saved feature scaling to ``X`` in place (no-op without one); returns X."""
        if self.scaler is not None:
            apply_scaler(X, *self.scaler)
        return X

    def predict_index(self, X) -> np.ndarray:
        """Class index, cluster index or value per row of already-transformed ``X``."""
        if self.family == "kmeans":
            return nearest_center(X, self.arrays["centers"])
        if self.family == "hgbt":
            return trees.predict(self.arrays, X)
        return self.model.predict(self.arrays["params"], X)

    def predict(self, X) -> np.ndarray:
        """Predictions in the original label space (or values, or cluster indices)."""
        index = self.predict_index(X)
        return index if self.classes is None else np.asarray(self.classes)[index]

    def predict_proba(self, X) -> np.ndarray | None:
        """Class probabilities (n, K) of transformed ``X``, or None if the model has none."""
        if self.family == "hgbt":
            return None if self.kind == "hgbt_regressor" else trees.predict_proba(self.arrays, X)
        model = self.model
        if model is None or kind_of(self.kind).task == "regression" or not model.probabilistic:
            return None
        return model.predict_proba(self.arrays["params"], X)
