"""Distributed prediction: ``mpirun -n N python -m mpiml.predict MODEL.h5 DATA.h5 --out PRED.h5``.

Rank 0 reads the model and broadcasts it; every rank predicts its own rows of DATA.h5; rank 0
gathers the predictions in row order and writes ``prediction`` (original class labels or values)
and, for probabilistic classifiers, ``proba`` (n x K) to PRED.h5.
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

    from . import data, scaling
    from .modelio import load_model, model_options
    from .models import make_model

    comm = collectives.world(comm)
    loaded, error = None, None
    if comm.Get_rank() == 0:
        try:
            saved = load_model(model_path)
            loaded = (saved.model.kind, saved.model.n_features, int(saved.attrs["n_classes"]),
                      model_options(saved.model), saved.params, saved.classes, saved.scaler)
        except (OSError, ValueError, KeyError) as exc:
            error = exc
    collectives.raise_together(error, comm)
    kind, n_features, n_classes, options, params, classes, scaler = (
        collectives.broadcast_object(loaded, comm))
    model = make_model(kind, n_features, n_classes=n_classes, **options)
    shard = data.load_shard(data_path, comm, x=x, y=None)
    mismatch = None
    if shard.n_features != n_features:
        mismatch = ValueError(f"{data_path}:{x} has {shard.n_features} features; the model "
                              f"{model_path} expects {n_features}")
    collectives.raise_together(mismatch, comm)
    if scaler is not None:
        scaling.apply_scaler(shard.X, *scaler)
    predicted = model.predict(params, shard.X)
    if classes is not None:
        predicted = np.asarray(classes)[predicted]
    predicted = collectives.gather_rows(np.ascontiguousarray(predicted), comm)
    proba = None
    if hasattr(model, "predict_proba"):
        proba = collectives.gather_rows(model.predict_proba(params, shard.X), comm)
    if comm.Get_rank() == 0:
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(f".{out_path.name}.tmp")
        with h5py.File(tmp, "w") as out:
            out.create_dataset("prediction", data=predicted)
            if proba is not None:
                out.create_dataset("proba", data=proba)
            out.attrs.update(model=str(model_path), data=str(data_path), x=x)
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
