"""Gradient-boosted trees on p ranks are bit-identical to one rank (COMM_SELF over the whole file,
in the same job), whatever the allreduce algorithm; resume after k rounds equals the
uninterrupted run. Row counts are odd so shards are uneven; every assertion is collective."""

import numpy as np
import pytest
from datasets import make_problem, write_csr, write_dense
from mpi4py import MPI
from mpi_asserts import assert_all

from mpiml.comm import Reducer
from mpiml.data import load_shard
from mpiml.fit.boosting import fit_hgbt
from mpiml.models.trees import predict_raw

pytestmark = pytest.mark.mpi


@pytest.fixture
def problem_file(comm, mpi_tmp_path):
    """Write a data set once (rank 0) and return its path on every rank."""

    def write(task: str, layout: str = "dense", n: int = 1001, d: int = 6):
        path = mpi_tmp_path / f"hgbt-{task}-{layout}-{n}-{d}.h5"
        if comm.rank == 0:
            X, y = make_problem(task, n, d, seed=5)
            X[:, 0] = np.round(X[:, 0], 1)  # few distinct values: many exact gain ties
            X[np.random.default_rng(1).random(X.shape) < 0.2] = 0.0
            (write_csr if layout == "csr" else write_dense)(path, X, y)
        comm.Barrier()
        return str(path)

    return write


def fit(path, communicator, task, **options):
    data_task = "regression" if task == "regression" else task
    shard = load_shard(path, communicator, task=data_task)
    n_classes = shard.n_classes if task == "multiclass" else 2
    if "reducer" in options:
        communicator = None  # the reducer's
    result = fit_hgbt(shard.X, shard.y, communicator, task=task, n_classes=n_classes,
                      row_offset=shard.start, n_total=shard.n_total,
                      **dict(dict(n_estimators=8, min_samples_leaf=10), **options))
    return shard, result


def assert_same_model(got, want, what):
    differ = sorted(key for key in want if not np.array_equal(got[key], want[key]))
    assert_all(got.keys() == want.keys() and not differ, f"{what}: arrays differ: {differ}")


#: Depth-wise to depth 4; best-first with a leaf cap that binds (and no depth limit).
GROWTH = {"depth-wise": dict(max_leaf_nodes=None, max_depth=4),
          "best-first": dict(max_leaf_nodes=7, max_depth=None)}


@pytest.mark.parametrize("growth", GROWTH)
@pytest.mark.parametrize("task, layout", [("binary", "dense"), ("binary", "csr"),
                                          ("regression", "dense"), ("multiclass", "dense")])
def test_trees_on_p_ranks_equal_one_rank(comm, problem_file, task, layout, growth):
    path = problem_file(task, layout)
    shard, distributed = fit(path, comm, task, **GROWTH[growth])
    _, alone = fit(path, MPI.COMM_SELF, task, **GROWTH[growth])
    leaves = np.diff(alone.model["tree_offsets"]) // 2 + 1
    assert_all(leaves.max() == 7 if growth == "best-first" else leaves.max() <= 16,
               f"leaves per tree {leaves}")
    assert_same_model(distributed.model, alone.model, f"{task}/{layout}")
    assert_all(distributed.train_loss == pytest.approx(alone.train_loss, rel=1e-12),
               f"train loss {distributed.train_loss} vs {alone.train_loss}")
    raw = predict_raw(distributed.model, shard.X)
    reference = predict_raw(alone.model, load_shard(path, MPI.COMM_SELF, y=None).X)
    assert_all(np.array_equal(raw, reference[shard.start : shard.stop]), "predictions differ")


def test_default_estimator_on_breast_cancer_matches_one_rank(comm):
    """Issue 18: scikit-learn's defaults (best-first to 31 leaves, l2 0, no depth limit) on its
    breast-cancer split (25 % test, random_state 0): 0.986 at any rank count, as scikit-learn's
    own estimator (0.965 with the former depth-wise defaults)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    from mpiml.estimators import HistGradientBoostingClassifier

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    rows = np.array_split(np.arange(len(X_train)), comm.size)[comm.rank]
    distributed = HistGradientBoostingClassifier(comm=comm).fit(X_train[rows], y_train[rows])
    alone = HistGradientBoostingClassifier(comm=MPI.COMM_SELF).fit(X_train, y_train)
    assert_same_model(distributed.model_.arrays, alone.model_.arrays, "breast cancer")
    accuracy = float((distributed.predict(X_test) == y_test).mean())
    assert_all(accuracy >= 0.98, f"accuracy {accuracy}")


@pytest.mark.parametrize("algorithm", ["ring", "tree"])
def test_every_allreduce_algorithm_grows_the_same_trees(comm, problem_file, algorithm):
    path = problem_file("binary")
    _, native = fit(path, comm, "binary", reducer=Reducer(comm, "native"))
    _, other = fit(path, comm, "binary", reducer=Reducer(comm, algorithm))
    assert_same_model(other.model, native.model, algorithm)


def test_sampled_bin_edges_do_not_depend_on_the_rank_count(comm, problem_file):
    path = problem_file("regression", n=999)
    options = dict(bin_sample_rows=301, seed=4, max_bins=32, n_estimators=3)
    _, distributed = fit(path, comm, "regression", **options)
    _, alone = fit(path, MPI.COMM_SELF, "regression", **options)
    assert_same_model(distributed.model, alone.model, "sampled edges")


def test_fewer_features_than_ranks(comm, problem_file):
    """Ranks that own no feature's bin edges still take part in the edges' all-to-all."""
    path = problem_file("binary", n=301, d=1)
    _, distributed = fit(path, comm, "binary", n_estimators=3)
    _, alone = fit(path, MPI.COMM_SELF, "binary", n_estimators=3)
    assert_same_model(distributed.model, alone.model, "one feature")


@pytest.mark.parametrize("growth", GROWTH)
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_resume_after_k_rounds_equals_uninterrupted(comm, problem_file, task, growth):
    path = problem_file(task)
    _, whole = fit(path, comm, task, **GROWTH[growth])
    states = []
    fit(path, comm, task, n_estimators=3, on_tree=states.append, **GROWTH[growth])
    _, resumed = fit(path, comm, task, start=states[-1], **GROWTH[growth])
    assert_same_model(resumed.model, whole.model, f"resumed {task}")
    assert_all(resumed.n_rounds == whole.n_rounds == 8, f"{resumed.n_rounds} rounds")
