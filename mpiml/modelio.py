"""Save and load trained models as HDF5, and predict with them, whatever their kind.

A model file holds the model's arrays (``params`` for the linear models and MLPs, ``centers`` for
K-Means, the tree arrays for boosted trees), its kind and constructor options, the feature count,
the original class labels, the feature scaler applied before the model, and the resolved config.
Only rank 0 writes, atomically (temporary file in the same directory, fsync, rename), so a reader
never sees a half-written model. No pickle: plain arrays and attributes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from . import __version__

FORMAT = "mpiml-model"
FORMAT_VERSION = 2
KMEANS = "kmeans"
HGBT_KINDS = ("hgbt_classifier", "hgbt_regressor")


@dataclass
class SavedModel:
    """A trained model: kind, arrays and options, plus what prediction needs around it.

    ``classes`` are the original labels (classification); ``scaler`` = (mean, scale) means the
    features were transformed as (x - mean) / scale before the model saw them.
    """

    kind: str
    n_features: int
    arrays: dict[str, np.ndarray]
    options: dict = field(default_factory=dict)
    n_classes: int = 2
    classes: np.ndarray | None = None
    scaler: tuple[np.ndarray, np.ndarray] | None = None
    attrs: dict = field(default_factory=dict)

    @property
    def model(self):
        """The parameter-vector model (linear models, MLPs); None for K-Means and trees."""
        from .models import MODEL_KINDS, make_model

        if self.kind not in MODEL_KINDS:
            return None
        return make_model(self.kind, self.n_features, n_classes=self.n_classes, **self.options)

    @property
    def params(self) -> np.ndarray | None:
        return self.arrays.get("params")

    def transform(self, X):
        """Apply the saved feature scaling to ``X`` in place (no-op without one); returns X."""
        if self.scaler is not None:
            from .scaling import apply_scaler

            apply_scaler(X, *self.scaler)
        return X

    def predict_index(self, X) -> np.ndarray:
        """Class index, cluster index or value per row of already-transformed ``X``."""
        if self.kind == KMEANS:
            from .kmeans import nearest_center

            return nearest_center(X, self.arrays["centers"])
        if self.kind in HGBT_KINDS:
            from . import hgbt

            return hgbt.predict(self.arrays, X)
        return self.model.predict(self.arrays["params"], X)

    def predict(self, X) -> np.ndarray:
        """Predictions in the original label space (or values, or cluster indices)."""
        index = self.predict_index(X)
        return index if self.classes is None else np.asarray(self.classes)[index]

    def predict_proba(self, X) -> np.ndarray | None:
        """Class probabilities (n, K) of transformed ``X``, or None if the model has none."""
        if self.kind in HGBT_KINDS:
            from . import hgbt

            return None if self.kind == "hgbt_regressor" else hgbt.predict_proba(self.arrays, X)
        model = self.model
        if model is None or not hasattr(model, "predict_proba"):
            return None
        return model.predict_proba(self.arrays["params"], X)


def save_model(path, saved: SavedModel, config_yaml: str = "") -> Path:
    """Write ``saved`` to ``path`` atomically (call on one rank only) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as out:
            out.attrs.update(format=FORMAT, format_version=FORMAT_VERSION,
                             mpiml_version=__version__, kind=saved.kind,
                             n_features=saved.n_features, n_classes=saved.n_classes,
                             options=json.dumps(saved.options), config=config_yaml)
            group = out.create_group("model")
            for name, array in saved.arrays.items():
                group.create_dataset(name, data=np.asarray(array))
            if saved.classes is not None:
                out.create_dataset("classes", data=np.asarray(saved.classes))
            if saved.scaler is not None:
                out.create_dataset("feature_mean", data=saved.scaler[0])
                out.create_dataset("feature_scale", data=saved.scaler[1])
            out.flush()
            os.fsync(out.id.get_vfd_handle())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_model(path) -> SavedModel:
    """Read a file written by :func:`save_model`; clear errors for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        with h5py.File(path, "r") as src:
            attrs = dict(src.attrs)
            if attrs.get("format") != FORMAT:
                raise ValueError(f"{path} is not an mpiml model file "
                                 f"(no format={FORMAT} attribute)")
            if int(attrs.get("format_version", 0)) != FORMAT_VERSION:
                raise ValueError(f"model file {path} has format version "
                                 f"{attrs.get('format_version')}; this mpiml reads "
                                 f"{FORMAT_VERSION}")
            arrays = {name: dataset[()] for name, dataset in src["model"].items()}
            classes = src["classes"][()] if "classes" in src else None
            scaler = None
            if "feature_mean" in src:
                scaler = (src["feature_mean"][()], src["feature_scale"][()])
    except OSError as exc:
        raise ValueError(f"cannot read model file {path}: {exc}") from None
    saved = SavedModel(kind=str(attrs["kind"]), n_features=int(attrs["n_features"]),
                       arrays=arrays, options=json.loads(attrs["options"]),
                       n_classes=int(attrs["n_classes"]), classes=classes, scaler=scaler,
                       attrs=attrs)
    model = saved.model
    if model is not None and saved.params.shape != (model.n_params,):
        raise ValueError(f"model file {path}: params has shape {saved.params.shape}, expected "
                         f"({model.n_params},) for a {saved.kind} model")
    return saved
