"""Model files: a :class:`mpiml.models.saved.SavedModel` of any kind as HDF5, and back.

A model file holds the model's arrays (group ``model``), its kind and constructor options, the
feature count, the original class labels, the feature scaler applied before the model, and the
resolved config. Only one rank writes, atomically (:func:`mpiml.files.atomic.atomic_hdf5`), so a
reader never sees a half-written model. No pickle: plain arrays and attributes.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .. import __version__
from ..models.saved import SavedModel
from .atomic import atomic_hdf5

FORMAT = "mpiml-model"
FORMAT_VERSION = 2

__all__ = ["FORMAT", "FORMAT_VERSION", "load_model", "save_model"]


def save_model(path, saved: SavedModel, config_yaml: str = "", attrs: dict | None = None
               ) -> Path:
    """Write ``saved`` to ``path`` atomically (call on one rank only) and return the path.
    ``attrs``: more file attributes (the estimators store how to rebuild themselves)."""
    path = Path(path)
    with atomic_hdf5(path) as out:
        out.attrs.update(format=FORMAT, format_version=FORMAT_VERSION,
                         mpiml_version=__version__, kind=saved.kind,
                         n_features=saved.n_features, n_classes=saved.n_classes,
                         options=json.dumps(saved.options), config=config_yaml)
        for name in ("train_rows", "train_weight"):
            if getattr(saved, name) is not None:
                out.attrs[name] = getattr(saved, name)
        out.attrs.update(attrs or {})
        group = out.create_group("model")
        for name, array in saved.arrays.items():
            group.create_dataset(name, data=np.asarray(array))
        if saved.classes is not None:
            out.create_dataset("classes", data=np.asarray(saved.classes))
        if saved.scaler is not None:
            out.create_dataset("feature_mean", data=saved.scaler[0])
            out.create_dataset("feature_scale", data=saved.scaler[1])
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
                       attrs=attrs, train_rows=_number(attrs, "train_rows", int),
                       train_weight=_number(attrs, "train_weight", float))
    model = saved.model
    if model is not None and saved.params.shape != (model.n_params,):
        raise ValueError(f"model file {path}: params has shape {saved.params.shape}, expected "
                         f"({model.n_params},) for a {saved.kind} model")
    return saved


def _number(attrs: dict, name: str, kind):
    """Attribute ``name`` as ``kind``, or None when the file has none (older files)."""
    return None if name not in attrs else kind(attrs[name])
