"""Distributed prediction: ``mpirun -n N python -m mpiml.predict MODEL.h5 DATA.h5 --out PRED.h5``.

Rank 0 reads the model and broadcasts it; every rank predicts its own rows of DATA.h5; rank 0
gathers the predictions in row order and writes ``prediction`` (original class labels, values or
cluster indices) and, for probabilistic classifiers, ``proba`` (n x K) to PRED.h5. Every model
kind works: linear models, MLPs, K-Means, boosted trees.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from . import collectives  # noqa: E402
from .spmd import run_spmd  # noqa: E402


def predict(model_path, data_path, out_path, x: str = "X", comm=None) -> None:
    """Predict every row of ``data_path`` with the model at ``model_path``; rank 0 writes."""
    import h5py
    import numpy as np

    from . import data
    from .modelio import load_model

    comm = collectives.world(comm)
    saved, error = None, None
    if comm.Get_rank() == 0:
        try:
            saved = load_model(model_path)
        except (OSError, ValueError, KeyError) as exc:
            error = exc
    collectives.raise_together(error, comm)
    saved = collectives.broadcast_object(saved, comm)
    shard = data.load_shard(data_path, comm, x=x, y=None)
    mismatch = None
    if shard.n_features != saved.n_features:
        mismatch = ValueError(f"{data_path}:{x} has {shard.n_features} features; the model "
                              f"{model_path} expects {saved.n_features}")
    collectives.raise_together(mismatch, comm)
    X = saved.transform(shard.X)
    predicted = collectives.gather_rows(np.ascontiguousarray(saved.predict(X)), comm)
    proba = saved.predict_proba(X)
    if proba is not None:
        proba = collectives.gather_rows(proba, comm)
    if comm.Get_rank() == 0:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.tmp")
        with h5py.File(tmp, "w") as out:
            out.create_dataset("prediction", data=predicted)
            if proba is not None:
                out.create_dataset("proba", data=proba)
            out.attrs.update(model=str(model_path), data=str(data_path), x=x, kind=saved.kind)
        os.replace(tmp, out_path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpiml.predict",
                                     description="Predict the rows of an HDF5 file with a model.")
    parser.add_argument("model", help="model file written by mpiml.train (model.h5)")
    parser.add_argument("data", help="HDF5 file with the rows to predict")
    parser.add_argument("--out", required=True, help="HDF5 file to write predictions to")
    parser.add_argument("--x", default="X", help="data set of features (default: X)")
    args = parser.parse_args(argv)
    return run_spmd(lambda: predict(args.model, args.data, args.out, x=args.x))


if __name__ == "__main__":
    sys.exit(main())
