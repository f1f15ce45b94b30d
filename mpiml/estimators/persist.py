"""Estimator files: an mpiml model file (:mod:`mpiml.files.model`) plus three attributes that
rebuild the estimator -- its class name, its hyperparameters and its fitted state, as JSON.

The file stays an ordinary model file: ``python -m mpiml.predict`` and
:func:`mpiml.files.model.load_model` read it. No pickle: arrays and JSON text only. Rank 0
writes (one atomic :func:`mpiml.files.model.save_model` with the attributes) and rank 0 reads;
every failure is raised on every rank.
"""

from __future__ import annotations

import dataclasses
import json
import os

import h5py
import numpy as np

from ..comm import on_root
from ..files.model import load_model, save_model
from ..models.saved import SavedModel

ESTIMATOR = "estimator"
PARAMS = "estimator_params"
FITTED = "estimator_fitted"
TEXT_CLASSES = "estimator_text_classes"


def _storable_classes(saved: SavedModel) -> tuple[SavedModel, bool]:
    """Text class labels as UTF-8 HDF5 strings (HDF5 has no numpy unicode type)."""
    classes = saved.classes
    if classes is None or classes.dtype.kind not in "UO":
        return saved, False
    if not all(isinstance(label, str) for label in classes):
        raise ValueError(f"cannot save class labels {list(classes)}: numbers or text only")
    text = np.array([label.encode() for label in classes], dtype=h5py.string_dtype())
    return dataclasses.replace(saved, classes=text), True


def _json_value(value):
    """JSON for the values json cannot write itself: numpy scalars and paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot save a hyperparameter of type {type(value).__name__}: {value!r}")


def _hyperparameters(estimator) -> str:
    """Every hyperparameter but ``comm`` (a loaded estimator gets the communicator it is loaded
    with), as JSON."""
    params = {name: value for name, value in estimator.get_params(deep=False).items()
              if name != "comm"}
    return json.dumps(params, default=_json_value)


def write(path, estimator, comm) -> None:
    """Rank 0 writes ``estimator`` to ``path``; collective (returns once the file is complete)."""

    def write_file():
        saved, text_classes = _storable_classes(estimator.model_)
        save_model(path, saved, config_yaml=estimator._config_yaml,
                   attrs={ESTIMATOR: type(estimator).__name__,
                          PARAMS: _hyperparameters(estimator),
                          FITTED: json.dumps(estimator._fitted_state()),
                          TEXT_CLASSES: text_classes})

    on_root(write_file, comm)


def read(path, comm) -> tuple[SavedModel, str, dict, dict]:
    """(model, estimator class name, hyperparameters, fitted state) of an estimator file:
    rank 0 reads it, every rank receives it. Collective."""

    def read_file():
        saved = load_model(path)
        if ESTIMATOR not in saved.attrs:
            raise ValueError(f"{path} is a model file but was not written by an mpiml "
                             "estimator (read it with mpiml.files.model.load_model)")
        if saved.attrs[TEXT_CLASSES]:
            saved.classes = np.array([label.decode() for label in saved.classes])
        params = {name: tuple(value) if isinstance(value, list) else value
                  for name, value in json.loads(saved.attrs[PARAMS]).items()}
        return saved, str(saved.attrs[ESTIMATOR]), params, json.loads(saved.attrs[FITTED])

    return on_root(read_file, comm)
