"""A linked file (``python -m mpiml.data link``) on every rank: each rank's hyperslab of the
virtual data sets is exactly its rows of the inputs one below the other, across input
boundaries, at any rank count."""

import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi_asserts import assert_all

from mpiml.comm import broadcast_object
from mpiml.data import load_shard, row_range
from mpiml.data.tools import link

pytestmark = pytest.mark.mpi

SIZES = (11, 3, 17, 6)  # 37 rows: uneven shards that cross input boundaries


@pytest.fixture(scope="module")
def linked():
    """Four inputs and their linked file, written by rank 0; every rank gets the paths and the
    expected rows."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    directory = broadcast_object(tempfile.mkdtemp(prefix="mpiml-link-") if comm.rank == 0
                                 else None, comm)
    rng = np.random.default_rng(11)
    X = rng.standard_normal((sum(SIZES), 5))
    y = rng.integers(0, 3, sum(SIZES)).astype(np.int64)
    X_test = rng.standard_normal((4 * len(SIZES), 5))
    if comm.rank == 0:
        paths, begin = [], 0
        for index, n in enumerate(SIZES):
            path = Path(directory) / f"in{index}.h5"
            with h5py.File(path, "w") as handle:
                handle["X"], handle["y"] = X[begin:begin + n], y[begin:begin + n]
                handle["X_test"] = X_test[4 * index:4 * index + 4]
                handle["y_test"] = np.zeros(4)
            paths.append(path)
            begin += n
        link(Path(directory) / "linked.h5", paths)
    comm.Barrier()
    yield Path(directory) / "linked.h5", X, y, X_test
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(directory)


def test_each_rank_reads_exactly_its_rows_of_the_concatenation(linked):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    path, X, y, X_test = linked
    shard = load_shard(path, comm, task="multiclass")
    start, stop = row_range(len(X), comm.rank, comm.size)
    assert_all((shard.start, shard.stop) == (start, stop), f"range {shard.start}..{shard.stop}")
    assert_all(np.array_equal(shard.X, X[start:stop]), "X differs from the inputs' rows")
    assert_all(np.array_equal(shard.classes[shard.y], y[start:stop]), "labels differ")
    test = load_shard(path, comm, x="X_test", y="y_test")
    start, stop = row_range(len(X_test), comm.rank, comm.size)
    assert_all(np.array_equal(test.X, X_test[start:stop]), "X_test differs")
