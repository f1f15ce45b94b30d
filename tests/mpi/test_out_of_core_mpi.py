"""Streamed training rows (``data.memory_budget``) on p ranks give what one rank gives
(COMM_SELF over the whole file, streamed too, in the same job): the same bits in reproducible
mode and for boosting, float64 rounding otherwise -- including mini-batch SGD in the
block-shuffled order, which is the same at any rank count."""

import numpy as np
import pytest
from datasets import make_problem, write_dense
from mpi4py import MPI
from mpi_asserts import assert_all

from mpiml import config
from mpiml.fit import train

pytestmark = pytest.mark.mpi

OFF = {"checkpoint": {"enabled": False}, "fault": {"stall_seconds": None}}
BUDGET = 64 << 10  # far below any rank's rows: every rank streams


@pytest.fixture
def data_file(comm, mpi_tmp_path):
    path = mpi_tmp_path / "ooc.h5"
    if comm.rank == 0:
        write_dense(path, *make_problem("binary", 40_000, 8, seed=8))
    comm.Barrier()
    return str(path)


def fit(path, communicator, **sections):
    raw = {"data": {"train": path, "memory_budget": BUDGET},
           "train": {"log_every": 10**6}, **OFF}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return train(config.from_dict(raw), communicator)


CASES = {
    "sgd-block-order": ({"optimizer": {"name": "sgd", "lr": 0.1},
                         "train": {"epochs": 1, "batch_size": 500}}, 1e-10),
    "sgd-reproducible": ({"optimizer": {"name": "momentum", "lr": 0.05},
                          "train": {"epochs": 1, "batch_size": 512, "reproducible": True}}, 0),
    "lbfgs-reproducible": ({"optimizer": {"name": "lbfgs"},
                            "train": {"max_steps": 20, "reproducible": True}}, 0),
    "gd": ({"optimizer": {"name": "gd", "lr": 0.5},
            "train": {"epochs": 5, "batch_size": None}}, 1e-10),
    "kmeans": ({"model": {"kind": "kmeans"}, "kmeans": {"n_clusters": 4, "max_iter": 10}},
               1e-10),
    "kmeans-minibatch": ({"model": {"kind": "kmeans"},
                          "kmeans": {"n_clusters": 4, "max_iter": 2, "batch_size": 1000}},
                         1e-10),
    "hgbt": ({"model": {"kind": "hgbt_classifier"}, "hgbt": {"n_estimators": 3}}, 0),
}


@pytest.mark.filterwarnings("ignore:K-Means did not converge")
@pytest.mark.parametrize("case", CASES)
def test_streamed_on_p_ranks_equals_one_rank(comm, data_file, case):
    sections, tolerance = CASES[case]
    distributed = fit(data_file, comm, **sections)
    alone = fit(data_file, MPI.COMM_SELF, **sections)
    for name, value in alone.saved.arrays.items():
        if np.asarray(value).dtype.kind not in "biuf":  # the task's name
            assert_all(np.asarray(value) == np.asarray(distributed.saved.arrays[name]), name)
            continue
        value = np.asarray(value, dtype=np.float64)
        other = np.asarray(distributed.saved.arrays[name], dtype=np.float64)
        error = float(np.abs(other - value).max(initial=0.0))
        same = error <= tolerance * max(1.0, float(np.abs(value).max(initial=0.0)))
        assert_all(same, f"{case}: {name} differs from 1 rank by {error:.3g}")
