"""The global mini-batch order: a function of ``(seed, epoch)`` alone, so training sees the same
batches at any rank count; :class:`BatchPlan` says which of this rank's rows are in each batch."""

from __future__ import annotations

import numpy as np

from .shard import Shard

_INT32_MAX = np.iinfo(np.int32).max


def epoch_permutation(n_total: int, seed: int, epoch: int) -> np.ndarray:
    """The order of all ``n_total`` rows in ``epoch``: a function of ``(seed, epoch)`` alone.

    Equal to ``np.random.default_rng((seed, epoch)).permutation(n_total)``, held as int32 when
    the row count allows (the shuffle depends only on the length, so the values are the same)
    to halve the per-epoch memory on every rank.
    """
    _check_non_negative_int("seed", seed)
    _check_non_negative_int("epoch", epoch)
    order = np.arange(n_total, dtype=np.int32 if n_total <= _INT32_MAX else np.int64)
    np.random.default_rng((seed, epoch)).shuffle(order)
    return order


class BatchPlan:
    """Which of this rank's rows make up each global mini-batch, the same at any rank count.

    Global batch t of an epoch is the rows ``perm[t*B:(t+1)*B]`` of
    :func:`epoch_permutation`; there are ``ceil(n_total / B)`` batches on every rank, and the
    last one keeps the remaining ``n_total - (n_batches - 1) * B`` rows (it is not dropped, so
    every row is seen once per epoch; divide by :meth:`batch_rows`, or by the reduced row
    count, never by B). A rank may own none of a batch's rows; it then contributes zero sums.

    Cost: O(n_total) once per epoch (the permutation and the positions of this rank's rows in
    it, cached for the current epoch), then O(log n + rows) per :meth:`local_rows` call.
    """

    def __init__(self, n_total: int, batch_size: int, seed: int, start: int = 0,
                 stop: int | None = None):
        stop = n_total if stop is None else stop
        _check_non_negative_int("seed", seed)
        if n_total < 1 or batch_size < 1 or not 0 <= start <= stop <= n_total:
            raise ValueError(f"BatchPlan needs n_total >= 1, batch_size >= 1 and "
                             f"0 <= start <= stop <= n_total; got n_total={n_total}, "
                             f"batch_size={batch_size}, start={start}, stop={stop}")
        self.n_total, self.batch_size, self.seed = int(n_total), int(batch_size), int(seed)
        self.start, self.stop = int(start), int(stop)
        self._epoch: int | None = None
        self._positions = np.empty(0, dtype=np.intp)
        self._local = np.empty(0, dtype=np.intp)

    @classmethod
    def for_shard(cls, shard: Shard, batch_size: int, seed: int) -> BatchPlan:
        """The plan for the rows a :class:`Shard` (or a :class:`mpiml.data.LazyShard`) owns."""
        return cls(shard.n_total, batch_size, seed, shard.start, shard.stop)

    def n_batches(self, epoch: int) -> int:
        """Batches in ``epoch``: ``ceil(n_total / batch_size)``, the same on every rank."""
        _check_non_negative_int("epoch", epoch)
        return -(-self.n_total // self.batch_size)

    def batch_rows(self, t: int) -> int:
        """Global number of rows in batch ``t`` (``batch_size``, except maybe the last)."""
        self._check_batch(t)
        return min(self.batch_size, self.n_total - t * self.batch_size)

    def local_rows(self, epoch: int, t: int) -> np.ndarray:
        """This rank's rows in global batch ``t`` of ``epoch``, as ascending LOCAL indices.

        Index the shard with them (``X[rows]``, ``y[rows]``). Concatenated over ranks in rank
        order and shifted by each rank's ``start``, they are the sorted global batch.
        """
        self._check_batch(t)
        if epoch != self._epoch:
            self._prepare(epoch)
        lo, hi = np.searchsorted(self._positions, (t * self.batch_size,
                                                   (t + 1) * self.batch_size))
        return np.sort(self._local[lo:hi])

    def _prepare(self, epoch: int) -> None:
        """Positions of this rank's rows in the epoch's permutation, and those rows, once."""
        shifted = epoch_permutation(self.n_total, self.seed, epoch)
        shifted -= self.start
        # as unsigned, rows before start wrap to huge values: one comparison selects ours
        unsigned = shifted.view(np.dtype(f"u{shifted.itemsize}"))
        self._positions = np.flatnonzero(unsigned < self.stop - self.start)
        self._local = shifted[self._positions].astype(np.intp)
        self._epoch = epoch

    def _check_batch(self, t: int) -> None:
        n_batches = self.n_batches(0)
        if not 0 <= t < n_batches:
            raise IndexError(f"batch {t} is outside 0..{n_batches - 1}")


#: Bytes of X in one block of the block-shuffled order, at most: one read each.
ORDER_BLOCK_BYTES = 64 << 10


def order_block_rows(batch_size: int, row_bytes: int) -> int:
    """Rows per block of :class:`BlockBatchPlan`: at most :data:`ORDER_BLOCK_BYTES` of X and an
    eighth of a batch (so a batch mixes at least 8 blocks), at least 1. It depends on the
    batch size and the row width only, never on the rank count."""
    return max(1, min(batch_size // 8, ORDER_BLOCK_BYTES // max(1, row_bytes)))


class BlockBatchPlan(BatchPlan):
    """The global mini-batch order of streamed rows (``data.memory_budget``): the rows are cut
    into blocks of ``block_rows`` consecutive global rows, the BLOCKS are shuffled (block i of
    the epoch is ``epoch_permutation(n_blocks, seed, epoch)[i]``), and batch t is positions
    ``t*B..(t+1)*B`` of the rows in that order. A batch is therefore a few runs of consecutive
    rows (one read each), and like :class:`BatchPlan` it is a function of ``(seed, epoch)``
    alone: the same batches on any rank count. Rows of one block stay together in file order,
    which is what differs from the in-memory order (every row shuffled)."""

    def __init__(self, n_total: int, batch_size: int, seed: int, start: int, stop: int,
                 block_rows: int):
        super().__init__(n_total, batch_size, seed, start, stop)
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1; got {block_rows}")
        self.block_rows = int(block_rows)
        self._order = self._ends = np.empty(0, dtype=np.int64)

    def local_rows(self, epoch: int, t: int) -> np.ndarray:
        """This rank's rows in global batch ``t`` of ``epoch``, as ascending LOCAL indices."""
        self._check_batch(t)
        if epoch != self._epoch:
            self._prepare(epoch)
        first, last = t * self.batch_size, min(self.n_total, (t + 1) * self.batch_size)
        lo_block, hi_block = np.searchsorted(self._ends, (first, last - 1), side="right")
        runs = []
        for block, end in zip(self._order[lo_block:hi_block + 1],
                              self._ends[lo_block:hi_block + 1], strict=True):
            row = int(block) * self.block_rows  # its first global row, at position `at`
            at = int(end) - min(self.block_rows, self.n_total - row)
            lo = max(row + max(0, first - at), self.start)
            hi = min(row + min(int(end), last) - at, self.stop)
            if lo < hi:
                runs.append(np.arange(lo - self.start, hi - self.start))
        return np.sort(np.concatenate(runs)) if runs else np.empty(0, dtype=np.intp)

    def _prepare(self, epoch: int) -> None:
        """The epoch's block order and where each block ends in it, once (O(n_blocks))."""
        n_blocks = -(-self.n_total // self.block_rows)
        self._order = epoch_permutation(n_blocks, self.seed, epoch).astype(np.int64)
        sizes = np.full(n_blocks, self.block_rows, dtype=np.int64)
        sizes[-1] = self.n_total - (n_blocks - 1) * self.block_rows
        self._ends = np.cumsum(sizes[self._order])
        self._epoch = epoch


def _check_non_negative_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")
