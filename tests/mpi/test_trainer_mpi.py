"""The gradient loops on p ranks equal the same loops on one rank (COMM_SELF over the whole file).

Every rank also trains alone on the full data as the reference, so each assertion compares the
p-rank result with a 1-rank result inside the same job. Row counts are odd so shards are uneven.
"""

import numpy as np
import pytest
from datasets import make_problem, write_csr, write_dense
from mpi4py import MPI
from mpi_asserts import assert_all

from mpiml import config
from mpiml.data.run_rows import load_run_data
from mpiml.fit import train
from mpiml.fit.gradient import GradientProblem
from mpiml.run import open_run

pytestmark = pytest.mark.mpi

TASK_OF = {"logistic": "binary", "linear": "regression", "svm": "binary", "softmax": "multiclass"}


@pytest.fixture
def problem_file(comm, mpi_tmp_path):
    """Write a data set once (rank 0) and return its path on every rank."""

    def write(kind: str, layout: str = "dense", n: int = 1001, d: int = 7):
        path = mpi_tmp_path / f"{kind}-{layout}-{n}.h5"
        if comm.rank == 0:
            X, y = make_problem(TASK_OF[kind], n, d, seed=3)
            (write_csr if layout == "csr" else write_dense)(path, X, y)
        comm.Barrier()
        return str(path)

    return write


NO_CHECKPOINTS = {"enabled": False}


def fit(path, communicator, **sections):
    raw = {"data": {"train": path}, "train": {"log_every": 10**6},
           "checkpoint": dict(NO_CHECKPOINTS), "fault": {"check_every": 7}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return train(config.from_dict(raw), communicator)


def assert_same_params(distributed, alone, rtol, what):
    scale = max(1.0, float(np.abs(alone).max()))
    error = float(np.abs(distributed - alone).max()) / scale
    assert_all(error <= rtol, f"{what}: p-rank vs 1-rank differ by {error:.3g} (> {rtol})")


def assert_replicas_identical(params, comm, what):
    everyone = comm.allgather(params.tobytes())
    assert_all(len(set(everyone)) == 1, f"{what}: replicas differ across ranks")


@pytest.mark.parametrize("kind", ["logistic", "linear", "softmax", "svm"])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_full_batch_gd_on_p_ranks_equals_one_rank(comm, problem_file, kind, layout):
    path = problem_file(kind, layout)
    options = dict(model={"kind": kind, "alpha": 0.01},
                   optimizer={"name": "gd", "lr": 0.5 if kind != "linear" else 0.1},
                   train={"epochs": 50, "batch_size": None})
    distributed = fit(path, comm, **options)
    alone = fit(path, MPI.COMM_SELF, **options)
    assert_all(distributed.steps == alone.steps == 50, f"steps {distributed.steps}")
    assert_same_params(distributed.params, alone.params, 1e-10, f"{kind}/{layout}")
    assert_replicas_identical(distributed.params, comm, kind)


@pytest.mark.parametrize("kind", ["logistic", "softmax", "linear"])
def test_lbfgs_reaches_the_one_rank_optimum(comm, problem_file, kind):
    path = problem_file(kind)
    options = dict(model={"kind": kind, "alpha": 0.01}, optimizer={"name": "lbfgs"})
    distributed = fit(path, comm, **options)
    alone = fit(path, MPI.COMM_SELF, **options)
    assert_same_params(distributed.params, alone.params, 1e-8, f"lbfgs {kind}")
    assert_replicas_identical(distributed.params, comm, kind)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adagrad"])
def test_minibatch_sgd_follows_the_same_global_batches(comm, problem_file, name):
    path = problem_file("logistic")
    options = dict(model={"kind": "logistic", "alpha": 0.001},
                   optimizer={"name": name, "lr": 0.05},
                   train={"epochs": 4, "batch_size": 32, "max_steps": 100, "seed": 11})
    distributed = fit(path, comm, **options)
    alone = fit(path, MPI.COMM_SELF, **options)
    assert_all(distributed.steps == 100)
    assert_same_params(distributed.params, alone.params, 1e-8, name)
    assert_replicas_identical(distributed.params, comm, name)


def objective(path, params, comm):
    """The full training objective at ``params`` (one fused reduction, as the loops do)."""
    resolved = config.from_dict({"data": {"train": path},
                                 "model": {"kind": "logistic", "alpha": 0.01},
                                 "checkpoint": NO_CHECKPOINTS})
    with open_run(resolved, comm) as run:
        problem = GradientProblem(run, load_run_data(resolved, run.reducer, "binary"))
        return problem.objective(params)[0]


@pytest.mark.parametrize("mode", ["overlap", "local_sgd"])
def test_overlap_and_local_sgd_reach_the_sync_optimum(comm, problem_file, mode):
    path = problem_file("logistic")
    model = {"kind": "logistic", "alpha": 0.01}
    optimum = fit(path, comm, model=model, optimizer={"name": "lbfgs"})
    run = fit(path, comm, model=model, optimizer={"name": "sgd", "lr": 0.5},
              train={"epochs": 40, "batch_size": 64}, comm={"mode": mode, "local_steps": 4})
    best, reached = objective(path, optimum.params, comm), objective(path, run.params, comm)
    assert_all(reached <= best * 1.01, f"{mode}: objective {reached:.6g} vs optimum {best:.6g}")
    assert_replicas_identical(run.params, comm, mode)


def test_early_stopping_is_decided_together(comm, problem_file, mpi_tmp_path):
    path = problem_file("logistic")
    run = fit(path, comm, model={"kind": "logistic"}, optimizer={"name": "sgd", "lr": 10.0},
              train={"epochs": 50, "batch_size": 16, "patience": 2, "min_delta": 1e9})
    assert_all(run.stopped_early and run.epochs == 3,
               f"stopped_early={run.stopped_early} epochs={run.epochs}")


@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_standardized_training_equals_one_rank(comm, problem_file, layout):
    path = problem_file("logistic", layout)
    options = dict(data={"standardize": True}, model={"kind": "logistic", "alpha": 0.01},
                   optimizer={"name": "gd", "lr": 0.5}, train={"epochs": 20, "batch_size": None})
    distributed = fit(path, comm, **options)
    alone = fit(path, MPI.COMM_SELF, **options)
    for got, want in zip(distributed.saved.scaler, alone.saved.scaler, strict=True):
        assert_same_params(got, want, 1e-12, f"scaler {layout}")
    assert_same_params(distributed.params, alone.params, 1e-10, f"standardized {layout}")
