"""Train every model family in sequence in one MPI job and write each model's arrays, so that
one launch per host layout covers them all (tests/multihost/test_correctness.py).

    python train_matrix.py DATA_DIR OUT_DIR [CASE ...]

DATA_DIR holds binary.h5, multiclass.h5 and regression.h5 (``mpiml.data synth``). Each case is
trained twice, reproducible and not; rank 0 writes OUT_DIR/<case>-<mode>.npz with the saved
model's arrays. Every rank first says on which host it runs.
"""

import socket
import sys
from pathlib import Path

import numpy as np

from mpiml import config
from mpiml.fit import train

OFF = {"checkpoint": {"enabled": False}, "fault": {"stall_seconds": None}}
SGD = {"optimizer": {"name": "momentum", "lr": 0.05}, "train": {"epochs": 2, "batch_size": 32}}
LBFGS = {"optimizer": {"name": "lbfgs"}, "train": {"max_steps": 15}}
#: case -> (data file, sections); every family, SGD and L-BFGS for the linear models.
CASES = {
    **{f"{kind}-{name}": (data, {"model": {"kind": kind, "alpha": 0.01}, **sections})
       for kind, data in (("logistic", "binary"), ("softmax", "multiclass"),
                          ("linear", "regression"), ("svm", "binary"))
       for name, sections in (("sgd", SGD), ("lbfgs", LBFGS))},
    "mlp": ("multiclass", {"model": {"kind": "mlp_classifier", "hidden": [8]},
                           "optimizer": {"name": "sgd", "lr": 0.1},
                           "train": {"epochs": 2, "batch_size": 32}}),
    "kmeans": ("binary", {"model": {"kind": "kmeans"},
                          "kmeans": {"n_clusters": 3, "max_iter": 20, "tol": 1e-8}}),
    "hgbt": ("multiclass", {"model": {"kind": "hgbt_classifier"},
                            "hgbt": {"n_estimators": 4, "max_depth": 3}}),
}


def main(data_dir: Path, out_dir: Path, cases: list[str]) -> None:
    from mpi4py import MPI  # here: the tests import CASES without starting MPI

    comm = MPI.COMM_WORLD
    sys.stdout.write(f"mpiml-multihost: rank {comm.rank} of {comm.size} on "
                     f"{socket.gethostname()}\n")
    sys.stdout.flush()
    for case in cases or CASES:
        data, sections = CASES[case]
        for reproducible in (True, False):
            raw = {"data": {"train": str(data_dir / f"{data}.h5")}, **OFF}
            for name, values in sections.items():
                raw[name] = dict(raw.get(name, {}), **values)
            raw["train"] = dict(raw.get("train", {}), log_every=10**6, reproducible=reproducible,
                                **({"block_rows": 16} if reproducible else {}))
            saved = train(config.from_dict(raw), comm).saved
            if comm.rank == 0:
                mode = "reproducible" if reproducible else "normal"
                np.savez(out_dir / f"{case}-{mode}.npz", **saved.arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
