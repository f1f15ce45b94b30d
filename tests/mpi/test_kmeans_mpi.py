"""K-Means on p ranks equals K-Means on one rank (COMM_SELF over the whole file, in the same job).

Row counts are odd so shards are uneven; every assertion is collective.
"""

import numpy as np
import pytest
from datasets import write_csr, write_dense
from mpi4py import MPI
from mpi_asserts import assert_all
from sklearn.datasets import make_blobs

from mpiml.data import load_shard
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
