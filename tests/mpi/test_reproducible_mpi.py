"""Reproducible mode: parameters on p ranks are bit-identical to one rank (COMM_SELF over the
whole file, in the same job), for every family of fit, dense and CSR, float32 and float64."""

import numpy as np
import pytest
from datasets import make_problem, write_csr, write_dense
from mpi4py import MPI
from mpi_asserts import assert_all

from mpiml import config
from mpiml.fit import train

pytestmark = pytest.mark.mpi

TASK_OF = {"logistic": "binary", "linear": "regression", "softmax": "multiclass",
           "mlp_classifier": "multiclass"}
OFF = {"checkpoint": {"enabled": False}, "fault": {"stall_seconds": None}}


@pytest.fixture
def problem_file(comm, mpi_tmp_path):
    def write(kind: str, layout: str, dtype: str, n: int = 1003, d: int = 6):
        path = mpi_tmp_path / f"{kind}-{layout}-{dtype}-{n}.h5"
        if comm.rank == 0:
            X, y = make_problem(TASK_OF[kind], n, d, seed=21, dtype=np.dtype(dtype))
            (write_csr if layout == "csr" else write_dense)(path, X, y)
        comm.Barrier()
        return str(path)

    return write


def fit(path, communicator, **sections):
    raw = {"data": {"train": path}, "train": {"log_every": 10**6, "reproducible": True}, **OFF}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return train(config.from_dict(raw), communicator)


def assert_bit_identical(comm, distributed, alone, what):
    same = distributed.params.tobytes() == alone.params.tobytes()
    error = float(np.abs(distributed.params - alone.params).max())
    assert_all(same, f"{what}: p ranks differ from 1 rank by {error:.3g}")


CASES = [
    ("logistic", {"optimizer": {"name": "gd", "lr": 0.5},
                  "train": {"epochs": 30, "batch_size": None, "block_rows": 100}}),
    ("logistic", {"optimizer": {"name": "momentum", "lr": 0.05},
                  "train": {"epochs": 2, "batch_size": 64, "seed": 4}}),
    ("softmax", {"optimizer": {"name": "adam", "lr": 0.01},
                 "train": {"epochs": 2, "batch_size": 96, "block_rows": 16}}),
    ("linear", {"optimizer": {"name": "lbfgs"}, "train": {"max_steps": 40, "block_rows": 64}}),
    ("logistic", {"optimizer": {"name": "lbfgs"}, "train": {"max_steps": 40, "block_rows": 50}}),
    ("mlp_classifier", {"model": {"hidden": [8]}, "optimizer": {"name": "sgd", "lr": 0.1},
                        "train": {"epochs": 2, "batch_size": 32}}),
]


@pytest.mark.parametrize("layout", ["dense", "csr"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("kind", "sections"), CASES,
                         ids=[f"{k}-{s['optimizer']['name']}" for k, s in CASES])
def test_any_rank_count_gives_the_same_bits(comm, problem_file, kind, sections, layout, dtype):
    path = problem_file(kind, layout, dtype)
    model = dict(sections.get("model", {}), kind=kind, alpha=0.01)
    options = dict(sections, model=model)
    distributed = fit(path, comm, **options)
    alone = fit(path, MPI.COMM_SELF, **options)
    assert_bit_identical(comm, distributed, alone, f"{kind}/{layout}/{dtype}")


def test_standardized_data_and_early_stopping_are_reproducible(comm, problem_file, mpi_tmp_path):
    path = problem_file("logistic", "dense", "float64")
    options = dict(data={"standardize": True, "test": path, "test_x": "X", "test_y": "y"},
                   model={"kind": "logistic"}, optimizer={"name": "sgd", "lr": 2.0},
                   train={"epochs": 30, "batch_size": 32, "patience": 2})
    distributed = fit(path, comm, **options)
    alone = fit(path, MPI.COMM_SELF, **options)
    assert_all(distributed.steps == alone.steps, f"{distributed.steps} vs {alone.steps} steps")
    assert_bit_identical(comm, distributed, alone, "standardized")
    for got, want in zip(distributed.saved.scaler, alone.saved.scaler, strict=True):
        assert_all(got.tobytes() == want.tobytes(), "scaler bits differ")


def test_too_many_ranks_for_the_blocks_is_a_clear_error(comm, problem_file):
    if comm.size == 1:
        return
    path = problem_file("logistic", "dense", "float64", n=40)
    with pytest.raises(Exception, match="every rank needs at least one block"):
        fit(path, comm, model={"kind": "logistic"}, train={"batch_size": None,
                                                           "block_rows": 40})


@pytest.mark.parametrize("layout", ["dense", "csr"])
@pytest.mark.parametrize("kind", ["kmeans", "hgbt_classifier"])
def test_kmeans_and_trees_give_the_same_bits(comm, problem_file, kind, layout):
    path = problem_file("logistic", layout, "float64")
    raw = {"data": {"train": path}, "model": {"kind": kind},
           "train": {"reproducible": True, "block_rows": 16},
           "kmeans": {"n_clusters": 4, "max_iter": 300, "tol": 1e-6},
           "hgbt": {"n_estimators": 5, "max_depth": 3}, **OFF}
    distributed = train(config.from_dict(raw), comm)
    alone = train(config.from_dict(raw), MPI.COMM_SELF)
    for name, array in alone.saved.arrays.items():
        got = distributed.saved.arrays[name]
        assert_all(np.asarray(got).tobytes() == np.asarray(array).tobytes(),
                   f"{kind}/{layout}: {name} differs")


def test_the_allreduce_algorithm_does_not_change_the_bits(comm, problem_file):
    path = problem_file("softmax", "dense", "float64")
    options = dict(model={"kind": "softmax"}, optimizer={"name": "gd", "lr": 0.5},
                   train={"epochs": 10, "batch_size": None, "block_rows": 50})
    results = [fit(path, comm, comm={"algorithm": algorithm, "ring_threshold": 0}, **options)
               for algorithm in ("native", "ring", "tree")]
    assert_all(len({r.params.tobytes() for r in results}) == 1, "algorithms disagree")


def test_reproducible_mode_stays_close_to_normal_mode(comm, problem_file):
    path = problem_file("logistic", "dense", "float64")
    options = dict(model={"kind": "logistic", "alpha": 0.01}, optimizer={"name": "lbfgs"},
                   train={"max_steps": 100, "block_rows": 50})
    exact = fit(path, comm, **options)
    normal = fit(path, comm, **dict(options, train={"max_steps": 100, "reproducible": False}))
    error = float(np.abs(exact.params - normal.params).max() / np.abs(normal.params).max())
    assert_all(error < 1e-9, f"reproducible vs normal optimum differ by {error:.3g}")
