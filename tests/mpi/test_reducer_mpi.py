"""``comm.algorithm`` reaches every reduction of a run, for every model kind and the estimators.

The run gets a communicator that counts what it is asked to do. With ``comm.algorithm: ring``
no data may travel through MPI's own allreduce: the only native allreduces left are the
one-integer agreement flags of data loading (:func:`mpiml.comm.any_true`), and the ring's
point-to-point exchanges carry the rest. The same runs with ``native`` show the counter's teeth.
"""

import threading
import warnings

import numpy as np
import pytest
from datasets import make_problem, write_dense
from mpi4py import MPI
from mpi_asserts import assert_all

import mpiml.estimators as E
from mpiml import config
from mpiml.fit import train
from mpiml.models import KINDS

pytestmark = pytest.mark.mpi


class CountingComm:
    """A communicator that counts native allreduces of data and ring exchanges, then passes
    every call on to ``comm``."""

    def __init__(self, comm):
        self._comm = comm
        self._lock = threading.Lock()
        self.native_data, self.flags, self.exchanges = 0, 0, 0

    def __getattr__(self, name):
        return getattr(self._comm, name)

    def _count(self, field):
        with self._lock:
            setattr(self, field, getattr(self, field) + 1)

    def Allreduce(self, sendbuf, recvbuf=None, op=MPI.SUM):  # noqa: N802 -- mpi4py's name
        buf = recvbuf if sendbuf is MPI.IN_PLACE else sendbuf
        flag = isinstance(buf, np.ndarray) and buf.size == 1 and buf.dtype == np.int32
        self._count("flags" if flag else "native_data")
        return self._comm.Allreduce(sendbuf, recvbuf, op=op)

    def Iallreduce(self, *args, **kwargs):  # noqa: N802
        self._count("native_data")
        return self._comm.Iallreduce(*args, **kwargs)

    def allreduce(self, *args, **kwargs):
        self._count("native_data")
        return self._comm.allreduce(*args, **kwargs)

    def Sendrecv(self, *args, **kwargs):  # noqa: N802
        self._count("exchanges")
        return self._comm.Sendrecv(*args, **kwargs)


@pytest.fixture
def data_file(comm, mpi_tmp_path):
    paths = {}
    for task in ("binary", "multiclass", "regression"):
        path = mpi_tmp_path / f"{task}.h5"
        if comm.rank == 0:
            X, y = make_problem(task, 403, 5, seed=2)
            write_dense(path, X[:303], y[:303], X[303:], y[303:])
        paths[task] = str(path)
    comm.Barrier()
    return paths


RUNS = {
    "logistic sgd": ("binary", {"model": {"kind": "logistic"},
                                "train": {"epochs": 2, "batch_size": 64, "eval_every": 3}}),
    "logistic lbfgs, standardized": ("binary", {"model": {"kind": "logistic"},
                                                "data": {"standardize": True},
                                                "optimizer": {"name": "lbfgs"},
                                                "train": {"max_steps": 10}}),
    "softmax overlap": ("multiclass", {"model": {"kind": "softmax"},
                                       "comm": {"mode": "overlap"},
                                       "train": {"epochs": 2, "batch_size": 64}}),
    "svm local_sgd": ("binary", {"model": {"kind": "svm"},
                                 "comm": {"mode": "local_sgd", "local_steps": 2},
                                 "train": {"epochs": 2, "batch_size": 64}}),
    "linear, reproducible": ("regression", {"model": {"kind": "linear"},
                                            "optimizer": {"name": "gd"},
                                            "train": {"epochs": 3, "batch_size": None,
                                                      "reproducible": True, "block_rows": 16}}),
    "mlp": ("multiclass", {"model": {"kind": "mlp_classifier", "hidden": [4]},
                           "optimizer": {"name": "adam", "lr": 0.01},
                           "train": {"epochs": 2, "batch_size": 64}}),
    "mlp regressor": ("regression", {"model": {"kind": "mlp_regressor", "hidden": [3]},
                                     "optimizer": {"name": "sgd", "lr": 0.01},
                                     "train": {"epochs": 1, "batch_size": 64}}),
    "kmeans lloyd": ("binary", {"model": {"kind": "kmeans"},
                                "kmeans": {"n_clusters": 3, "max_iter": 5}}),
    "kmeans mini-batch": ("binary", {"model": {"kind": "kmeans"},
                                     "kmeans": {"n_clusters": 3, "max_iter": 2,
                                                "batch_size": 64}}),
    "kmeans reproducible": ("binary", {"model": {"kind": "kmeans"},
                                       "kmeans": {"n_clusters": 3, "max_iter": 5},
                                       "train": {"reproducible": True, "block_rows": 16}}),
    "trees classifier": ("multiclass", {"model": {"kind": "hgbt_classifier"},
                                        "hgbt": {"n_estimators": 2, "max_depth": 2}}),
    "trees regressor": ("regression", {"model": {"kind": "hgbt_regressor"},
                                       "hgbt": {"n_estimators": 2, "max_depth": 2}}),
}


def test_the_runs_cover_every_model_kind():
    covered = {sections["model"]["kind"] for _, sections in RUNS.values()}
    assert covered == set(KINDS), set(KINDS) - covered


def counted_run(comm, path, sections, algorithm):
    raw = {"data": {"train": path, "test": path}, "checkpoint": {"enabled": False},
           "fault": {"stall_seconds": None}, "comm": {"algorithm": algorithm}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    counting = CountingComm(comm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few iterations: K-Means does not converge
        train(config.from_dict(raw), counting)
    return counting


def assert_counts(counting, comm, algorithm, what):
    if comm.size == 1:  # one rank reduces nothing
        assert_all(counting.native_data == counting.exchanges == 0,
                   f"{what}: {counting.native_data} allreduces on one rank")
    elif algorithm == "ring":
        assert_all(counting.native_data == 0 and counting.exchanges > 0,
                   f"{what}: {counting.native_data} native allreduces of data with ring "
                   f"({counting.exchanges} ring exchanges)")
    else:
        assert_all(counting.native_data > 0 and counting.exchanges == 0,
                   f"{what}: native counted {counting.native_data}, ring {counting.exchanges}")


@pytest.mark.parametrize("name", list(RUNS))
@pytest.mark.parametrize("algorithm", ["ring", "native"])
def test_every_reduction_of_a_run_uses_the_configured_algorithm(comm, data_file, name,
                                                                 algorithm):
    task, sections = RUNS[name]
    counting = counted_run(comm, data_file[task], sections, algorithm)
    assert_counts(counting, comm, algorithm, name)


ESTIMATORS = [
    (E.LogisticRegression, {"max_iter": 5}, "binary"),
    (E.Ridge, {"max_iter": 5}, "regression"),
    (E.KMeans, {"n_clusters": 3, "max_iter": 5}, None),
    (E.HistGradientBoostingRegressor, {"max_iter": 2, "max_depth": 2}, "regression"),
]


@pytest.mark.parametrize(("estimator", "params", "task"), ESTIMATORS,
                         ids=[cls.__name__ for cls, _, _ in ESTIMATORS])
@pytest.mark.parametrize("algorithm", ["ring", "native"])
def test_estimators_fit_and_score_with_the_configured_algorithm(comm, estimator, params, task,
                                                                algorithm):
    X, y = make_problem(task or "binary", 301, 4, seed=5)
    mine = slice(comm.rank * 301 // comm.size, (comm.rank + 1) * 301 // comm.size)
    counting = CountingComm(comm)
    model = estimator(**params, allreduce_algorithm=algorithm, comm=counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X[mine], None if task is None else y[mine])
        model.score(X[mine], None if task is None else y[mine])
    assert_counts(counting, comm, algorithm, estimator.__name__)
