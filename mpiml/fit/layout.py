"""Where this rank's rows sit among all rows, for the loops that address global rows
(k-means++ draws, reseeding, bin-edge samples)."""

from __future__ import annotations

import numpy as np

from ..comm import allgather_object, world


class RowLayout:
    """Global offsets of every rank's rows, in rank order. Collective (one allgather).

    Raises the same ValueError on every rank if the ranks disagree on the feature count or if
    the given ``row_offset``/``n_total`` contradict the rank order.
    """

    def __init__(self, X, comm, row_offset=None, n_total=None, caller="fit"):
        comm = world(comm)
        self.rank = comm.Get_rank()
        n_local, n_features = X.shape
        reports = allgather_object((row_offset, n_local, n_features), comm)
        counts = np.array([count for _, count, _ in reports], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.n_total = int(self.offsets[-1])
        problems = []
        if len({features for _, _, features in reports}) != 1:
            problems.append(f"ranks hold different numbers of features: "
                            f"{[features for _, _, features in reports]}")
        given = [offset for offset, _, _ in reports]
        if any(offset is not None and offset != start
               for offset, start in zip(given, self.offsets[:-1], strict=True)):
            problems.append(f"row_offset per rank {given} is not the rank-order prefix of the "
                            f"row counts {counts.tolist()}")
        if n_total is not None and n_total != self.n_total:
            problems.append(f"n_total={n_total} but the ranks hold {self.n_total} rows")
        if problems:
            raise ValueError(f"{caller}: " + "; ".join(problems))
        self.start = int(self.offsets[self.rank])
        self.n_local = n_local

    def owner(self, global_row: int) -> int:
        """Rank that holds ``global_row``."""
        return int(np.searchsorted(self.offsets, global_row, side="right") - 1)
