"""allreduce and broadcast under a real mpiexec, against a numpy reference, on every rank."""

import functools

import numpy as np
import pytest
from mpi_asserts import assert_all

from mpiml.comm import ALGORITHMS, allreduce, broadcast

pytestmark = pytest.mark.mpi

REDUCE = {"sum": np.sum, "max": np.max, "min": np.min}
UFUNCS = {"sum": np.add, "max": np.maximum, "min": np.minimum}
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


def ring_order_reference(inputs: np.ndarray, combine) -> np.ndarray:
    """The ring's documented order: chunk c (p chunks of sizes differing by at most one) is
    reduced over the ranks c, c+1, ..., c-1 (mod p), each rank combining its own values first."""
    p, n = inputs.shape
    bounds = np.linspace(0, n, p + 1).astype(np.int64)
    out = np.empty(n, inputs.dtype)
    for c in range(p):
        lo, hi = bounds[c], bounds[c + 1]
        acc = inputs[c, lo:hi].copy()
        for step in range(1, p):
            acc = combine(inputs[(c + step) % p, lo:hi], acc)
        out[lo:hi] = acc
    return out


def ring_cases(p: int, itemsize: int) -> list[tuple[int, int, int]]:
    """(length, copy_limit, segment) covering both ways of the ring: the 2-rank swap through
    scratch (halves <= copy_limit; other rank counts take segments) and segments combined in
    place, with chunks just below, at and above a multiple of the segment, halves on either
    side of the copy limit, one-element segments, and buffers shorter than p."""
    whole, seg = 1 << 40, 16 * itemsize
    cases = [(n, whole, seg) for n in (1, max(p - 1, 1), p + 1, p * 64 - 1, p * 64 + 1, 10_007)]
    cases += [(n, 0, seg) for n in (1, max(p - 1, 1), p * 64 - 1, p * 64, p * 64 + 1, 10_007)]
    cases += [(p * 64, 64 * itemsize, seg), (p * 64 + 1, 64 * itemsize, seg),
              (3 * p + 2, 0, itemsize)]
    return cases


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", list(REDUCE))
def test_ring_reduces_in_its_documented_order_on_both_paths(comm, dtype, op):
    """Bit for bit the order mpiml.comm.ring documents, on every rank and on a repeat; for
    floats that also bounds the error against numpy (checked through allreduce above)."""
    from mpiml.comm.ring import ring_allreduce

    p, rank = comm.size, comm.rank
    combine = UFUNCS[op]
    for n, limit, segment in ring_cases(p, np.dtype(dtype).itemsize):
        case = f"n={n}, copy_limit={limit}, segment={segment}"
        inputs = every_rank_data(p, n, dtype)
        expected = ring_order_reference(inputs, combine)
        results = []
        for _ in range(2):
            buf = inputs[rank].copy()
            ring_allreduce(buf, comm, combine, copy_limit=limit, segment=segment)
            results.append(buf.tobytes())
        assert_all(results[0] == expected.tobytes(), f"{case}: not the documented order's bits")
        assert_all(results[0] == results[1], f"{case}: a repeat gave other bits")
        everyone = comm.allgather(results[0])
        assert_all(len(set(everyone)) == 1, f"{case}: ranks hold different bits")
