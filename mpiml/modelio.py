"""Save and load a trained model as HDF5: parameters, model kind and shape, classes, config.

Only rank 0 writes (atomically: a temporary file in the same directory, fsync, then rename), so
a reader never sees a half-written model. No pickle: plain arrays and attributes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import __version__
from .models import make_model

FORMAT = "mpiml-model"
FORMAT_VERSION = 1


def model_options(model) -> dict:
    """Constructor options that rebuild ``model`` with :func:`mpiml.models.make_model`."""
    options = dict(fit_intercept=model.fit_intercept, alpha=model.alpha, l1_ratio=model.l1_ratio)
    if model.kind == "svm":
        options["loss"] = model.loss
    return options


@dataclass
class SavedModel:
    """A model read back from HDF5: the model object, its parameters, the original class labels
    (classification), the feature scaling applied before the model (or None), and the attrs."""

    model: object
    params: np.ndarray
    classes: np.ndarray | None
    scaler: tuple[np.ndarray, np.ndarray] | None
    attrs: dict


def save_model(path, model, params: np.ndarray, classes: np.ndarray | None = None,
               config_yaml: str = "", scaler: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Write the model to ``path`` atomically (call on one rank only) and return the path.

    ``scaler`` = (mean, scale): the features were transformed as (x - mean) / scale in training,
    and predictions must do the same.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w") as out:
            out.attrs.update(format=FORMAT, format_version=FORMAT_VERSION,
                             mpiml_version=__version__, kind=model.kind,
                             n_features=model.n_features,
                             n_classes=getattr(model, "n_classes", 2), config=config_yaml,
                             **{f"option_{k}": v for k, v in model_options(model).items()})
            out.create_dataset("params", data=params)
            if classes is not None:
                out.create_dataset("classes", data=np.asarray(classes))
            if scaler is not None:
                out.create_dataset("feature_mean", data=scaler[0])
                out.create_dataset("feature_scale", data=scaler[1])
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
            params = np.ascontiguousarray(src["params"][()], dtype=np.float64)
            classes = src["classes"][()] if "classes" in src else None
            scaler = None
            if "feature_mean" in src:
                scaler = (src["feature_mean"][()], src["feature_scale"][()])
    except OSError as exc:
        raise ValueError(f"cannot read model file {path}: {exc}") from None
    options = {k[len("option_"):]: _plain(v) for k, v in attrs.items() if k.startswith("option_")}
    model = make_model(str(attrs["kind"]), int(attrs["n_features"]),
                       n_classes=int(attrs["n_classes"]), **options)
    if params.shape != (model.n_params,):
        raise ValueError(f"model file {path}: params has shape {params.shape}, expected "
                         f"({model.n_params},) for a {attrs['kind']} model")
    return SavedModel(model, params, classes, scaler, attrs)


def _plain(value):
    """HDF5 attributes come back as numpy scalars; models want Python values."""
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value
