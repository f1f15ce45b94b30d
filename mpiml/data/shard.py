"""This rank's rows: which ones (:func:`row_range`), and the :class:`Shard` that holds them.

Rank r of p owns rows ``row_range(n, r, p)``: an even split in rank order (the first ``n % p``
ranks get one extra row), in whole blocks of rows in reproducible mode.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.sparse

TASKS = ("regression", "binary", "multiclass")
CLASSIFICATION_TASKS = ("binary", "multiclass")


class DataError(ValueError):
    """The data cannot be trained on; the message names the file, the data set and the row."""

    user_error = True  # printed as one line: the message says what is wrong where


class MissingDataError(DataError, KeyError):
    """A data set (or a member of a CSR group) named by the caller is not in the file."""

    __str__ = ValueError.__str__  # KeyError would print the message in quotes


@contextmanager
def naming_read_errors(path: str, name: str, lo: int, hi: int):
    """Turn h5py's OSError while reading rows into one that names the file, data set and rows."""
    try:
        yield
    except OSError as exc:
        raise OSError(f"{path}: cannot read global rows {lo}..{hi - 1} of '{name}' (truncated "
                      f"or corrupt file?): {exc}") from exc


def row_range(n_rows: int, rank: int, size: int, block_rows: int = 1) -> tuple[int, int]:
    """Rows ``[start, stop)`` owned by ``rank`` of ``size`` ranks.

    An even split in rank order; the first ``n_rows % size`` ranks get one extra row, so shard
    sizes differ by at most one and rank order is row order. With ``block_rows=b`` the split is in
    whole blocks of ``b`` consecutive rows (the last block may be shorter): every block then lies
    on one rank, whatever the rank count (reproducible mode relies on it).
    """
    if size < 1 or not 0 <= rank < size or n_rows < 0 or block_rows < 1:
        raise ValueError(f"row_range needs n_rows >= 0, 0 <= rank < size and block_rows >= 1; "
                         f"got n_rows={n_rows}, rank={rank}, size={size}, "
                         f"block_rows={block_rows}")
    n_blocks = -(-n_rows // block_rows)
    base, extra = divmod(n_blocks, size)
    first = rank * base + min(rank, extra)
    last = first + base + (1 if rank < extra else 0)
    return min(first * block_rows, n_rows), min(last * block_rows, n_rows)


@dataclass
class Shard:
    """This rank's rows of a data set: rows ``[start, stop)`` of ``n_total``.

    ``X`` is a C-contiguous float32/float64 array, a ``scipy.sparse.csr_matrix``, or
    (``data.memory_budget``) a :class:`mpiml.data.stream.StreamedRows` read on demand. ``y`` is None
    without labels; float64 for ``task="regression"``; int64 class indices ``0..K-1`` for
    classification, where ``classes[k]`` is the original label of index k (sorted, the same on
    every rank); the stored dtype for ``task=None``. ``w`` holds the rows' sample weights
    (float64, finite, >= 0; class weights already applied), or None when every row weighs 1.
    """

    X: np.ndarray | scipy.sparse.csr_matrix
    y: np.ndarray | None
    start: int
    stop: int
    n_total: int
    n_features: int
    classes: np.ndarray | None = None
    task: str | None = None
    w: np.ndarray | None = None

    @property
    def n_local(self) -> int:
        """Rows on this rank."""
        return self.stop - self.start

    @property
    def n_classes(self) -> int | None:
        """Number of classes for classification tasks, else None."""
        return None if self.classes is None else len(self.classes)

    @property
    def local_weight(self) -> float:
        """The weight of this rank's rows: their count without sample weights."""
        return float(self.n_local) if self.w is None else float(self.w.sum())

    def batch(self, rows: np.ndarray) -> tuple[np.ndarray | scipy.sparse.csr_matrix,
                                               np.ndarray | None, np.ndarray | None]:
        """``(X[rows], y[rows], w[rows])`` for local row indices (e.g.
        :meth:`BatchPlan.local_rows`); None for labels or weights the shard does not have.

        Dense rows are gathered with ``X.take``, about twice as fast as ``X[rows]`` on large
        arrays (measured by scripts/bench_data.py; the method, not ``np.take``, whose wrapper
        costs a microsecond a step on small batches); CSR and streamed rows
        (:class:`mpiml.data.stream.StreamedRows`, which reads them) by ``X[rows]``.
        """
        X = self.X.take(rows, axis=0) if isinstance(self.X, np.ndarray) else self.X[rows]
        return (X, None if self.y is None else self.y[rows],
                None if self.w is None else self.w[rows])

    def take(self, rows: np.ndarray, start: int, n_total: int) -> Shard:
        """These local rows (indices, in order) as rows ``[start, start + len(rows))`` of a
        data set of ``n_total`` rows (a copy: e.g. the part left after holding out
        validation rows). Every per-row array goes along."""
        X, y, w = self.batch(rows)
        return dataclasses.replace(self, X=X, y=y, w=w, start=start, stop=start + len(rows),
                                   n_total=n_total)
