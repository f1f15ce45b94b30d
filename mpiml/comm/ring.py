"""The ring allreduce: reduce-scatter then allgather between ring neighbours (rank -> rank + 1).

The buffer is cut into ``p`` chunks whose sizes differ by at most one (some are empty when the
buffer is shorter than ``p``). Chunk ``c`` starts on rank ``c`` and travels right through the
reduce-scatter: rank ``c + 1`` computes ``x[c+1] op x[c]``, rank ``c + 2`` computes
``x[c+2] op (x[c+1] op x[c])``, and so on (ranks mod ``p``), so every element of chunk ``c`` is
reduced in the order of the ranks ``c, c+1, ..., c-1``, the same on every run. Rank ``c - 1``
ends with the result, and the allgather copies it to every other rank: all ranks hold the same
bits.

How the data moves is chosen by measurement (docs/benchmarks.md); it never changes the order
above. Writing memory that the neighbour has just read through MPICH's single-copy transport
(CMA) costs up to 4x a plain write, and past the CPU cache every extra pass costs memory
bandwidth, so:

* on 2 ranks, with halves of at most ``copy_limit`` bytes, the ring is a swap of halves: each
  rank's reduced half is combined into scratch and sent from there, and copied into the buffer
  while the neighbour reads it (the copy then overlaps the transfer; on 4 ranks sharing 2 cores
  it cannot, and this path measured slower than the next one);
* otherwise the reduce-scatter exchanges every chunk in segments of ``segment`` bytes at the
  same offsets on every rank, each received into one small scratch segment that stays in cache
  and combined into the buffer in place; the allgather moves whole chunks.
"""

from __future__ import annotations

import numpy as np

from .ulfm import mpi as _mpi

_TAG = 17

#: Largest half (bytes) that 2 ranks swap through scratch (see above).
COPY_LIMIT = 512 << 10
#: Segment (bytes) of the reduce-scatter's exchanges.
SEGMENT = 256 << 10


def ring_allreduce(flat: np.ndarray, comm, combine, copy_limit: int = COPY_LIMIT,
                   segment: int = SEGMENT) -> None:
    """Reduce the 1-D contiguous ``flat`` over the ranks of ``comm`` in place with the numpy
    ufunc ``combine`` (``np.add``, ``np.maximum``, ``np.minimum``), in the order above."""
    rank, size = comm.Get_rank(), comm.Get_size()
    if size == 1:
        return
    bounds = np.linspace(0, flat.size, size + 1).astype(np.int64)
    chunk = [flat[bounds[i] : bounds[i + 1]] for i in range(size)]
    width = max(c.size for c in chunk)
    if size == 2 and width * flat.itemsize <= copy_limit:
        _swap_halves(chunk, comm, combine)
        return
    right, left = (rank + 1) % size, (rank - 1) % size
    segment = max(1, segment // flat.itemsize)
    scratch = np.empty(min(segment, width), dtype=flat.dtype)
    for step in range(size - 1):
        send = chunk[(rank - step) % size]
        mine = chunk[(rank - step - 1) % size]
        for lo in range(0, width, segment):  # the same count on every rank; some may be empty
            part = mine[lo : lo + segment]
            incoming = scratch[: part.size]
            comm.Sendrecv(send[lo : lo + segment], dest=right, sendtag=_TAG, recvbuf=incoming,
                          source=left, recvtag=_TAG)
            combine(part, incoming, out=part)
    for step in range(size - 1):
        comm.Sendrecv(chunk[(rank + 1 - step) % size], dest=right, sendtag=_TAG,
                      recvbuf=chunk[(rank - step) % size], source=left, recvtag=_TAG)


def _swap_halves(chunk: list, comm, combine) -> None:
    """The 2-rank ring: send my half (chunk ``rank``), reduce the other into scratch, send that
    back and copy it into the buffer while the neighbour reads it."""
    rank = comm.Get_rank()
    other = 1 - rank
    mine = chunk[other]
    reduced = np.empty_like(mine)
    comm.Sendrecv(chunk[rank], dest=other, sendtag=_TAG, recvbuf=reduced, source=other,
                  recvtag=_TAG)
    combine(mine, reduced, out=reduced)
    requests = [comm.Irecv(chunk[rank], source=other, tag=_TAG),
                comm.Isend(reduced, dest=other, tag=_TAG)]
    mine[...] = reduced
    _mpi().Request.Waitall(requests)
