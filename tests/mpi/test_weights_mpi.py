"""Sample and class weights under MPI: reproducible fits on p ranks have the bits of one rank
(COMM_SELF over the whole file, in the same job) for every family; the estimators' weighted fits
on p ranks equal one rank's; a bad weight on one rank is one error on every rank."""

import h5py
import numpy as np
import pytest
from datasets import make_problem
from mpi4py import MPI
from mpi_asserts import assert_all

import mpiml.estimators as E
from mpiml import config, row_range
from mpiml.fit import train

pytestmark = pytest.mark.mpi

OFF = {"checkpoint": {"enabled": False}, "fault": {"stall_seconds": None}}
TASK_OF = {"logistic": "binary", "linear": "regression", "softmax": "multiclass",
           "mlp_classifier": "multiclass", "kmeans": "binary", "hgbt_classifier": "multiclass",
           "hgbt_regressor": "regression"}


@pytest.fixture
def weighted_file(comm, mpi_tmp_path):
    def write(kind: str, n: int = 1001, d: int = 5):
        path = mpi_tmp_path / f"weighted-{kind}.h5"
        if comm.rank == 0:
            X, y = make_problem(TASK_OF[kind], n, d, seed=8)
            weights = np.random.default_rng(3).uniform(0.0, 3.0, n)
            weights[::17] = 0.0
            with h5py.File(path, "w") as out:
                out["X"], out["y"], out["w"] = X, y, weights
        comm.Barrier()
        return str(path)

    return write


CASES = [
    ("logistic", {"optimizer": {"name": "lbfgs"}, "train": {"max_steps": 30, "block_rows": 50}}),
    ("logistic", {"model": {"class_weight": {0: 2.5}}, "optimizer": {"name": "momentum",
                  "lr": 0.05}, "train": {"epochs": 2, "batch_size": 64}}),
    ("softmax", {"model": {"class_weight": "balanced"}, "optimizer": {"name": "adam",
                 "lr": 0.01}, "train": {"epochs": 2, "batch_size": 96, "block_rows": 16}}),
    ("linear", {"optimizer": {"name": "gd", "lr": 0.1},
                "train": {"epochs": 20, "batch_size": None, "block_rows": 64}}),
    ("mlp_classifier", {"model": {"hidden": [6], "class_weight": "balanced"},
                        "optimizer": {"name": "sgd", "lr": 0.1},
                        "train": {"epochs": 2, "batch_size": 32}}),
    ("kmeans", {"kmeans": {"n_clusters": 4, "max_iter": 100}, "train": {"block_rows": 16}}),
    ("hgbt_classifier", {"model": {"class_weight": "balanced"},
                         "hgbt": {"n_estimators": 4, "max_depth": 3},
                         "train": {"block_rows": 16}}),
    ("hgbt_regressor", {"hgbt": {"n_estimators": 4, "max_depth": 3},
                        "train": {"block_rows": 16}}),
]


def fit(path, communicator, kind, sections):
    raw = {"data": {"train": path, "weight": "w"},
           "train": {"log_every": 10**6, "reproducible": True}, **OFF}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    raw.setdefault("model", {}).update(kind=kind)
    if kind in ("logistic", "softmax", "linear", "mlp_classifier"):
        raw["model"].setdefault("alpha", 0.01)
    return train(config.from_dict(raw), communicator)


@pytest.mark.parametrize(("kind", "sections"), CASES,
                         ids=[f"{kind}-{index}" for index, (kind, _) in enumerate(CASES)])
def test_weighted_fits_have_the_same_bits_on_any_rank_count(comm, weighted_file, kind,
                                                            sections):
    path = weighted_file(kind)
    distributed = fit(path, comm, kind, sections)
    alone = fit(path, MPI.COMM_SELF, kind, sections)
    for name, array in alone.saved.arrays.items():
        got = np.asarray(distributed.saved.arrays[name])
        assert_all(got.tobytes() == np.asarray(array).tobytes(),
                   f"{kind}: {name} differs from one rank's")


def test_weights_change_the_fit(comm, weighted_file):
    """The weight data set is read and used: the weighted optimum is not the unweighted one."""
    path = weighted_file("logistic")
    sections = {"optimizer": {"name": "lbfgs"}, "train": {"max_steps": 30}}
    weighted = fit(path, comm, "logistic", sections)
    raw = {"data": {"train": path}, "model": {"kind": "logistic", "alpha": 0.01},
           "optimizer": {"name": "lbfgs"}, "train": {"max_steps": 30, "log_every": 10**6},
           **OFF}
    plain = train(config.from_dict(raw), comm)
    assert_all(np.abs(weighted.params - plain.params).max() > 1e-3, "weights were ignored")


def split(comm, *arrays):
    lo, hi = row_range(len(arrays[0]), comm.rank, comm.size)
    return [array[lo:hi] for array in arrays]


@pytest.mark.parametrize("name", ["LogisticRegression", "Ridge", "LinearSVC", "KMeans",
                                  "HistGradientBoostingClassifier", "MLPRegressor"])
def test_weighted_estimators_on_p_ranks_equal_one_rank(comm, name):
    task = "regression" if name in ("Ridge", "MLPRegressor") else "multiclass"
    X, y = make_problem("binary" if name == "LinearSVC" else task, 301, 4, seed=2)
    weights = np.random.default_rng(5).integers(0, 4, len(y)).astype(float)
    options = {"LogisticRegression": dict(C=0.5, tol=1e-12, class_weight="balanced"),
               "Ridge": dict(alpha=2.0, tol=1e-12), "LinearSVC": dict(tol=1e-12),
               "KMeans": dict(n_clusters=3, random_state=1),
               "HistGradientBoostingClassifier": dict(max_iter=5, class_weight={0: 2.0}),
               "MLPRegressor": dict(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=50,
                                    random_state=0)}[name]
    estimator = E.ESTIMATORS[name]
    X_mine, y_mine, w_mine = split(comm, X, y, weights)
    with np.errstate(all="ignore"):
        distributed = estimator(**options).fit(X_mine, y_mine, sample_weight=w_mine)
        alone = estimator(**options, comm=MPI.COMM_SELF).fit(X, y, sample_weight=weights)
    got, want = distributed.predict(X), alone.predict(X)
    close = np.allclose(got, want, rtol=1e-6, atol=1e-8) if task == "regression" else (
        np.mean(got == want) >= 0.99)
    assert_all(close, f"{name}: p ranks and one rank predict differently")
    if name == "LogisticRegression":
        error = float(np.abs(distributed.coef_ - alone.coef_).max())
        assert_all(error < 1e-6, f"coefficients differ by {error:.3g}")


def test_weights_on_some_ranks_only_weigh_the_others_1(comm):
    X, y = make_problem("binary", 200, 3, seed=4)
    X_mine, y_mine = split(comm, X, y)
    mine = np.full(len(y_mine), 2.0) if comm.rank == 0 else None
    weighted = E.LogisticRegression(tol=1e-12).fit(X_mine, y_mine, sample_weight=mine)
    weights = np.ones(len(y))
    weights[: comm.allgather(len(y_mine))[0]] = 2.0  # rank 0's rows come first
    alone = E.LogisticRegression(tol=1e-12, comm=MPI.COMM_SELF).fit(X, y, sample_weight=weights)
    error = float(np.abs(weighted.coef_ - alone.coef_).max())
    assert_all(error < 1e-6, f"coefficients differ by {error:.3g}")


def test_a_bad_weight_on_one_rank_is_one_error_everywhere(comm, mpi_tmp_path):
    X, y = make_problem("binary", 60, 3, seed=1)
    X_mine, y_mine = split(comm, X, y)
    weights = np.ones(len(y_mine))
    if comm.rank == comm.size - 1:
        weights[-1] = -1.0
    with pytest.raises(ValueError, match=f"sample_weight on rank {comm.size - 1} holds -1.0 at "
                                         f"row {len(y_mine) - 1}"):
        E.LogisticRegression().fit(X_mine, y_mine, sample_weight=weights)
    with pytest.raises(ValueError, match="every sample weight is zero"):
        E.Ridge().fit(X_mine, y_mine, sample_weight=np.zeros(len(y_mine)))
    path = mpi_tmp_path / "bad-weights.h5"
    if comm.rank == 0:
        bad = np.ones(len(y))
        bad[41] = np.nan
        with h5py.File(path, "w") as out:
            out["X"], out["y"], out["w"] = X, y, bad
    comm.Barrier()
    raw = {"data": {"train": str(path), "weight": "w"}, "model": {"kind": "logistic"}, **OFF}
    with pytest.raises(ValueError, match=r"bad-weights.h5: data set 'w' holds nan at global "
                                         r"row 41 \(sample weights must be finite and >= 0\)"):
        train(config.from_dict(raw), comm)
