"""Moving numpy buffers between ranks: allreduce (native, ring, tree, auto), broadcast, gathers,
and the all-to-all exchange of bytes that rebalances rows.

Every function takes ``comm`` explicitly (default ``MPI.COMM_WORLD``) and knows nothing of
models. ``mpi4py.MPI`` is imported lazily (:func:`mpiml.comm.ulfm.mpi`), so that ``import mpiml``
never initialises MPI. A run reduces through one :class:`mpiml.comm.Reducer`, which calls these.

Algorithms for :func:`allreduce`:

* ``native`` -- ``MPI_Allreduce`` of the MPI library;
* ``ring``   -- reduce-scatter then allgather between ring neighbours (bandwidth-optimal:
  each rank sends ``2 (p-1)/p`` of the buffer; :mod:`mpiml.comm.ring`);
* ``tree``   -- recursive doubling with the standard fix-up for non-power-of-two rank
  counts (latency-optimal: ``ceil(log2 p)`` rounds of full-buffer exchanges);
* ``auto``   -- ``native`` below ``ring_threshold`` bytes, ``ring`` from there on. The
  threshold is an argument (and a config field); its default comes from
  ``scripts/bench_allreduce.py`` measured on the reference machine (docs/benchmarks.md).

All algorithms are deterministic: for the same inputs on the same rank count they give the same
bits on every run, and every rank ends with bit-identical buffers (ring: chunk ``c`` is reduced in
the order of the ranks ``c, c+1, ..., c-1`` and then copied; tree: partners combine in rank order).
"""

from __future__ import annotations

import threading

import numpy as np

from .ring import ring_allreduce
from .ulfm import mpi as _mpi
from .ulfm import translating_failures

ALGORITHMS = ("native", "ring", "tree", "auto")
OPS = ("sum", "max", "min")
DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int32), np.dtype(np.int64))

#: Default size (bytes) from which ``auto`` switches from ``native`` to ``ring``. Measured with
#: scripts/bench_allreduce.py (docs/benchmarks.md) on 2 and 4 ranks with MPICH's shared-memory
#: transport: the ring wins on 2 ranks at 1 MiB and from 8 MiB, ties or loses by up to 1.2x at
#: 2-8 MiB on 4 ranks, and wins on both from 16 MiB (0.6-0.9x native).
DEFAULT_RING_THRESHOLD = 16 << 20

_NUMPY_OPS = {"sum": np.add, "max": np.maximum, "min": np.minimum}
_TAG_TREE = 18


class CollectiveError(RuntimeError):
    """An error that every rank of a communicator raised together: buffers that differ across
    ranks, or any error passed to :func:`mpiml.comm.raise_together` that cannot keep its type."""


def world(comm=None):
    """Return ``comm``, or ``MPI.COMM_WORLD`` when it is None."""
    return _mpi().COMM_WORLD if comm is None else comm


def rank_and_size(comm=None) -> tuple[int, int]:
    """(rank, size) of ``comm`` (default COMM_WORLD)."""
    comm = world(comm)
    return comm.Get_rank(), comm.Get_size()


def _check_buffer(buf, op: str, algorithm: str) -> None:
    if not isinstance(buf, np.ndarray):
        raise TypeError(f"allreduce needs a numpy array, got {type(buf).__name__}")
    if not buf.flags.c_contiguous:
        raise ValueError("allreduce needs a C-contiguous buffer (use np.ascontiguousarray)")
    if not buf.flags.writeable:
        raise ValueError("allreduce works in place and needs a writeable buffer")
    if buf.dtype not in DTYPES:
        names = ", ".join(d.name for d in DTYPES)
        raise TypeError(f"allreduce does not support dtype {buf.dtype}; supported: {names}")
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; valid ops: {', '.join(OPS)}")
    if algorithm not in ALGORITHMS:
        valid = ", ".join(ALGORITHMS)
        raise ValueError(f"unknown algorithm {algorithm!r}; valid algorithms: {valid}")


def resolve_algorithm(algorithm: str, buf: np.ndarray, size: int, ring_threshold: int) -> str:
    """The algorithm ``auto`` stands for with this buffer: the ring from ``ring_threshold``
    bytes on (when every rank gets at least one element of it), native below."""
    if algorithm != "auto":
        return algorithm
    return "ring" if buf.nbytes >= ring_threshold and buf.size >= size else "native"


def _check_same_length(buf: np.ndarray, comm) -> None:
    """Raise on every rank if ranks passed buffers of different length or dtype.

    One 3-integer MAX allreduce: (len, -len, dtype code). Cheap next to any real message, and it
    turns a would-be hang or silent corruption into the same clear error on all ranks.
    """
    MPI = _mpi()
    code = DTYPES.index(buf.dtype)
    probe = np.array([buf.size, -buf.size, code, -code], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, probe, op=MPI.MAX)
    if probe[0] != -probe[1] or probe[2] != -probe[3]:
        lengths = comm.allgather((buf.size, buf.dtype.name))
        detail = ", ".join(f"rank {r}: {n} x {d}" for r, (n, d) in enumerate(lengths))
        raise CollectiveError(f"allreduce buffers differ across ranks ({detail})")


@translating_failures
def allreduce(
    buf: np.ndarray,
    comm=None,
    op: str = "sum",
    algorithm: str = "auto",
    *,
    ring_threshold: int = DEFAULT_RING_THRESHOLD,
    validate: bool = True,
) -> np.ndarray:
    """Reduce ``buf`` element-wise over all ranks of ``comm``, in place, and return it.

    ``buf`` must be a writeable C-contiguous float32/float64/int32/int64 array of the same length
    and dtype on every rank. ``validate`` adds one tiny allreduce that checks this; turn it off
    only in a hot loop whose buffer length is already agreed.
    """
    _check_buffer(buf, op, algorithm)
    comm = world(comm)
    if validate:
        _check_same_length(buf, comm)
    size = comm.Get_size()
    if size == 1 or buf.size == 0:
        return buf
    flat = buf.reshape(-1)
    # auto below the threshold is native at native's cost: the test inline, no call
    if algorithm == "native" or (algorithm == "auto" and (buf.nbytes < ring_threshold
                                                          or buf.size < size)):
        MPI = _mpi()
        comm.Allreduce(MPI.IN_PLACE, flat, op=getattr(MPI, op.upper()))
        return buf
    algorithm = resolve_algorithm(algorithm, buf, size, ring_threshold)
    if algorithm == "ring":
        ring_allreduce(flat, comm, _NUMPY_OPS[op])
    else:
        _tree_allreduce(flat, comm, _NUMPY_OPS[op])
    return buf


def _tree_allreduce(flat: np.ndarray, comm, combine) -> None:
    """Recursive doubling; non-power-of-two counts fold the first 2r ranks into r first.

    With p = 2^k + r, even ranks below 2r hand their data to the next odd rank and sit out; the
    remaining 2^k ranks exchange full buffers with partner ``newrank ^ mask`` for each mask and
    combine in rank order (lower rank's data first), so both partners get identical bits; finally
    the odd ranks send the result back to the even ranks that sat out.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    pof2 = 1 << (size.bit_length() - 1)
    extra = size - pof2
    scratch = np.empty_like(flat)
    if rank < 2 * extra:
        if rank % 2 == 0:
            comm.Send(flat, dest=rank + 1, tag=_TAG_TREE)
            newrank = -1
        else:
            comm.Recv(scratch, source=rank - 1, tag=_TAG_TREE)
            combine(scratch, flat, out=flat)
            newrank = rank // 2
    else:
        newrank = rank - extra
    if newrank >= 0:
        mask = 1
        while mask < pof2:
            partner_new = newrank ^ mask
            partner = partner_new * 2 + 1 if partner_new < extra else partner_new + extra
            comm.Sendrecv(flat, dest=partner, sendtag=_TAG_TREE, recvbuf=scratch, source=partner,
                          recvtag=_TAG_TREE)
            if partner < rank:
                combine(scratch, flat, out=flat)
            else:
                combine(flat, scratch, out=flat)
            mask <<= 1
    if rank < 2 * extra:
        if rank % 2 == 1:
            comm.Send(flat, dest=rank - 1, tag=_TAG_TREE)
        else:
            comm.Recv(flat, source=rank + 1, tag=_TAG_TREE)


class PendingAllreduce:
    """An allreduce in flight; :meth:`wait` blocks until ``buf`` holds the result and returns it.

    ``native`` uses ``MPI_Iallreduce``; ``ring`` and ``tree`` run the blocking algorithm in a
    helper thread (MPI is initialised with MPI_THREAD_MULTIPLE by mpi4py). Either way the caller
    must not start another collective on ``comm`` before :meth:`wait` returns.
    """

    def __init__(self, buf: np.ndarray, request=None, thread: threading.Thread | None = None,
                 errors: list | None = None):
        self.buf, self._request, self._thread, self._errors = buf, request, thread, errors

    @translating_failures
    def wait(self) -> np.ndarray:
        if self._request is not None:
            self._request.Wait()
        if self._thread is not None:
            self._thread.join()
            if self._errors:
                raise self._errors[0]
        return self.buf


def start_allreduce(buf: np.ndarray, comm=None, op: str = "sum", algorithm: str = "auto", *,
                    ring_threshold: int = DEFAULT_RING_THRESHOLD) -> PendingAllreduce:
    """Start :func:`allreduce` without waiting for it (for overlapping communication with
    computation). Buffers must already agree in length across ranks: no validation probe."""
    _check_buffer(buf, op, algorithm)
    comm = world(comm)
    size = comm.Get_size()
    if size == 1 or buf.size == 0:
        return PendingAllreduce(buf)
    algorithm = resolve_algorithm(algorithm, buf, size, ring_threshold)
    if algorithm == "native":
        MPI = _mpi()
        mpi_op = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op]
        return PendingAllreduce(buf, request=comm.Iallreduce(MPI.IN_PLACE, buf.reshape(-1),
                                                             op=mpi_op))
    if _mpi().Query_thread() < _mpi().THREAD_MULTIPLE:
        raise RuntimeError(f"non-blocking {algorithm} allreduce needs MPI_THREAD_MULTIPLE; "
                           "use algorithm 'native'")
    errors: list[BaseException] = []
    reduce = ring_allreduce if algorithm == "ring" else _tree_allreduce

    def run():
        try:
            reduce(buf.reshape(-1), comm, _NUMPY_OPS[op])
        except BaseException as exc:  # noqa: BLE001 -- re-raised in wait()
            errors.append(exc)

    thread = threading.Thread(target=run, name="mpiml-allreduce", daemon=True)
    thread.start()
    return PendingAllreduce(buf, thread=thread, errors=errors)


@translating_failures
def gather_rows(local: np.ndarray, comm=None, root: int = 0) -> np.ndarray | None:
    """Concatenate every rank's rows (1-D or 2-D C-contiguous array) on ``root``, in rank order.

    Returns the stacked array on ``root`` and None elsewhere. For results sized like the data's
    row count (predictions), not for the data itself. Arrays MPI has no datatype for (strings,
    objects: class labels) are gathered as pickled objects.
    """
    comm = world(comm)
    local = np.ascontiguousarray(local)
    if local.dtype.kind in "OUS":
        parts = comm.gather(local, root=root)
        return None if parts is None else np.concatenate(parts)
    counts = comm.allgather(local.size)
    shapes = comm.allgather(local.shape[1:])
    if len(set(shapes)) != 1:
        raise CollectiveError(f"gather_rows: trailing shapes differ across ranks: {shapes}")
    if comm.Get_rank() != root:
        comm.Gatherv(local, None, root=root)
        return None
    out = np.empty((sum(counts) // max(1, int(np.prod(shapes[0]))),) + tuple(shapes[0]),
                   dtype=local.dtype)
    comm.Gatherv(local, (out, counts), root=root)
    return out


@translating_failures
def exchange_bytes(send: np.ndarray, send_counts, comm=None) -> tuple[np.ndarray, np.ndarray]:
    """Send ``send_counts[d]`` bytes of ``send`` to every rank d, in rank order (rank 0's bytes
    first), and return ``(received, received_counts)``: the bytes from every rank in rank order,
    and how many came from each. Collective: an Alltoall of the counts, then one Alltoallv.

    ``send`` is a 1-D uint8 array of ``sum(send_counts)`` bytes (the caller sizes it from the
    counts). Besides it, only the received bytes are allocated. Past 2**31 bytes between two
    ranks, mpi4py needs an MPI library with MPI-4's large-count routines.
    """
    comm = world(comm)
    MPI = _mpi()
    send_counts = np.asarray(send_counts, dtype=np.int64)
    received_counts = np.empty_like(send_counts)
    comm.Alltoall(send_counts, received_counts)
    received = np.empty(int(received_counts.sum()), dtype=np.uint8)
    comm.Alltoallv([send, (send_counts, _offsets(send_counts)), MPI.BYTE],
                   [received, (received_counts, _offsets(received_counts)), MPI.BYTE])
    return received, received_counts


def _offsets(counts: np.ndarray) -> np.ndarray:
    """Where each rank's bytes start in a buffer holding them in rank order."""
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


@translating_failures
def broadcast(buf: np.ndarray, comm=None, root: int = 0) -> np.ndarray:
    """Copy ``buf`` from ``root`` to every rank of ``comm``, in place, and return it."""
    if not isinstance(buf, np.ndarray) or not buf.flags.c_contiguous or not buf.flags.writeable:
        raise ValueError("broadcast needs a writeable C-contiguous numpy array")
    world(comm).Bcast(buf, root=root)
    return buf


@translating_failures
def broadcast_object(obj, comm=None, root: int = 0):
    """Broadcast a small picklable Python object (configs, metadata) from ``root``."""
    return world(comm).bcast(obj, root=root)


@translating_failures
def allgather_object(obj, comm=None) -> list:
    """Every rank's small Python object, in rank order, on every rank."""
    return world(comm).allgather(obj)
