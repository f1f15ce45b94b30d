"""Estimator files: an mpiml model file (:mod:`mpiml.files.model`) plus three attributes that
rebuild the estimator -- its class name, its hyperparameters and its fitted state, as JSON.

The file stays an ordinary model file: ``python -m mpiml.predict`` and
:func:`mpiml.files.model.load_model` read it. No pickle in the file: arrays and JSON text only.
Rank 0 writes (one atomic :func:`mpiml.files.model.save_model` with the attributes) and rank 0
reads; every failure, a malformed file included, is raised on every rank.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import h5py
import numpy as np

from ..comm import agree_on_error, on_root, world
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


def _json_object(path, attrs: dict, name: str) -> dict:
    """The JSON object in file attribute ``name``, or a ValueError naming the file."""
    if name not in attrs:
        raise ValueError(f"{path}: estimator file without its attribute {name!r}")
    try:
        value = json.loads(attrs[name])
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: attribute {name!r} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{path}: attribute {name!r} must hold a JSON object; got "
                         f"{type(value).__name__}")
    return value


def read(path, estimators: dict, comm=None):
    """The estimator saved at ``path``, an instance of one of ``estimators`` (class name ->
    class), working on ``comm``. Collective: rank 0 reads the file and sends what it read as one
    byte string (so that a part it cannot send fails on rank 0, not inside a broadcast the other
    ranks wait in), every rank rebuilds the estimator, and a failure anywhere is raised on every
    rank."""
    group = world(comm)

    def read_file() -> bytes:
        saved = load_model(path)
        if ESTIMATOR not in saved.attrs:
            raise ValueError(f"{path} is a model file but was not written by an mpiml "
                             "estimator (read it with mpiml.files.model.load_model)")
        name = str(saved.attrs[ESTIMATOR])
        if name not in estimators:
            raise ValueError(f"{path} holds an estimator {name!r} that this mpiml does not know "
                             f"(known: {', '.join(estimators)})")
        params, state = (_json_object(path, saved.attrs, key) for key in (PARAMS, FITTED))
        if saved.attrs.get(TEXT_CLASSES):
            saved.classes = np.array([label.decode() for label in saved.classes])
        try:
            return pickle.dumps((saved, name, params, state))
        except (TypeError, ValueError, RecursionError, pickle.PicklingError) as exc:
            raise ValueError(f"{path}: rank 0 read the file but cannot send it to the other "
                             f"ranks: {type(exc).__name__}: {exc}") from exc

    payload = on_root(read_file, group)
    estimator, error = None, None
    try:
        saved, name, params, state = pickle.loads(payload)
        params = {key: tuple(value) if isinstance(value, list) else value
                  for key, value in params.items()}
        estimator = estimators[name](**params, comm=comm)
        estimator._set_fitted(saved, state)
        estimator._config_yaml = str(saved.attrs.get("config", ""))
    except Exception as exc:  # noqa: BLE001 -- every rank must learn of any failure
        error = ValueError(f"{path} holds an estimator that cannot be rebuilt: "
                           f"{type(exc).__name__}: {exc}")
    agree_on_error(error, group)
    return estimator
