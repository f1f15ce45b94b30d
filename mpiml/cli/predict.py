"""Distributed prediction: ``mpirun -n N python -m mpiml.predict MODEL.h5 DATA.h5 --out PRED``.

Rank 0 reads the model and broadcasts it; every rank predicts its own rows of DATA.h5; rank 0
gathers the predictions in row order and writes them (atomically): to HDF5 ``prediction``
(original class labels, values or cluster indices) and, for probabilistic classifiers, ``proba``
(n x K); or, when PRED ends in ``.csv``, the same as CSV with one header line. Every model kind
works: linear models, MLPs, K-Means, boosted trees.

With labels (``--y``, or the data set paired with ``--x``: ``y`` for ``X``, ``y_test`` for
``X_test``) rank 0 also prints metrics over every rank's rows, computed from per-rank sufficient
statistics in one reduction (:func:`mpiml.fit.evaluate.evaluate`); K-Means needs no labels for
its inertia. A label the model does not know stops the job when ``--y`` names the labels; labels
found by name only are then left out, and rank 0 says why there are no metrics.
"""

from __future__ import annotations

import argparse
import os

from . import add_version
from .train import BLAS_THREAD_VARIABLES


def paired_labels(path, x: str) -> str | None:
    """The labels that go with the features ``x`` by mpiml's naming (``X`` -> ``y``,
    ``X_test`` -> ``y_test``) when the file holds them; None otherwise (also when the file
    cannot be read: reading the features reports that)."""
    import h5py

    if not x.startswith("X"):
        return None
    name = "y" + x[1:]
    try:
        with h5py.File(path, "r") as handle:
            return name if isinstance(handle.get(name), h5py.Dataset) else None
    except OSError:
        return None


def class_indices(labels, saved, where: str, start: int, comm):
    """``labels`` as indices into the model's classes; a label the model does not know raises
    a DataError on every rank, naming its global row."""
    import numpy as np

    from ..comm import raise_together
    from ..data import DataError

    classes = np.asarray(saved.classes)
    index, unknown = None, np.arange(len(labels))
    if (classes.dtype.kind in "OUS") == (labels.dtype.kind in "OUS"):  # else nothing matches
        index = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
        unknown = np.flatnonzero(classes[index] != labels)
    error = None
    if unknown.size:
        row = unknown[0]
        shown = ", ".join(str(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
        error = DataError(f"{where} holds the label {labels[row]} at global row {start + row}, "
                          f"which is not one of the model's classes ({shown}); pass --y with "
                          "the right labels, or --no-metrics")
    raise_together(error, comm)
    return index


def prediction_metrics(saved, shard, reducer, where: str) -> dict[str, float]:
    """Metrics of ``saved`` on every rank's ``shard`` (features already transformed, labels as
    stored): accuracy, log-loss and the rest for classifiers, RMSE, MAE and R^2 for regression
    (through :func:`mpiml.fit.evaluate.evaluate`); inertia for K-Means. Collective; raises
    :func:`class_indices`' error for labels the model does not know."""
    import numpy as np

    from ..data.run_rows import RunData
    from ..fit.evaluate import evaluate
    from ..models.kmeans import assign

    if saved.family == "kmeans":
        centers = saved.arrays["centers"]
        inertia = reducer.sum_over_rows(
            lambda lo, hi: np.array([assign(shard.X[lo:hi], centers)[1].sum()]),
            shard.n_local, shard.n_total)
        return {"inertia": float(inertia[0])}
    if shard.y is None:
        return {}
    model = saved.model
    if saved.classes is None:
        task = "regression"
        shard.y = shard.y.astype(np.float64)
    else:
        task = "binary" if len(saved.classes) == 2 else "multiclass"
        shard.y = class_indices(shard.y, saved, where, shard.start, reducer.comm)
    rows = RunData(task, shard, shard, saved.classes, None)

    def class_scores(X):
        return saved.predict_proba(X) if model is None else model.class_scores(saved.params, X)

    return evaluate(rows, saved.predict_index, class_scores, reducer,
                    probabilistic=model is None or model.probabilistic)


def csv_text(predicted, proba, classes) -> str:
    """Predictions as CSV: a header, then per row the prediction and, when there are
    probabilities, one column per class (``proba_<label>``); floats in full precision."""
    import csv
    import io

    header = ["prediction"]
    if proba is not None:
        header += [f"proba_{label}" for label in
                   (classes if classes is not None else range(proba.shape[1]))]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    values = predicted.astype(str) if predicted.dtype.kind in "OUS" else predicted
    if proba is None:
        writer.writerows([value] for value in values.tolist())
    else:
        writer.writerows([value, *row] for value, row in zip(values.tolist(), proba.tolist(),
                                                              strict=True))
    return text.getvalue()


def predict(model_path, data_path, out_path, x: str = "X", y: str | None = None,
            metrics: bool = True, comm=None) -> dict[str, float]:
    """Predict every row of ``data_path`` with the model at ``model_path``; rank 0 writes
    ``out_path`` (CSV when it ends in .csv, else HDF5). With ``metrics``, returns (the same on
    every rank) the metrics over the labels ``y``, or K-Means' inertia; an empty dict without
    labels. Labels ``y`` the model does not know are an error; when ``y`` is not given, the
    labels :func:`paired_labels` finds are used if the model knows them (else rank 0 says why
    there are no metrics)."""
    from pathlib import Path

    import h5py
    import numpy as np

    from ..comm import Reducer, gather_rows, on_root, raise_together, world
    from ..data import DataError, load_shard
    from ..files.atomic import atomic_hdf5, atomic_text
    from ..files.model import load_model

    comm = world(comm)
    saved = on_root(lambda: load_model(model_path), comm)
    labelled, paired = metrics and saved.family != "kmeans", y is None
    if labelled and paired:
        y = on_root(lambda: paired_labels(data_path, x), comm)
    shard = load_shard(data_path, comm, x=x, y=y if labelled else None)
    mismatch = None
    if shard.n_features != saved.n_features:
        mismatch = ValueError(f"{data_path}:{x} has {shard.n_features} features; the model "
                              f"{model_path} expects {saved.n_features}")
    raise_together(mismatch, comm)
    X = saved.transform(shard.X)
    predicted = gather_rows(np.ascontiguousarray(saved.predict(X)), comm)
    proba = saved.predict_proba(X)
    if proba is not None:
        proba = gather_rows(proba, comm)
    found, unscored = {}, None
    if metrics:
        try:
            found = prediction_metrics(saved, shard, Reducer(comm),
                                       f"{data_path}: data set '{y}'")
        except DataError as exc:  # raised on every rank alike
            if not paired:
                raise
            unscored = exc  # labels found by name only: predict, and say why there are no metrics

    def write_hdf5():
        with atomic_hdf5(out_path) as out:
            if predicted.dtype.kind in "OUS":  # string class labels: HDF5 variable strings
                out.create_dataset("prediction", data=predicted.astype(str).astype(object),
                                   dtype=h5py.string_dtype())
            else:
                out.create_dataset("prediction", data=predicted)
            if proba is not None:
                out.create_dataset("proba", data=proba)
            out.attrs.update(model=str(model_path), data=str(data_path), x=x, kind=saved.kind)

    if Path(out_path).suffix.lower() == ".csv":
        on_root(lambda: atomic_text(out_path, csv_text(predicted, proba, saved.classes)), comm)
    else:
        on_root(write_hdf5, comm)
    if comm.Get_rank() == 0 and unscored is not None:
        print(f"mpiml: no metrics: {unscored}", flush=True)
    if comm.Get_rank() == 0 and found:
        against = "" if saved.family == "kmeans" else f" against {y}"
        shown = "  ".join(f"{key}={value:.6g}" for key, value in found.items())
        print(f"mpiml: {shard.n_total} rows of {data_path}:{x}{against}: {shown}", flush=True)
    return found


def main(argv=None) -> int:
    """Entry point of ``python -m mpiml.predict``."""
    parser = add_version(argparse.ArgumentParser(
        prog="mpiml-predict", description="Predict the rows of an HDF5 file with a model; "
                                          "with labels, print metrics."))
    parser.add_argument("model", help="model file written by mpiml.train (model.h5)")
    parser.add_argument("data", help="HDF5 file with the rows to predict")
    parser.add_argument("--out", required=True,
                        help="file to write predictions to: CSV if its name ends in .csv, "
                             "else HDF5")
    parser.add_argument("--x", default="X", help="data set of features (default: X)")
    parser.add_argument("--y", help="data set of labels to score the predictions against "
                                    "(default: the one paired with --x, y for X and y_test for "
                                    "X_test, when the file has it)")
    parser.add_argument("--no-metrics", action="store_true",
                        help="read no labels and print no metrics")
    args = parser.parse_args(argv)
    for variable in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    from ..comm.spmd import run_program

    def run() -> None:
        predict(args.model, args.data, args.out, x=args.x, y=args.y,
                metrics=not args.no_metrics)

    return run_program(run)
