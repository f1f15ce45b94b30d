"""K-Means on p ranks equals K-Means on one rank (COMM_SELF over the whole file, in the same job),
for every kind of initial centres and with n_init fits; bit for bit in reproducible mode.

Row counts are odd so shards are uneven; every assertion is collective.
"""

import h5py
import numpy as np
import pytest
from datasets import write_csr, write_dense
from mpi4py import MPI
from mpi_asserts import assert_all
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

import mpiml.estimators as E
from mpiml import config
from mpiml.data import load_shard
from mpiml.fit import train
from mpiml.fit.kmeans import fit_kmeans

pytestmark = [pytest.mark.mpi, pytest.mark.filterwarnings("ignore:K-Means did not converge")]


@pytest.fixture
def blob_file(comm, mpi_tmp_path):
    """Write a clustering data set once (rank 0) and return its path on every rank."""

    def write(layout: str = "dense", n: int = 1001):
        path = mpi_tmp_path / f"blobs-{layout}-{n}.h5"
        if comm.rank == 0:
            X, y = make_blobs(n_samples=n, n_features=6, centers=5, cluster_std=2.5,
                              random_state=7)
            X[np.random.default_rng(0).random(X.shape) < 0.2] = 0.0
            (write_csr if layout == "csr" else write_dense)(path, X, y.astype(np.float64))
        comm.Barrier()
        return str(path)

    return write


def run(path, communicator, **options):
    shard = load_shard(path, communicator, y=None)
    result = fit_kmeans(shard.X, options.pop("n_clusters", 5), communicator,
                        row_offset=shard.start, n_total=shard.n_total, **options)
    return shard, result


def assert_same_centers(distributed, alone, rtol, what):
    scale = max(1.0, float(np.abs(alone).max()))
    error = float(np.abs(distributed - alone).max()) / scale
    assert_all(error <= rtol, f"{what}: p-rank vs 1-rank centres differ by {error:.3g}")


def assert_identical_on_all_ranks(array, comm, what):
    assert_all(len(set(comm.allgather(np.ascontiguousarray(array).tobytes()))) == 1,
               f"{what}: differs across ranks")


@pytest.mark.parametrize("layout", ["dense", "csr"])
@pytest.mark.parametrize("batch_size", [None, 100])
def test_kmeans_on_p_ranks_equals_one_rank(comm, blob_file, layout, batch_size):
    path = blob_file(layout)
    options = dict(seed=3, tol=1e-8, batch_size=batch_size, max_iter=100 if batch_size is None
                   else 5)
    shard, distributed = run(path, comm, **options)
    _, alone = run(path, MPI.COMM_SELF, **options)
    what = f"{layout}/{'lloyd' if batch_size is None else 'minibatch'}"
    assert_all(distributed.n_iter == alone.n_iter, f"{what}: {distributed.n_iter} iterations "
               f"vs {alone.n_iter}")
    assert_same_centers(distributed.centers, alone.centers, 1e-10, what)
    assert_all(abs(distributed.inertia - alone.inertia) <= 1e-10 * alone.inertia, what)
    assert_all(np.array_equal(distributed.labels, alone.labels[shard.start : shard.stop]),
               f"{what}: labels of this rank's rows differ from the 1-rank run")
    assert_identical_on_all_ranks(distributed.centers, comm, what)


def test_empty_cluster_reseeding_is_agreed(comm, blob_file):
    path = blob_file("dense", n=999)
    init = load_shard(path, MPI.COMM_SELF, y=None).X[[0, 0, 0, 10, 500]]  # two empty clusters
    states = []
    _, distributed = run(path, comm, init=init, max_iter=50, on_iteration=states.append)
    _, alone = run(path, MPI.COMM_SELF, init=init, max_iter=50)
    first = states[0]["centers"]
    assert_all(len(np.unique(first, axis=0)) == 5, "empty clusters were not moved apart")
    assert_identical_on_all_ranks(first, comm, "reseeded centres")
    assert_same_centers(distributed.centers, alone.centers, 1e-10, "after reseeding")


@pytest.mark.parametrize("batch_size", [None, 100])
def test_resume_equals_uninterrupted_run(comm, blob_file, batch_size):
    path = blob_file("csr")
    options = dict(seed=1, tol=1e-8, batch_size=batch_size, max_iter=60 if batch_size is None
                   else 4)
    _, whole = run(path, comm, **options)
    states = []
    run(path, comm, **dict(options, max_iter=3 if batch_size is None else 1),
        on_iteration=states.append)
    _, resumed = run(path, comm, start=states[2], **options)
    assert_all(resumed.n_iter == whole.n_iter, f"{resumed.n_iter} vs {whole.n_iter} iterations")
    assert_all(np.array_equal(resumed.centers, whole.centers), "resumed centres differ")
    assert_all(resumed.inertia == whole.inertia and np.array_equal(resumed.labels, whole.labels),
               "resumed inertia or labels differ")


def whole_rows(path):
    return load_shard(path, MPI.COMM_SELF, y=None).X


@pytest.mark.parametrize(("init", "n_init"), [("k-means++", 3), ("random", 3), ("given", 1)])
@pytest.mark.parametrize("layout", ["dense", "csr"])
def test_each_init_gives_the_same_centres_on_p_ranks(comm, blob_file, layout, init, n_init):
    path = blob_file(layout)
    if init == "given":
        init = whole_rows(path)[[0, 10, 200, 400, 800]].toarray() if layout == "csr" else (
            whole_rows(path)[[0, 10, 200, 400, 800]])
    options = dict(init=init, n_init=n_init, seed=5, tol=1e-8, max_iter=100)
    shard, distributed = run(path, comm, **options)
    _, alone = run(path, MPI.COMM_SELF, **options)
    what = f"{layout}/{'given' if n_init == 1 else init}"
    assert_all(distributed.initialisation == alone.initialisation,
               f"{what}: kept fit {distributed.initialisation} vs {alone.initialisation}")
    assert_same_centers(distributed.centers, alone.centers, 1e-10, what)
    assert_all(abs(distributed.inertia - alone.inertia) <= 1e-10 * alone.inertia, what)
    assert_all(np.array_equal(distributed.labels, alone.labels[shard.start : shard.stop]),
               f"{what}: labels of this rank's rows differ from the 1-rank run")
    assert_identical_on_all_ranks(distributed.centers, comm, what)


def test_lloyd_from_given_centres_matches_scikit_learn(comm, blob_file):
    path = blob_file("dense")
    X = whole_rows(path)
    init = X[[3, 50, 100, 200, 400]]
    _, ours = run(path, comm, init=init, max_iter=100, tol=1e-6)
    reference = KMeans(n_clusters=5, init=init, n_init=1, algorithm="lloyd", tol=1e-6,
                       max_iter=100).fit(X)
    assert_all(ours.n_iter == reference.n_iter_, f"{ours.n_iter} vs {reference.n_iter_}")
    assert_same_centers(ours.centers, reference.cluster_centers_, 1e-6, "vs scikit-learn")


def test_resume_in_the_second_of_n_init_fits_equals_the_uninterrupted_run(comm, blob_file):
    path = blob_file("csr")
    options = dict(init="random", n_init=2, seed=1, tol=0.0, max_iter=6)
    states = []
    _, whole = run(path, comm, on_iteration=states.append, **options)
    second = [state for state in states if state["initialisation"] == 1][2]
    _, resumed = run(path, comm, start=second, **options)
    assert_all(np.array_equal(resumed.centers, whole.centers), "resumed centres differ")
    assert_all((resumed.initialisation, resumed.n_iter, resumed.inertia) == (
        whole.initialisation, whole.n_iter, whole.inertia), "resumed result differs")
    assert_all(np.array_equal(resumed.labels, whole.labels), "resumed labels differ")


OFF = {"checkpoint": {"enabled": False}, "fault": {"stall_seconds": None}}


def train_kmeans(path, communicator, **kmeans):
    raw = {"data": {"train": path}, "model": {"kind": "kmeans"},
           "train": {"reproducible": True, "block_rows": 16, "seed": 2},
           "kmeans": {"n_clusters": 5, "max_iter": 100, "tol": 1e-8, **kmeans}, **OFF}
    return train(config.from_dict(raw), communicator)


@pytest.mark.parametrize("init", ["k-means++", "random", "file"])
def test_reproducible_mode_gives_the_same_bits_for_each_init(comm, blob_file, mpi_tmp_path,
                                                            init):
    path = blob_file("dense")
    kmeans = {"init": init, "n_init": 2}
    if init == "file":
        centers = mpi_tmp_path / "centers.h5"
        if comm.rank == 0:
            with h5py.File(centers, "w") as out:
                out["centers"] = whole_rows(path)[[1, 2, 3, 4, 5]]
        comm.Barrier()
        kmeans = {"init_file": str(centers)}
    distributed = train_kmeans(path, comm, **kmeans)
    alone = train_kmeans(path, MPI.COMM_SELF, **kmeans)
    got, want = distributed.saved.arrays["centers"], alone.saved.arrays["centers"]
    assert_all(got.tobytes() == want.tobytes(), f"{init}: p-rank centres differ from 1 rank")


@pytest.mark.parametrize(("content", "expected"), [
    (None, "no such file (expected a data set 'centers' of shape (5, 6)"),
    (np.zeros((5, 5)), "has shape (5, 5); expected (5, 6) (n_clusters x n_features)"),
    (np.full((5, 6), np.nan), "row 0 column 0 is nan; centres must be finite"),
])
def test_a_bad_init_file_raises_the_same_error_on_every_rank(comm, blob_file, mpi_tmp_path,
                                                             content, expected):
    centers = mpi_tmp_path / "bad-centers.h5"
    if comm.rank == 0 and content is not None:
        with h5py.File(centers, "w") as out:
            out["centers"] = content
    comm.Barrier()
    try:
        train_kmeans(blob_file("dense"), comm, init_file=str(centers))
        message = "no error"
    except (OSError, ValueError) as exc:
        message = str(exc)
    assert_all(message.startswith(f"kmeans.init_file {centers}: ") and expected in message,
               message)
    assert_all(len(set(comm.allgather(message))) == 1, f"ranks disagree: {message}")


@pytest.mark.parametrize("init", ["random", "given"])
def test_the_estimator_with_init_and_n_init_on_p_ranks_equals_one_rank(comm, blob_file, init):
    X = whole_rows(blob_file("dense"))
    if init == "given":
        init = X[[7, 70, 700, 900, 990]]
    bounds = np.linspace(0, len(X), comm.size + 1).astype(int)
    mine = X[bounds[comm.rank] : bounds[comm.rank + 1]]
    ours = E.KMeans(n_clusters=5, init=init, random_state=6, comm=comm).fit(mine)
    alone = E.KMeans(n_clusters=5, init=init, random_state=6, comm=MPI.COMM_SELF).fit(X)
    assert_same_centers(ours.cluster_centers_, alone.cluster_centers_, 1e-10, "estimator")
    assert_all(ours.n_iter_ == alone.n_iter_, f"{ours.n_iter_} vs {alone.n_iter_} iterations")
