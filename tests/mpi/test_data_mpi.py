"""mpiml.data on every rank: shards tile the file, classes and batches agree at any rank count."""

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
from mpi_asserts import assert_all
from test_data import write_csr, write_dense

from mpiml.comm import allgather_object, broadcast_object
from mpiml.data import BatchPlan, DataError, iter_chunks, load_shard, open_shard, row_range

pytestmark = pytest.mark.mpi

N_ROWS = 37  # not a multiple of 2, 3 or 4: uneven shards


@pytest.fixture(scope="module")
def shared_dir():
    """A directory every rank sees (made by rank 0), removed after the module's tests."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    path = broadcast_object(tempfile.mkdtemp(prefix="mpiml-data-") if comm.rank == 0 else None,
                            comm)
    yield Path(path)
    comm.Barrier()
    if comm.rank == 0:
        shutil.rmtree(path)


def made_by_rank_zero(comm, path, write):
    """Rank 0 writes the file; every rank returns its path once it exists."""
    if comm.rank == 0:
        write(path)
    comm.Barrier()
    return str(path)


def reference_data():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((N_ROWS, 6))
    X[X < 0.3] = 0.0
    return X, rng.integers(0, 4, N_ROWS)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_shards_tile_the_file_exactly(comm, shared_dir, sparse):
    X, y = reference_data()
    writer = write_csr if sparse else write_dense
    path = made_by_rank_zero(comm, shared_dir / f"tile-{sparse}.h5", lambda p: writer(p, X, y))
    shard = load_shard(path, comm, task="multiclass")
    local = shard.X.toarray() if sparse else shard.X
    assert_all((shard.start, shard.stop) == row_range(N_ROWS, comm.rank, comm.size),
               f"rows {shard.start}..{shard.stop}")
    assert_all(scipy.sparse.isspmatrix_csr(shard.X) == sparse, "layout")
    pieces = allgather_object((shard.start, shard.stop, local, shard.y), comm)
    starts = [start for start, _, _, _ in pieces]
    stops = [stop for _, stop, _, _ in pieces]
    assert_all(starts[0] == 0 and stops[-1] == N_ROWS and starts[1:] == stops[:-1],
               f"shards {list(zip(starts, stops, strict=True))} overlap or leave gaps")
    joined_X = np.vstack([piece for _, _, piece, _ in pieces])
    joined_y = np.concatenate([labels for _, _, _, labels in pieces])
    assert_all(np.array_equal(joined_X, X) and np.array_equal(joined_y, y),
               "the union of the shards differs from the file")


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_blocks_tile_the_shard_and_every_rank_gets_as_many(comm, shared_dir, sparse):
    X, y = reference_data()
    writer = write_csr if sparse else write_dense
    path = made_by_rank_zero(comm, shared_dir / f"blocks-{sparse}.h5", lambda p: writer(p, X, y))
    blocks = list(iter_chunks(path, comm, chunk_rows=4))
    counts = allgather_object(len(blocks), comm)
    assert_all(len(set(counts)) == 1, f"block counts differ: {counts}")
    start, stop = row_range(N_ROWS, comm.rank, comm.size)
    stack = scipy.sparse.vstack if sparse else np.vstack
    joined = stack([X_block for X_block, _ in blocks])
    joined = joined.toarray() if sparse else joined
    assert_all(np.array_equal(joined, X[start:stop]), "blocks differ from the rows")
    assert_all(np.array_equal(np.concatenate([b for _, b in blocks]), y[start:stop]), "labels")


def test_a_class_absent_from_some_ranks_maps_the_same_everywhere(comm, shared_dir):
    y = np.full(N_ROWS, 5)
    y[0], y[-1] = 2, 11  # class 2 only on rank 0, class 11 only on the last rank
    path = made_by_rank_zero(comm, shared_dir / "classes.h5",
                             lambda p: write_dense(p, np.ones((N_ROWS, 2)), y))
    shard = load_shard(path, comm, task="multiclass")
    everyone = allgather_object(shard.classes.tolist(), comm)
    assert_all(all(classes == [2, 5, 11] for classes in everyone), f"classes {everyone}")
    expected = np.searchsorted([2, 5, 11], y[shard.start:shard.stop])
    assert_all(np.array_equal(shard.y, expected), "labels mapped differently")
    with open_shard(path, comm, task="multiclass") as lazy:
        assert_all(np.array_equal(lazy.classes, [2, 5, 11]), "open_shard classes")


@pytest.mark.parametrize(("n_total", "batch_size"), [(37, 8), (37, 37), (37, 100), (1000, 64)])
def test_global_batch_sequence_is_identical_at_every_rank_count(comm, n_total, batch_size):
    plan = BatchPlan(n_total, batch_size, 11, *row_range(n_total, comm.rank, comm.size))
    single = BatchPlan(n_total, batch_size, 11)  # the 1-rank sequence, computed locally
    n_batches = allgather_object(plan.n_batches(0), comm)
    assert_all(n_batches == [single.n_batches(0)] * comm.size, f"batches per epoch {n_batches}")
    same = True
    for epoch in range(3):
        for t in range(single.n_batches(epoch)):
            rows = allgather_object(plan.local_rows(epoch, t) + plan.start, comm)
            same &= np.array_equal(np.concatenate(rows), single.local_rows(epoch, t))
    assert_all(same, "a global batch differs from the 1-rank sequence")


def test_nan_on_the_last_rank_raises_on_every_rank(comm, shared_dir):
    X, y = reference_data()
    X[N_ROWS - 1, 4] = np.nan
    path = made_by_rank_zero(comm, shared_dir / "nan.h5", lambda p: write_dense(p, X, y))
    raised = ""
    try:
        load_shard(path, comm)
    except DataError as exc:
        raised = str(exc)
    assert_all(f"global row {N_ROWS - 1}, column 4" in raised, f"raised {raised!r}")
    raised = ""
    try:
        for _ in iter_chunks(path, comm, chunk_rows=3):
            pass
    except DataError as exc:
        raised = str(exc)
    assert_all(f"global row {N_ROWS - 1}, column 4" in raised, f"streaming raised {raised!r}")


def test_more_ranks_than_rows_raises_on_every_rank(comm, shared_dir):
    rows = max(comm.size - 1, 0)
    path = made_by_rank_zero(comm, shared_dir / "few.h5",
                             lambda p: write_dense(p, np.ones((rows, 2)), np.zeros(rows)))
    raised = ""
    try:
        load_shard(path, comm)
    except DataError as exc:
        raised = str(exc)
    expected = "has no rows" if rows == 0 else f"has {rows} rows but the job has {comm.size}"
    assert_all(expected in raised, f"raised {raised!r}")
