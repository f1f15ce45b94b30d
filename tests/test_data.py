"""Serial tests of mpiml.data: the row split, loading at one rank, streaming and the batch order.

The helpers ``write_dense`` and ``write_csr`` are shared with the other data tests.
"""

import tracemalloc

import h5py
import numpy as np
import pytest
import scipy.sparse
from hypothesis import given, settings
from hypothesis import strategies as st

from mpiml.data import (
    BatchPlan,
    Shard,
    epoch_permutation,
    iter_chunks,
    load_shard,
    open_shard,
    row_range,
)


def write_dense(path, X, y=None, x="X", y_name="y"):
    """An HDF5 file with a dense X (and y when given)."""
    with h5py.File(path, "a") as handle:
        handle[x] = X
        if y is not None:
            handle[y_name] = y
    return str(path)


def write_csr(path, matrix, y=None, x="X"):
    """An HDF5 file with ``matrix`` in the CSR group layout (and y when given)."""
    matrix = scipy.sparse.csr_matrix(matrix)
    with h5py.File(path, "a") as handle:
        group = handle.create_group(x)
        group["data"], group["indices"], group["indptr"] = (matrix.data, matrix.indices,
                                                              matrix.indptr)
        group.attrs["shape"] = matrix.shape
        if y is not None:
            handle["y"] = y
    return str(path)


def random_data(n=53, d=7, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.integers(0, 3, n)


# -- row_range -------------------------------------------------------------------------------

@given(n_rows=st.integers(0, 10_000), size=st.integers(1, 64))
def test_row_range_partitions_rows_evenly_in_rank_order(n_rows, size):
    ranges = [row_range(n_rows, rank, size) for rank in range(size)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n_rows
    for (_, stop), (start, _) in zip(ranges[:-1], ranges[1:], strict=True):
        assert stop == start  # contiguous: cover everything, no overlap
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1
    extra = n_rows % size
    assert all(s == n_rows // size + (rank < extra) for rank, s in enumerate(sizes))


@pytest.mark.parametrize(("n_rows", "rank", "size"), [(-1, 0, 1), (5, 2, 2), (5, 0, 0), (5, -1, 2)])
def test_row_range_rejects_impossible_arguments(n_rows, rank, size):
    with pytest.raises(ValueError, match="row_range"):
        row_range(n_rows, rank, size)


# -- load_shard at one rank ------------------------------------------------------------------

def test_dense_shard_is_the_whole_file_at_one_rank(tmp_path):
    X, y = random_data()
    path = write_dense(tmp_path / "d.h5", X.astype(np.float32), y)
    shard = load_shard(path)
    assert isinstance(shard, Shard)
    assert (shard.start, shard.stop, shard.n_total, shard.n_features) == (0, 53, 53, 7)
    assert shard.n_local == 53 and shard.classes is None and shard.n_classes is None
    assert shard.X.dtype == np.float32 and shard.X.flags.c_contiguous
    np.testing.assert_array_equal(shard.X, X.astype(np.float32))
    assert shard.y.dtype == y.dtype
    np.testing.assert_array_equal(shard.y, y)


@pytest.mark.parametrize(("stored", "asked", "expected"), [
    (np.float64, np.float32, np.float32), (np.float32, np.float64, np.float64),
    (np.int16, None, np.float64), (np.float16, None, np.float64), (np.bool_, "float32",
                                                                    np.float32)])
def test_dtype_conversion(tmp_path, stored, asked, expected):
    X, _ = random_data()
    X = (X > 0) if stored is np.bool_ else (X * 10).astype(stored)
    path = write_dense(tmp_path / "d.h5", X)
    shard = load_shard(path, y=None, dtype=asked)
    assert shard.X.dtype == expected and shard.y is None
    np.testing.assert_array_equal(shard.X, X.astype(expected))


def test_dtype_conversion_never_holds_two_full_copies(tmp_path):
    X = np.random.default_rng(1).standard_normal((200_000, 10))  # 16 MB as float64
    path = write_dense(tmp_path / "big.h5", X)
    tracemalloc.start()
    try:
        shard = load_shard(path, y=None, dtype=np.float32)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.25 * shard.X.nbytes, f"peak {peak / 2**20:.1f} MB for an 8 MB shard"
    np.testing.assert_array_equal(shard.X, X.astype(np.float32))


def test_csr_shard_equals_the_matrix(tmp_path):
    matrix = scipy.sparse.random(40, 30, density=0.2, format="csr", random_state=3)
    y = np.arange(40.0)
    path = write_csr(tmp_path / "s.h5", matrix, y)
    shard = load_shard(path, task="regression")
    assert scipy.sparse.isspmatrix_csr(shard.X) and shard.n_features == 30
    assert shard.X.indices.dtype == np.int32  # fits: no int64 copy inside scipy
    np.testing.assert_array_equal(shard.X.toarray(), matrix.toarray())
    assert shard.y.dtype == np.float64
    np.testing.assert_array_equal(shard.y, y)


def test_csr_dtype_and_empty_rows(tmp_path):
    dense = np.zeros((6, 4))
    dense[1, 2], dense[4, 0] = 3.0, -1.0
    path = write_csr(tmp_path / "s.h5", dense.astype(np.float64))
    shard = load_shard(path, y=None, dtype="float32")
    assert shard.X.dtype == np.float32
    np.testing.assert_array_equal(shard.X.toarray(), dense)


@pytest.mark.parametrize(("labels", "task", "classes", "mapped"), [
    ([-1, 1, 1, -1], "binary", [-1, 1], [0, 1, 1, 0]),
    ([2.0, 5.0, 2.0, 5.0], "binary", [2.0, 5.0], [0, 1, 0, 1]),
    ([9, 3, 7, 3], "multiclass", [3, 7, 9], [2, 0, 1, 0]),
    ([True, False, True, True], "binary", [False, True], [1, 0, 1, 1]),
])
def test_labels_map_to_sorted_class_indices(tmp_path, labels, task, classes, mapped):
    path = write_dense(tmp_path / "c.h5", np.ones((4, 2)), np.array(labels))
    shard = load_shard(path, task=task)
    np.testing.assert_array_equal(shard.classes, classes)
    assert shard.y.dtype == np.int64 and shard.n_classes == len(classes)
    np.testing.assert_array_equal(shard.y, mapped)
    assert shard.task == task


def test_named_data_sets_and_groups(tmp_path):
    X, y = random_data()
    path = write_dense(tmp_path / "n.h5", X, y, x="train/features", y_name="train/target")
    shard = load_shard(path, x="train/features", y="train/target", task="multiclass")
    np.testing.assert_array_equal(shard.X, X)
    np.testing.assert_array_equal(shard.classes, [0, 1, 2])


def test_file_is_closed_after_loading(tmp_path):
    X, y = random_data()
    path = write_dense(tmp_path / "c.h5", X, y)
    load_shard(path)
    with h5py.File(path, "w"):  # would fail if a read handle were still open
        pass


# -- streaming -------------------------------------------------------------------------------

@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("chunk_rows", [1, 7, 53, 1000])
def test_chunks_concatenate_to_the_shard(tmp_path, sparse, chunk_rows):
    X, y = random_data()
    X[X < 0.5] = 0.0
    path = (write_csr if sparse else write_dense)(tmp_path / "b.h5", X, y)
    chunks = list(iter_chunks(path, chunk_rows=chunk_rows, task="multiclass"))
    assert len(chunks) == -(-53 // chunk_rows)
    assert all(X_chunk.shape[0] <= chunk_rows for X_chunk, _ in chunks)
    stack = scipy.sparse.vstack if sparse else np.vstack
    joined = stack([X_chunk for X_chunk, _ in chunks])
    np.testing.assert_array_equal(joined.toarray() if sparse else joined, X)
    np.testing.assert_array_equal(np.concatenate([y_chunk for _, y_chunk in chunks]), y)


def test_open_shard_knows_the_layout_before_reading_and_allows_several_passes(tmp_path):
    X, y = random_data()
    path = write_dense(tmp_path / "o.h5", X.astype(np.float32), y + 10)
    with open_shard(path, task="multiclass", dtype="float64") as lazy:
        assert (lazy.n_total, lazy.n_features, lazy.sparse) == (53, 7, False)
        np.testing.assert_array_equal(lazy.classes, [10, 11, 12])
        for _ in range(2):
            rows = sum(len(y_block) for _, y_block in lazy.chunks(chunk_rows=10))
            assert rows == 53
        shard = lazy.load()
    assert shard.X.dtype == np.float64
    np.testing.assert_array_equal(shard.y, y)


def test_default_chunk_is_about_16_megabytes(tmp_path):
    X = np.zeros((70_000, 64), dtype=np.float32)  # 17.9 MB
    path = write_dense(tmp_path / "z.h5", X)
    sizes = [len(block) for block, _ in iter_chunks(path, y=None)]
    assert sizes == [65_536, 70_000 - 65_536]


# -- batch order -----------------------------------------------------------------------------

def test_epoch_permutation_depends_on_seed_and_epoch_only():
    first = epoch_permutation(1000, 7, 3)
    assert np.array_equal(first, np.random.default_rng((7, 3)).permutation(1000))
    assert np.array_equal(first, epoch_permutation(1000, 7, 3))
    assert not np.array_equal(first, epoch_permutation(1000, 7, 4))
    assert not np.array_equal(first, epoch_permutation(1000, 8, 3))
    with pytest.raises(ValueError, match="seed"):
        epoch_permutation(10, -1, 0)


def global_batches(n_total, batch_size, seed, epoch, size):
    """Each global batch as rank-order concatenation of every simulated rank's rows."""
    plans = [BatchPlan(n_total, batch_size, seed, *row_range(n_total, rank, size))
             for rank in range(size)]
    return [np.concatenate([plan.local_rows(epoch, t) + plan.start for plan in plans])
            for t in range(plans[0].n_batches(epoch))]


@settings(max_examples=60, deadline=None)
@given(n_total=st.integers(1, 300), batch_size=st.integers(1, 64), seed=st.integers(0, 2**32),
       epoch=st.integers(0, 5), size=st.integers(1, 7))
def test_global_batches_do_not_depend_on_the_rank_count(n_total, batch_size, seed, epoch, size):
    size = min(size, n_total)
    perm = epoch_permutation(n_total, seed, epoch)
    batches = global_batches(n_total, batch_size, seed, epoch, size)
    assert len(batches) == -(-n_total // batch_size)
    for t, rows in enumerate(batches):
        assert np.array_equal(rows, np.sort(perm[t * batch_size:(t + 1) * batch_size]))
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(n_total))


def test_last_partial_batch_is_kept():
    plan = BatchPlan(10, 4, seed=0)
    assert plan.n_batches(0) == 3
    assert [plan.batch_rows(t) for t in range(3)] == [4, 4, 2]
    assert [len(plan.local_rows(0, t)) for t in range(3)] == [4, 4, 2]


def test_a_rank_may_own_no_row_of_a_batch():
    plan = BatchPlan(1000, 2, seed=1, start=0, stop=1)
    sizes = [len(plan.local_rows(0, t)) for t in range(plan.n_batches(0))]
    assert sum(sizes) == 1 and sizes.count(0) == len(sizes) - 1
    assert plan.local_rows(0, 0).dtype == np.intp


def test_local_rows_are_ascending_local_indices_and_epochs_are_cached():
    plan = BatchPlan(500, 64, seed=3, start=100, stop=300)
    rows = plan.local_rows(2, 1)
    assert np.all(np.diff(rows) > 0) and rows.min() >= 0 and rows.max() < 200
    again = [plan.local_rows(epoch, 1) for epoch in (2, 3, 2)]
    assert np.array_equal(again[0], rows) and np.array_equal(again[2], rows)
    assert not np.array_equal(again[1], rows)


@pytest.mark.parametrize("sparse", [False, True])
def test_shard_batch_gathers_rows_and_labels(tmp_path, sparse):
    X, y = random_data()
    shard = load_shard((write_csr if sparse else write_dense)(tmp_path / "g.h5", X, y))
    rows = np.array([3, 4, 40])
    X_batch, y_batch, w_batch = shard.batch(rows)
    np.testing.assert_array_equal(X_batch.toarray() if sparse else X_batch, X[rows])
    np.testing.assert_array_equal(y_batch, y[rows])
    assert w_batch is None  # no sample weights
    empty, _, _ = shard.batch(np.empty(0, dtype=np.intp))
    assert empty.shape == (0, 7)


def test_plan_for_shard_uses_its_rows(tmp_path):
    X, y = random_data()
    shard = load_shard(write_dense(tmp_path / "p.h5", X, y))
    plan = BatchPlan.for_shard(shard, batch_size=16, seed=0)
    assert (plan.n_total, plan.start, plan.stop) == (53, 0, 53)


@pytest.mark.parametrize("arguments", [dict(n_total=0, batch_size=1, seed=0),
                                       dict(n_total=5, batch_size=0, seed=0),
                                       dict(n_total=5, batch_size=1, seed=-1),
                                       dict(n_total=5, batch_size=1, seed=0, start=3, stop=2)])
def test_batch_plan_rejects_bad_arguments(arguments):
    with pytest.raises(ValueError):
        BatchPlan(**arguments)


def test_batch_index_out_of_range():
    plan = BatchPlan(10, 4, seed=0)
    with pytest.raises(IndexError, match="0..2"):
        plan.local_rows(0, 3)
