"""One run's reductions: every sum, maximum and minimum a fit needs, with one set of settings.

A :class:`Reducer` is built once per run from ``comm.algorithm``, ``comm.ring_threshold`` and the
reproducible-mode block size, and every reduction of the run goes through it: gradients,
feature scaling, evaluation, K-Means statistics, tree histograms, the estimators' scores. So a
setting reaches every allreduce, and the bytes and seconds spent reducing are counted in one place.

Sums over rows come in two kinds: :meth:`Reducer.sum` of a buffer each rank filled with its own
partial sums (one allreduce), and :meth:`Reducer.sum_over_rows`, which in reproducible mode
(``block_rows > 1``) sums exactly per block of global rows (:mod:`mpiml.comm.exact`) so the result
has the same bits on any number of ranks.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from . import exact
from .collectives import (
    ALGORITHMS,
    DEFAULT_RING_THRESHOLD,
    PendingAllreduce,
    allreduce,
    start_allreduce,
    world,
)


class Reducer:
    """In-place reductions of numpy buffers over the ranks of ``comm`` (collective calls).

    ``algorithm`` and ``ring_threshold`` as for :func:`mpiml.allreduce`; ``block_rows`` is the
    reproducible mode's block of global rows (1: off). Buffers must agree in length and dtype
    across ranks (the callers size them from agreed values), so no validation probe is sent.
    ``seconds`` and ``bytes`` accumulate the time spent in reductions and the bytes reduced.
    """

    def __init__(self, comm=None, algorithm: str = "auto",
                 ring_threshold: int = DEFAULT_RING_THRESHOLD, block_rows: int = 1):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {algorithm!r}; valid algorithms: "
                             f"{', '.join(ALGORITHMS)}")
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1; got {block_rows}")
        self.comm = world(comm)
        self.algorithm, self.ring_threshold = algorithm, int(ring_threshold)
        self.block_rows = int(block_rows)
        self.seconds, self.bytes = 0.0, 0

    @property
    def reproducible(self) -> bool:
        return self.block_rows > 1

    def on(self, comm) -> Reducer:
        """The same settings on another communicator (the survivors' one after a shrink)."""
        return Reducer(comm, self.algorithm, self.ring_threshold, self.block_rows)

    def _reduce(self, buf: np.ndarray, op: str) -> np.ndarray:
        started = time.perf_counter()
        allreduce(buf, self.comm, op, self.algorithm, ring_threshold=self.ring_threshold,
                  validate=False)
        self.seconds += time.perf_counter() - started
        self.bytes += buf.nbytes
        return buf

    def sum(self, buf: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks, in place; returns ``buf``."""
        return self._reduce(buf, "sum")

    def max(self, buf: np.ndarray) -> np.ndarray:
        """Element-wise maximum over ranks, in place; returns ``buf``."""
        return self._reduce(buf, "max")

    def min(self, buf: np.ndarray) -> np.ndarray:
        """Element-wise minimum over ranks, in place; returns ``buf``."""
        return self._reduce(buf, "min")

    def start_sum(self, buf: np.ndarray) -> PendingAllreduce:
        """Start :meth:`sum` without waiting (overlap mode); no other reduction may start on
        this communicator before the result's ``wait`` returns."""
        self.bytes += buf.nbytes
        return start_allreduce(buf, self.comm, algorithm=self.algorithm,
                               ring_threshold=self.ring_threshold)

    def sum_over_rows(self, per_rows: Callable[[int, int], np.ndarray], n_local: int,
                      n_total: int) -> np.ndarray:
        """The sum over every rank's rows of the float64 vector ``per_rows(lo, hi)`` (computed
        from this rank's rows ``lo..hi``): ``per_rows(0, n_local)`` reduced in one allreduce, or
        in reproducible mode the exact sum of its values per block of ``block_rows`` rows (this
        rank's rows must start on a block boundary; ``n_total`` counts all ranks' rows)."""
        if not self.reproducible:
            return self.sum(np.ascontiguousarray(per_rows(0, n_local), dtype=np.float64))
        blocks = [per_rows(lo, min(lo + self.block_rows, n_local))
                  for lo in range(0, n_local, self.block_rows)]
        width = np.asarray(per_rows(0, 0)).size if not blocks else blocks[0].size
        return self.exact_sum(blocks, width, -(-n_total // self.block_rows))[0]

    def exact_sum(self, blocks: list[np.ndarray], width: int, n_blocks_total: int,
                  votes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:func:`mpiml.comm.exact.exact_sum` through this reducer (two allreduces)."""
        return exact.exact_sum(blocks, width, n_blocks_total, self, votes)

    def quantize_rows(self, values: np.ndarray, n_total: int) -> tuple[np.ndarray, np.ndarray]:
        """:func:`mpiml.comm.exact.quantize_rows` through this reducer (one MAX allreduce)."""
        return exact.quantize_rows(values, n_total, self)
