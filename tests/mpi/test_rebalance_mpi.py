"""Rows split anywhere are moved into whole blocks (mpiml.data.rebalance), so reproducible fits
give the same bits on any split: every rank builds the same data, takes ITS rows of a split that
cuts blocks (uneven, a rank without rows, everything on one rank, 3,001 rows halved), and
compares with the rows :func:`row_range` gives, or with a fit alone on all rows (COMM_SELF)."""

import numpy as np
import pytest
import scipy.sparse as sp
from datasets import make_problem, write_dense
from mpi4py import MPI
from mpi_asserts import assert_all
from sklearn.datasets import make_blobs, make_classification, make_regression

import mpiml
import mpiml.estimators as E
from mpiml.comm import Reducer, exchange_bytes
from mpiml.data import row_range
from mpiml.data.rebalance import in_whole_blocks, rebalance_rows

pytestmark = pytest.mark.mpi

N_ROWS = 3001  # 3 blocks of 1024 (the last one short): cut by almost any split
SPLITS = {  # rank r's share of the rows, given the rank count
    "uneven": lambda size: [r + 1 for r in range(size)],
    "even": lambda size: [1] * size,
    "a rank without rows": lambda size: [0 if r == size // 2 and size > 1 else 1
                                         for r in range(size)],
    "all on the last rank": lambda size: [0] * (size - 1) + [1],
}


def split(name: str, n: int, comm) -> list[int]:
    """Rows per rank for the named split of ``n`` rows (the same list on every rank)."""
    shares = np.array(SPLITS[name](comm.size), dtype=float)
    bounds = np.round(np.concatenate([[0], np.cumsum(shares)]) / shares.sum() * n).astype(int)
    return [int(count) for count in np.diff(bounds)]


def mine(counts: list[int], comm) -> slice:
    """This rank's rows of the split ``counts``."""
    start = sum(counts[:comm.rank])
    return slice(start, start + counts[comm.rank])


def features(layout: str, dtype, n: int = N_ROWS, d: int = 5) -> np.ndarray | sp.csr_matrix:
    X = np.random.default_rng(3).standard_normal((n, d)).astype(dtype)
    return sp.csr_matrix(np.where(X > 0.3, X, 0)) if layout == "csr" else X


def read_only(array):
    """A copy that cannot be written to: a rebalance that wrote to its input would raise."""
    array = array.copy()
    for part in (array.data, array.indices, array.indptr) if sp.issparse(array) else (array,):
        part.flags.writeable = False
    return array


def dense(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else X


# -- the exchange ----------------------------------------------------------------------------

def test_exchange_bytes_delivers_each_ranks_bytes_in_rank_order(comm):
    """Rank s sends (s + d) % 3 bytes of value 10 s + d to rank d (some counts are 0)."""
    counts = [(comm.rank + d) % 3 for d in range(comm.size)]
    send = np.concatenate([np.full(n, 10 * comm.rank + d, dtype=np.uint8)
                           for d, n in enumerate(counts)])
    received, received_counts = exchange_bytes(send, counts, comm)
    expected = [(s + comm.rank) % 3 for s in range(comm.size)]
    want = np.concatenate([np.full(n, 10 * s + comm.rank, dtype=np.uint8)
                           for s, n in enumerate(expected)])
    assert_all(list(received_counts) == expected and np.array_equal(received, want),
               f"received {received} in counts {received_counts}")


# -- the rows --------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["dense", "csr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", SPLITS)
def test_every_rank_ends_with_its_row_range_and_every_array_moves_along(comm, layout, dtype,
                                                                      name):
    X = features(layout, dtype)
    y = np.arange(N_ROWS, dtype=np.int64) * 7
    w = np.linspace(0.5, 2.0, N_ROWS)
    counts = split(name, N_ROWS, comm)
    rows = mine(counts, comm)
    given = [read_only(part) for part in (X[rows], y[rows], w[rows])]
    moved = rebalance_rows(*given, counts, 1024, comm)
    start, stop = row_range(N_ROWS, comm.rank, comm.size, 1024)
    assert_all((moved.start, moved.stop) == (start, stop),
               f"rows {moved.start}..{moved.stop}, row_range {start}..{stop}")
    assert_all(sp.issparse(moved.X) == (layout == "csr") and moved.X.dtype == dtype,
               f"{type(moved.X).__name__} {moved.X.dtype}")
    assert_all(np.array_equal(dense(moved.X), dense(X[start:stop]))
               and np.array_equal(moved.y, y[start:stop]) and moved.y.dtype == np.int64
               and np.array_equal(moved.w, w[start:stop]), "moved rows differ")
    assert_all(np.array_equal(dense(given[0]), dense(X[rows])), "the caller's X changed")


def test_rows_meet_on_one_layout_and_dtype(comm):
    """Rank 0 passes float32 dense rows, the others float64 CSR: all end with float64 CSR."""
    if comm.size == 1:
        return
    X = features("dense", np.float64)
    counts = split("uneven", N_ROWS, comm)
    local = X[mine(counts, comm)]
    local = local.astype(np.float32) if comm.rank == 0 else sp.csr_matrix(local)
    moved = rebalance_rows(local, None, None, counts, 1024, comm)
    start, stop = row_range(N_ROWS, comm.rank, comm.size, 1024)
    assert_all(sp.issparse(moved.X) and moved.X.dtype == np.float64
               and moved.y is None and moved.w is None, f"{type(moved.X).__name__}")
    expected = X.copy()
    expected[:counts[0]] = X[:counts[0]].astype(np.float32)
    assert_all(np.array_equal(dense(moved.X), expected[start:stop]), "values differ")


def test_labels_on_some_ranks_only_are_refused_on_every_rank(comm):
    if comm.size == 1:
        return
    counts = split("even", 40, comm)
    X = features("dense", np.float64, n=40)[mine(counts, comm)]
    y = np.zeros(counts[comm.rank]) if comm.rank == 0 else None
    with pytest.raises(ValueError, match=r"ranks \[0\] pass labels and the others none"):
        rebalance_rows(X, y, None, counts, 32, comm)


def test_labels_that_are_not_numbers_are_refused_on_every_rank(comm):
    counts = split("even", 40, comm)
    X = features("dense", np.float64, n=40)[mine(counts, comm)]
    y = np.array(["a"] * counts[comm.rank], dtype=object)
    with pytest.raises(TypeError, match="must hold numbers"):
        rebalance_rows(X, y, None, counts, 32, comm)


@pytest.mark.parametrize(("counts", "block", "whole"), [
    ([1024, 1024, 953], 1024, True), ([2048, 0, 953], 1024, True), ([3001, 0, 0], 1024, True),
    ([1500, 1501], 1024, False), ([0, 1000, 2001], 1024, False), ([5, 5], 1, True),
])
def test_in_whole_blocks(counts, block, whole):
    assert in_whole_blocks(counts, block) == whole


# -- load_shard users --------------------------------------------------------------------------

def test_a_loaded_shard_rebalanced_gives_the_same_exact_sums_as_one_rank(comm, mpi_tmp_path):
    """load_shard splits evenly by row; rebalance_shard moves the rows into blocks (at 4 ranks,
    more ranks than blocks: one rank ends without rows), and exact block sums over them then
    have the bits of the same sums on one rank."""
    path = mpi_tmp_path / "rebalance.h5"
    if comm.rank == 0:
        write_dense(path, *make_problem("regression", N_ROWS, 4, seed=5))
    comm.Barrier()
    weights = np.linspace(1.0, 3.0, N_ROWS)
    shard = mpiml.load_shard(path, comm=comm)
    shard.w = weights[shard.start:shard.stop]
    X_before = shard.X.copy()
    moved = mpiml.rebalance_shard(shard, 1024, comm=comm)
    start, stop = row_range(N_ROWS, comm.rank, comm.size, 1024)
    assert_all((moved.start, moved.stop, moved.n_total) == (start, stop, N_ROWS),
               f"{moved.start}..{moved.stop} of {moved.n_total}")
    assert_all(np.array_equal(moved.w, weights[start:stop]), "the weights did not move along")
    assert_all(np.array_equal(shard.X, X_before), "the loaded shard changed")

    def total(part, communicator):
        def per_rows(lo, hi):
            return np.concatenate([part.X[lo:hi].sum(axis=0), [part.y[lo:hi].sum()]])

        return Reducer(communicator, block_rows=1024).sum_over_rows(per_rows, part.n_local,
                                                                    part.n_total)

    alone = mpiml.load_shard(path, comm=MPI.COMM_SELF)
    assert_all(total(moved, comm).tobytes() == total(alone, MPI.COMM_SELF).tobytes(),
               "exact sums differ from one rank")
    assert_all(mpiml.rebalance_shard(moved, 1024, comm=comm) is moved,
               "a shard already in whole blocks was moved")


# -- the estimators ----------------------------------------------------------------------------

def classes(n=N_ROWS):
    return make_classification(n_samples=n, n_features=5, n_informative=3, n_redundant=0,
                               random_state=1)


ESTIMATORS = {
    "linear-lbfgs": (lambda c: E.LinearRegression(reproducible=True, comm=c),
                     lambda: make_regression(n_samples=N_ROWS, n_features=5, noise=2.0,
                                             random_state=1)),
    "elastic-net-gd-standardized": (  # its automatic step: a power of two on any split
        lambda c: E.ElasticNet(reproducible=True, standardize=True, max_iter=50,
                               n_iter_no_change=None, comm=c),
        lambda: make_regression(n_samples=N_ROWS, n_features=5, noise=2.0, random_state=1)),
    "logistic-lbfgs-standardized": (
        lambda c: E.LogisticRegression(reproducible=True, standardize=True, comm=c), classes),
    "logistic-sgd": (lambda c: E.LogisticRegression(reproducible=True, solver="sgd",
                                                    batch_size=64, max_iter=3, comm=c), classes),
    "kmeans": (lambda c: E.KMeans(n_clusters=3, reproducible=True, comm=c),
               lambda: make_blobs(n_samples=N_ROWS, n_features=4, centers=3, random_state=1)),
    "trees": (lambda c: E.HistGradientBoostingClassifier(max_iter=5, max_depth=3, comm=c),
              classes),
}


def fitted_bytes(model) -> list[bytes]:
    """Every fitted array of ``model_`` (coefficients, centres, trees; the scaler), as bytes."""
    scaler = model.model_.scaler or ()
    return [np.asarray(array).tobytes() for array in
            [model.model_.arrays[name] for name in sorted(model.model_.arrays)] + list(scaler)]


@pytest.mark.parametrize("name", SPLITS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_reproducible_estimators_give_one_rank_bits_on_any_split(comm, estimator, name):
    make, data = ESTIMATORS[estimator]
    X, y = data()
    counts = split(name, N_ROWS, comm)
    rows = mine(counts, comm)
    X_mine, y_mine = read_only(X[rows]), read_only(y[rows])
    distributed = make(comm)
    if estimator == "kmeans":
        distributed.fit(X_mine)
    else:
        distributed.fit(X_mine, y_mine)
    alone = make(MPI.COMM_SELF).fit(*((X,) if estimator == "kmeans" else (X, y)))
    assert_all(fitted_bytes(distributed) == fitted_bytes(alone),
               f"{estimator} on {counts}: the fit differs from 1 rank")
    # predict and labels_ stay on the caller's own rows
    assert_all(len(distributed.predict(X_mine)) == counts[comm.rank], "predict rows")
    if estimator == "kmeans":
        assert_all(np.array_equal(distributed.labels_, alone.labels_[rows]), "labels_ rows")
