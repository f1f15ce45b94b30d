"""Estimator files: an mpiml model file (:mod:`mpiml.files.model`) plus three attributes that
rebuild the estimator -- its class name, its hyperparameters and its fitted state, as JSON.

The file stays an ordinary model file: ``python -m mpiml.predict`` and
:func:`mpiml.files.model.load_model` read it. No pickle in the file: arrays and JSON text only.
Rank 0 writes (one atomic :func:`mpiml.files.model.save_model` with the attributes) and rank 0
reads; every failure, a malformed file included, is raised on every rank.

A model file written by ``python -m mpiml.train`` has none of the three attributes: its kind
chooses the estimator, the model's own options and the run's config (kept in the file) give the
hyperparameters (:func:`run_estimator`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle

import h5py
import numpy as np
import yaml

from ..comm import agree_on_error, on_root, world
from ..config import Config, from_dict
from ..config.parse import read_yaml
from ..files.model import load_model, save_model
from ..fit.lbfgs import DEFAULT_LBFGS_ITERATIONS
from ..models.saved import SavedModel

ESTIMATOR = "estimator"
PARAMS = "estimator_params"
FITTED = "estimator_fitted"
TEXT_CLASSES = "estimator_text_classes"
MAPPING = "mapping"  # a dict hyperparameter as [key, value] pairs


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
    """JSON for the values json cannot write itself: numpy scalars and arrays, paths."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):  # e.g. K-Means' initial centres
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot save a hyperparameter of type {type(value).__name__}: {value!r}")


def _hyperparameters(estimator) -> str:
    """Every hyperparameter but ``comm`` (a loaded estimator gets the communicator it is loaded
    with), as JSON."""
    params = {name: {MAPPING: list(value.items())} if isinstance(value, dict) else value
              for name, value in estimator.get_params(deep=False).items() if name != "comm"}
    return json.dumps(params, default=_json_value)


def _hyperparameter(value):
    """A hyperparameter read back from JSON: lists as tuples, mappings (e.g. ``class_weight``)
    with their keys' own types (JSON would turn an integer label into text)."""
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict) and set(value) == {MAPPING}:
        return {key: weight for key, weight in value[MAPPING]}
    return value


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


#: The fitted state a run's model file does not record (the estimators leave these unset).
NOT_RECORDED = {"n_iter_": None, "inertia_": None}

#: The estimator of each model kind; a ``linear`` model's depends on its penalty
#: (LinearRegression, Ridge, Lasso or ElasticNet).
KIND_ESTIMATORS = {
    "logistic": "LogisticRegression", "softmax": "SoftmaxRegression", "svm": "LinearSVC",
    "mlp_classifier": "MLPClassifier", "mlp_regressor": "MLPRegressor", "kmeans": "KMeans",
    "hgbt_classifier": "HistGradientBoostingClassifier",
    "hgbt_regressor": "HistGradientBoostingRegressor",
}


def _run_config(path, saved: SavedModel) -> Config:
    """The config of the run that wrote ``path`` (kept in the file), or a ValueError naming it."""
    text = str(saved.attrs.get("config", ""))
    if not text.strip():
        raise ValueError(f"{path} was not written by an mpiml estimator and holds no run config "
                         "(attribute 'config'), so nothing says which estimator it is: read it "
                         "with mpiml.files.model.load_model")
    try:
        return from_dict(read_yaml(text))
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: the run config kept in the model file cannot be read: "
                         f"{exc}") from None


def _solver_hyperparameters(config: Config) -> dict:
    """What the linear estimators and the MLPs share, from the run's sections: ``max_iter`` and
    ``tol`` are L-BFGS's iterations and tolerance, or the epochs and the early-stopping
    threshold, as the estimators' ``fit`` reads them."""
    optimizer, train = config.optimizer, config.train
    lbfgs = optimizer.name == "lbfgs"
    return dict(
        solver=optimizer.name, learning_rate_init=optimizer.lr, batch_size=train.batch_size,
        max_iter=(train.max_steps or DEFAULT_LBFGS_ITERATIONS) if lbfgs else train.epochs,
        tol=optimizer.tol if lbfgs else train.min_delta, n_iter_no_change=train.patience,
        standardize=config.data.standardize, random_state=train.seed,
        comm_mode=config.comm.mode, allreduce_algorithm=config.comm.algorithm,
        reproducible=train.reproducible)


def _no_l1_estimator(path, kind: str, l1_ratio: float, names: str) -> ValueError:
    """The error for a model whose L1 penalty the estimators ``names`` cannot hold."""
    return ValueError(f"{path}: a {kind!r} model with an L1 penalty (model.l1_ratio {l1_ratio})"
                      f" has no mpiml estimator ({names} have no L1 penalty): predict with "
                      "python -m mpiml.predict or read it with mpiml.files.model.load_model")


def _linear_hyperparameters(path, saved: SavedModel, config: Config) -> tuple[str, dict]:
    """The linear estimator of a linear model and its hyperparameters. A penalty in
    scikit-learn's units (Ridge's ``alpha``, ``C``) is mpiml's ``model.alpha`` times the
    training weight W (the row count without sample weights), which the model file keeps (None
    for a file without it, unless the penalty is 0); Lasso's and ElasticNet's ``alpha`` is
    mpiml's own."""
    options, kind = saved.options, saved.kind
    alpha, l1_ratio = options["alpha"], options["l1_ratio"]
    weight = saved.train_weight
    shared = dict(_solver_hyperparameters(config), fit_intercept=options["fit_intercept"])
    if kind == "linear":
        if alpha == 0:
            return "LinearRegression", shared
        if l1_ratio == 0:
            return "Ridge", dict(shared, alpha=None if weight is None else alpha * weight)
        if l1_ratio == 1:
            return "Lasso", dict(shared, alpha=alpha)
        return "ElasticNet", dict(shared, alpha=alpha, l1_ratio=l1_ratio)
    C = np.inf if alpha == 0 else (None if weight is None else 1.0 / (alpha * weight))
    if kind == "svm":
        if l1_ratio > 0 and alpha > 0:
            raise _no_l1_estimator(path, kind, l1_ratio, "LinearSVC")
        return "LinearSVC", dict(shared, C=C, loss=options["loss"])
    return KIND_ESTIMATORS[kind], dict(shared, C=C, l1_ratio=l1_ratio)


def _mlp_hyperparameters(saved: SavedModel, config: Config) -> dict:
    """An MLP's hyperparameters: scikit-learn's ``alpha`` is ``model.alpha`` times a batch's
    weight, B W / N for batches of B of the N training rows of weight W (B = N for full
    batches); None for a file without N and W, unless the penalty is 0."""
    options, optimizer = saved.options, config.optimizer
    rows, weight, alpha = saved.train_rows, saved.train_weight, options["alpha"]
    batch = None if optimizer.name in ("lbfgs", "gd") else config.train.batch_size
    if alpha == 0:
        penalty = 0.0
    elif rows is None or weight is None:
        penalty = None
    else:
        penalty = alpha * (rows if batch is None else min(batch, rows)) * weight / rows
    return dict(_solver_hyperparameters(config), hidden_layer_sizes=tuple(options["hidden"]),
                activation=options["activation"], alpha=penalty,
                learning_rate=optimizer.schedule, momentum=optimizer.momentum)


def run_estimator(path, saved: SavedModel) -> tuple[str, dict]:
    """The estimator class name and hyperparameters of a model file written by
    ``python -m mpiml.train``: the kind chooses the class; the model's options and the run's
    config (kept in the file) give the hyperparameters. A ValueError naming the file when no
    estimator has the model's penalty or the config cannot be read."""
    config = _run_config(path, saved)
    family, seed = saved.family, config.train.seed
    if family == "linear":
        return _linear_hyperparameters(path, saved, config)
    if family == "mlp":
        return KIND_ESTIMATORS[saved.kind], _mlp_hyperparameters(saved, config)
    if family == "kmeans":
        kmeans = config.kmeans
        return "KMeans", dict(
            n_clusters=kmeans.n_clusters, init=kmeans.init, n_init=kmeans.n_init,
            max_iter=kmeans.max_iter, tol=kmeans.tol,
            batch_size=kmeans.batch_size, random_state=seed,
            allreduce_algorithm=config.comm.algorithm, reproducible=config.train.reproducible)
    hgbt = config.hgbt
    return KIND_ESTIMATORS[saved.kind], dict(
        learning_rate=hgbt.learning_rate, max_iter=hgbt.n_estimators,
        max_leaf_nodes=hgbt.max_leaf_nodes, max_depth=hgbt.max_depth,
        min_samples_leaf=hgbt.min_samples_leaf, l2_regularization=hgbt.l2,
        max_bins=hgbt.max_bins, random_state=seed, allreduce_algorithm=config.comm.algorithm)


def _estimator_file(path, saved: SavedModel, estimators: dict) -> tuple[str, dict, dict]:
    """Class name, hyperparameters and fitted state kept in an estimator file."""
    name = str(saved.attrs[ESTIMATOR])
    if name not in estimators:
        raise ValueError(f"{path} holds an estimator {name!r} that this mpiml does not know "
                         f"(known: {', '.join(estimators)})")
    params, state = (_json_object(path, saved.attrs, key) for key in (PARAMS, FITTED))
    if saved.attrs.get(TEXT_CLASSES):
        saved.classes = np.array([label.decode() for label in saved.classes])
    return name, params, state


def read(path, estimators: dict, comm=None):
    """The estimator saved at ``path`` by an estimator's ``save`` or by ``python -m
    mpiml.train``, an instance of one of ``estimators`` (class name -> class), working on
    ``comm``. Collective: rank 0 reads the file and sends what it read as one
    byte string (so that a part it cannot send fails on rank 0, not inside a broadcast the other
    ranks wait in), every rank rebuilds the estimator, and a failure anywhere is raised on every
    rank."""
    group = world(comm)

    def read_file() -> bytes:
        saved = load_model(path)
        if ESTIMATOR in saved.attrs:
            name, params, state = _estimator_file(path, saved, estimators)
        else:
            (name, params), state = run_estimator(path, saved), dict(NOT_RECORDED)
        try:
            return pickle.dumps((saved, name, params, state))
        except (TypeError, ValueError, RecursionError, pickle.PicklingError) as exc:
            raise ValueError(f"{path}: rank 0 read the file but cannot send it to the other "
                             f"ranks: {type(exc).__name__}: {exc}") from exc

    payload = on_root(read_file, group)
    estimator, error = None, None
    try:
        saved, name, params, state = pickle.loads(payload)
        params = {key: _hyperparameter(value) for key, value in params.items()}
        estimator = estimators[name](**params, comm=comm)
        estimator._set_fitted(saved, state)
        estimator._config_yaml = str(saved.attrs.get("config", ""))
    except Exception as exc:  # noqa: BLE001 -- every rank must learn of any failure
        error = ValueError(f"{path} holds an estimator that cannot be rebuilt: "
                           f"{type(exc).__name__}: {exc}")
    agree_on_error(error, group)
    return estimator
