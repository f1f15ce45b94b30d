"""Training rows larger than memory (``data.memory_budget``): this rank's rows of a dense HDF5
data set, read a chunk at a time when a loop asks for them instead of loaded at once.

:class:`StreamedRows` stands in for X: ``X[lo:hi]`` (at most one chunk of rows), ``X[rows]``
and ``X[row]`` read those rows (cast to the run's dtype, standardised by the run's scaler),
so the loops that go over ``X[lo:hi]`` in blocks work unchanged. A pass in row order reads
ahead one whole chunk and keeps it, so blocks smaller than a chunk cost one read per chunk.
The helpers below let the loops that take all rows at once (sums, per-row values) go over the
chunks instead; on in-memory X they are the plain call.
"""

from __future__ import annotations

import numpy as np

from ..comm import mark_raised_together
from ..models.base import TILE_BYTES
from ..models.scaling import apply_scaler
from .shard import DataError, row_range

#: One chunk of X is at most this share of ``data.memory_budget``: the loops' temporaries over
#: a chunk (the scaler's float64 copy of it and its deviations, the chunk read ahead while the
#: last is still held) stay within the budget.
CHUNK_SHARE = 8


def streams(lazy, budget: int | None, size: int) -> bool:
    """Whether the training rows of ``lazy`` (a :class:`mpiml.data.LazyShard`) stream: a
    budget is set and the largest rank's X (rank 0's, the same answer on every rank) exceeds
    it. A CSR file over the budget raises a DataError on every rank."""
    if budget is None:
        return False
    first, last = row_range(lazy.n_total, 0, size, lazy.block_rows)
    largest = (last - first) * lazy.n_features * lazy.dtype.itemsize
    if largest <= budget:
        return False
    if lazy.sparse:
        raise mark_raised_together(DataError(
            f"{lazy.path}: CSR group '{lazy.x_name}' does not fit data.memory_budget "
            f"({budget} bytes per rank) and only dense X streams: raise data.memory_budget, "
            "use more ranks, or store X dense"))
    return True


def chunk_rows_for(budget: int, n_features: int, itemsize: int, block_rows: int = 1) -> int:
    """Rows per chunk under ``budget``: whole blocks in reproducible mode, else whole tiles of
    the gradient pass (:data:`mpiml.models.base.TILE_BYTES`, so the streamed pass sums the
    same tiles as in memory); at least one block or tile."""
    row_bytes = n_features * itemsize
    unit = block_rows if block_rows > 1 else max(1, TILE_BYTES // row_bytes)
    return max(1, budget // CHUNK_SHARE // row_bytes // unit) * unit


class StreamedRows:
    """This rank's rows ``[lazy.start, lazy.stop)`` of dense X, read on demand (see the module
    docstring). ``shape``, ``dtype``, ``ndim`` and ``nbytes`` are those of the rows as they
    would be held; ``chunk_rows`` bounds one read. Every row was checked finite when built.

    The chunks read ahead go into two buffers in turn, allocated once: a fresh chunk-sized
    array per read cost page faults on every pass (glibc maps allocations over 32 MiB anew
    each time; scripts/bench_out_of_core.py). So an array of rows read in row order stays
    valid until the chunk after the next is read: a caller copies what it keeps longer (every
    loop uses a chunk, or the rows it holds, before it reads on)."""

    ndim = 2

    def __init__(self, lazy, chunk_rows: int):
        self.lazy, self.chunk_rows = lazy, int(chunk_rows)
        self.shape = (lazy.stop - lazy.start, lazy.n_features)
        self.dtype = lazy.dtype
        self.scaler = None
        self._cached = (0, 0, None)  # rows [lo, hi) read ahead, and their values
        rows = min(self.chunk_rows, self.shape[0])
        self._buffers = [np.empty((rows, self.shape[1]), dtype=self.dtype) for _ in range(2)]
        for lo in range(0, self.shape[0], self.chunk_rows):  # check every value once
            lazy.read_rows(lazy.start + lo, lazy.start + min(self.shape[0], lo + chunk_rows),
                           out=self._buffers[0])

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_rows * self.shape[1] * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def scale(self, mean: np.ndarray, scale: np.ndarray) -> None:
        """Standardise every row read from now on: ``(x - mean) / scale``, as
        :func:`mpiml.models.scaling.apply_scaler` does in memory (the same bits)."""
        self.scaler = (mean, scale)
        self._cached = (0, 0, None)

    def __getitem__(self, key):
        if isinstance(key, slice):
            lo, hi, step = key.indices(self.shape[0])
            if step != 1:
                raise ValueError("StreamedRows reads contiguous rows: no slice step")
            return self._rows(lo, max(lo, hi))
        if isinstance(key, (int, np.integer)):
            row = int(key) + (self.shape[0] if key < 0 else 0)
            if not 0 <= row < self.shape[0]:
                raise IndexError(f"row {key} is outside 0..{self.shape[0] - 1}")
            return self._rows(row, row + 1)[0]
        return self.take(key)

    def take(self, rows) -> np.ndarray:
        """These local rows (any order) as one array: each chunk they touch is read once, over
        the span from its first wanted row to its last (a few contiguous runs for a batch of
        the block-shuffled order, :class:`mpiml.data.batches.BlockBatchPlan`)."""
        rows = np.asarray(rows, dtype=np.intp).ravel()
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        if len(rows) and not 0 <= ordered[0] <= ordered[-1] < self.shape[0]:
            raise IndexError(f"rows outside 0..{self.shape[0] - 1}")
        bounds = np.searchsorted(ordered // self.chunk_rows,
                                 np.unique(ordered // self.chunk_rows), side="right")
        first = 0
        for last in bounds:
            lo, hi = int(ordered[first]), int(ordered[last - 1]) + 1
            out[order[first:last]] = self._rows(lo, hi)[ordered[first:last] - lo]
            first = last
        return out

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)``: from the chunk read ahead, or read now; a read in row order (from
        row 0 or from the end of the chunk held) reads ahead the whole next chunk."""
        held_lo, held_hi, held = self._cached
        if hi <= lo:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        if held is not None and held_lo <= lo and hi <= held_hi:
            return held[lo - held_lo : hi - held_lo]
        if hi - lo > self.chunk_rows:
            raise ValueError(f"StreamedRows reads at most {self.chunk_rows} rows at a time "
                             f"(data.memory_budget); asked for {hi - lo}: go over the rows in "
                             "chunks (mpiml.data.stream.chunks)")
        if lo == 0 or (held is not None and lo == held_hi):
            end = min(self.shape[0], lo + self.chunk_rows)
            self._buffers.reverse()  # the other buffer than the chunk held
            self._cached = (lo, end, self._read(lo, end, self._buffers[0]))
            return self._cached[2][: hi - lo]
        return self._read(lo, hi)

    def _read(self, lo: int, hi: int, out: np.ndarray | None = None) -> np.ndarray:
        start = self.lazy.start
        rows = self.lazy.read_rows(start + lo, start + hi, check=False,  # checked when built
                                   out=out)
        return rows if self.scaler is None else apply_scaler(rows, *self.scaler)


def is_streamed(X) -> bool:
    return isinstance(X, StreamedRows)


def chunks(X, lo: int = 0, hi: int | None = None):
    """``(a, b, X[a:b])`` over rows ``[lo, hi)`` of X: one chunk for in-memory X, else the
    streamed chunks (aligned to ``chunk_rows`` from row 0 when ``lo`` is)."""
    hi = X.shape[0] if hi is None else hi
    if not is_streamed(X):
        yield lo, hi, X[lo:hi]
        return
    a = lo
    while a < hi:
        b = min(hi, (a // X.chunk_rows + 1) * X.chunk_rows)
        yield a, b, X[a:b]
        a = b


def chunk_sums(per_rows, X):
    """``per_rows(lo, hi)`` (a vector summed over rows ``lo..hi``) that, when X streams, sums
    the vectors of the chunks of ``lo..hi`` (for :meth:`mpiml.comm.Reducer.sum_over_rows`)."""
    if not is_streamed(X):
        return per_rows

    def summed(lo, hi):
        total = None
        for a, b, _ in chunks(X, lo, hi):
            part = np.asarray(per_rows(a, b), dtype=np.float64)
            total = part.copy() if total is None else total + part
        return per_rows(lo, lo) if total is None else total

    return summed


def per_row(func, X, n_outputs: int = 1):
    """``func(rows, lo, hi)`` (one value per row of ``rows = X[lo:hi]``, or a tuple of
    ``n_outputs`` such arrays) over all rows of X, a chunk at a time when X streams."""
    if not is_streamed(X):
        return func(X, 0, X.shape[0])
    parts = [func(rows, lo, hi) for lo, hi, rows in chunks(X)]
    if n_outputs == 1:
        return np.concatenate(parts)
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(n_outputs))


def scale_rows(X, mean: np.ndarray, scale: np.ndarray) -> None:
    """Standardise X in place, or every row a StreamedRows reads from now on."""
    if is_streamed(X):
        X.scale(mean, scale)
    else:
        apply_scaler(X, mean, scale)


def describe(X) -> str | None:
    """What the dry run says of streamed X (None: X is in memory)."""
    if not is_streamed(X):
        return None
    return (f"training rows stream from {X.lazy.path} (X {X.nbytes} bytes on this rank, over "
            f"data.memory_budget): chunks of {X.chunk_rows} rows ({X.chunk_bytes} bytes)")


def check_no_validation_fraction(fraction: float, path: str) -> None:
    """Holding rows out needs the shard in memory: refused (on every rank) when it streams."""
    if fraction:
        raise mark_raised_together(DataError(
            f"{path}: data.validation_fraction holds rows out of a shard in memory, but this "
            "one streams (data.memory_budget): give the validation rows as a file "
            "(data.validation)"))
