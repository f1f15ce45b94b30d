"""allreduce and broadcast under a real mpiexec, against a numpy reference, on every rank."""

import functools

import numpy as np
import pytest
from mpi_asserts import assert_all

from mpiml.comm import ALGORITHMS, allreduce, broadcast

pytestmark = pytest.mark.mpi

REDUCE = {"sum": np.sum, "max": np.max, "min": np.min}
DTYPES = [np.float32, np.float64, np.int32, np.int64]


def rank_data(rank: int, n: int, dtype) -> np.ndarray:
    """Deterministic per-rank data; integers stay small so int32 sums cannot overflow."""
    values = np.random.default_rng([rank, n]).standard_normal(n) * 100
    return values.astype(dtype)


@functools.cache
def every_rank_data(p: int, n: int, dtype) -> np.ndarray:
    """Every rank's data, stacked (made once per size and dtype: every algorithm and op of the
    test compares against the same inputs, and drawing them dominated the layer's time)."""
    return np.stack([rank_data(r, n, dtype) for r in range(p)])


def sizes(p: int) -> list[int]:
    return sorted({0, 1, 2, max(p - 1, 0), p, p + 1, 1000, (1 << 20) + 3})


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", list(REDUCE))
def test_allreduce_matches_numpy_and_is_identical_on_every_rank(comm, algorithm, dtype, op):
    p, rank = comm.size, comm.rank
    for n in sizes(p):
        inputs = every_rank_data(p, n, dtype)
        expected = REDUCE[op](inputs, axis=0) if n else np.zeros(0, dtype)
        buf = inputs[rank].copy()
        out = allreduce(buf, comm, op=op, algorithm=algorithm, ring_threshold=4096)
        assert_all(out is buf, "allreduce must work in place")
        if np.issubdtype(dtype, np.integer) or op != "sum":
            close = np.array_equal(buf, expected)
        else:
            scale = np.abs(inputs).sum(axis=0) if n else 0
            eps = np.finfo(dtype).eps
            close = bool(np.all(np.abs(buf - expected) <= 4 * p * eps * scale))
        assert_all(close, f"n={n}: result differs from numpy")
        everyone = comm.allgather(buf.tobytes())
        assert_all(len(set(everyone)) == 1, f"n={n}: ranks hold different bits")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_allreduce_is_deterministic_across_repeats(comm, algorithm):
    first = rank_data(comm.rank, 100_003, np.float64)
    reference = allreduce(first.copy(), comm, algorithm=algorithm, ring_threshold=4096)
    for _ in range(3):
        again = allreduce(first.copy(), comm, algorithm=algorithm, ring_threshold=4096)
        assert_all(np.array_equal(again.view(np.int64), reference.view(np.int64)),
                   "repeat run gave different bits")


def test_allreduce_of_2d_buffer_keeps_shape(comm):
    buf = np.full((3, 4), comm.rank + 1.0)
    allreduce(buf, comm, algorithm="ring")
    assert_all(buf.shape == (3, 4) and np.all(buf == comm.size * (comm.size + 1) / 2))


def test_mismatched_lengths_raise_on_every_rank(comm):
    from mpiml.comm import CollectiveError

    buf = np.zeros(10 + (comm.rank == comm.size - 1 and comm.size > 1), dtype=np.float64)
    if comm.size == 1:
        allreduce(buf, comm)
        return
    with pytest.raises(CollectiveError, match="differ across ranks"):
        allreduce(buf, comm)


def test_mismatched_dtypes_raise_on_every_rank(comm):
    from mpiml.comm import CollectiveError

    dtype = np.float32 if comm.rank == 0 and comm.size > 1 else np.float64
    buf = np.zeros(8, dtype=dtype)
    if comm.size == 1:
        allreduce(buf, comm)
        return
    with pytest.raises(CollectiveError, match="float32"):
        allreduce(buf, comm)


@pytest.mark.parametrize("root_choice", ["first", "last"])
def test_broadcast_copies_root_buffer(comm, root_choice):
    root = 0 if root_choice == "first" else comm.size - 1
    buf = np.full(1000, float(comm.rank))
    broadcast(buf, comm, root=root)
    assert_all(np.all(buf == root))


def test_sub_communicator_is_respected(comm):
    """A caller's own communicator: each half reduces only its own ranks."""
    color = comm.rank % 2
    sub = comm.Split(color, comm.rank)
    try:
        buf = np.array([1.0])
        allreduce(buf, sub, algorithm="tree")
        assert_all(buf[0] == sub.size, f"expected {sub.size}, got {buf[0]}")
    finally:
        sub.Free()


def test_raise_together_raises_same_error_everywhere(comm):
    from mpiml.comm import raise_together

    error = ValueError("bad row 7") if comm.rank == comm.size - 1 else None
    with pytest.raises(ValueError, match="bad row 7") as info:
        raise_together(error, comm)
    assert_all(getattr(info.value, "raised_on_all_ranks", False))
    raise_together(None, comm)
