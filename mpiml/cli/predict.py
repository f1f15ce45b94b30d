"""Distributed prediction: ``mpirun -n N python -m mpiml.predict MODEL.h5 DATA.h5 --out PRED.h5``.

Rank 0 reads the model and broadcasts it; every rank predicts its own rows of DATA.h5; rank 0
gathers the predictions in row order and writes ``prediction`` (original class labels, values or
cluster indices) and, for probabilistic classifiers, ``proba`` (n x K) to PRED.h5 (atomically).
Every model kind works: linear models, MLPs, K-Means, boosted trees.
"""

from __future__ import annotations

import argparse
import os

from . import add_version
from .train import BLAS_THREAD_VARIABLES


def predict(model_path, data_path, out_path, x: str = "X", comm=None) -> None:
    """Predict every row of ``data_path`` with the model at ``model_path``; rank 0 writes."""
    import h5py
    import numpy as np

    from ..comm import gather_rows, on_root, raise_together, world
    from ..data import load_shard
    from ..files.atomic import atomic_hdf5
    from ..files.model import load_model

    comm = world(comm)
    saved = on_root(lambda: load_model(model_path), comm)
    shard = load_shard(data_path, comm, x=x, y=None)
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

    def write():
        with atomic_hdf5(out_path) as out:
            if predicted.dtype.kind in "OUS":  # string class labels: HDF5 variable strings
                out.create_dataset("prediction", data=predicted.astype(str).astype(object),
                                   dtype=h5py.string_dtype())
            else:
                out.create_dataset("prediction", data=predicted)
            if proba is not None:
                out.create_dataset("proba", data=proba)
            out.attrs.update(model=str(model_path), data=str(data_path), x=x, kind=saved.kind)

    on_root(write, comm)


def main(argv=None) -> int:
    """Entry point of ``python -m mpiml.predict``."""
    parser = add_version(argparse.ArgumentParser(
        prog="mpiml-predict", description="Predict the rows of an HDF5 file with a model."))
    parser.add_argument("model", help="model file written by mpiml.train (model.h5)")
    parser.add_argument("data", help="HDF5 file with the rows to predict")
    parser.add_argument("--out", required=True, help="HDF5 file to write predictions to")
    parser.add_argument("--x", default="X", help="data set of features (default: X)")
    args = parser.parse_args(argv)
    for variable in BLAS_THREAD_VARIABLES:
        os.environ.setdefault(variable, "1")
    from ..comm.spmd import run_program

    return run_program(lambda: predict(args.model, args.data, args.out, x=args.x))
