"""Splitting converted rows into training, test and validation sets (``convert --test-fraction``).

The rows go to ``X``/``y``, ``X_test``/``y_test`` and ``X_val``/``y_val``, the names the config
reads by default. The choice is uniformly random with exactly the requested counts and depends
only on the row count, the counts and the seed; rows keep their order within each set. It is
drawn a block of :data:`SPLIT_BLOCK` rows at a time and the rows are copied a read at a time, so
memory stays bounded whatever the file size.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np

from ...files.atomic import temporary_name
from ..shard import DataError
from .writing import WRITE_BYTES, Progress, RowAppender, rows_per_write

#: (features, labels) of the training, test and validation sets, in the order of the counts.
SPLITS = (("X", "y"), ("X_test", "y_test"), ("X_val", "y_val"))
#: Rows whose sets are drawn together. Part of the split's definition: the same seed gives the
#: same split only while this stays the same.
SPLIT_BLOCK = 1 << 16


def split_counts(n_rows: int, test_fraction: float, validation_fraction: float,
                 where: str) -> tuple[int, int, int]:
    """Rows of the training, test and validation sets: round(fraction x rows), at least one for
    a fraction above 0, and at least one training row (else DataError naming ``where``)."""
    held_out = [max(1, round(fraction * n_rows)) if fraction > 0 else 0
                for fraction in (test_fraction, validation_fraction)]
    n_train = n_rows - sum(held_out)
    if n_train < 1:
        raise DataError(f"{where}: {n_rows} rows cannot give {held_out[0]} test and "
                        f"{held_out[1]} validation rows and keep a training row")
    return n_train, held_out[0], held_out[1]


def check_fractions(test_fraction: float, validation_fraction: float) -> None:
    """Refuse, before anything is read, fractions that cannot leave training rows."""
    for name, fraction in (("test_fraction", test_fraction),
                           ("validation_fraction", validation_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} must be in [0, 1); got {fraction!r}")
    if test_fraction + validation_fraction >= 1:
        raise ValueError(f"the test and validation fractions add up to "
                         f"{test_fraction + validation_fraction:g}, which leaves no training "
                         f"rows; their sum must be below 1")


def split_assignments(counts: tuple[int, ...], seed: int) -> Iterator[np.ndarray]:
    """Yield, block by block, the set of each row (0 training, 1 test, 2 validation).

    Each block's share of every set is drawn from the rows still unassigned (multivariate
    hypergeometric), then shuffled within the block: every subset of the requested sizes is
    equally likely, and the totals are exact.
    """
    rng = np.random.default_rng([seed, 3])
    left = np.array(counts, dtype=np.int64)
    while (remaining := int(left.sum())) > 0:
        drawn = rng.multivariate_hypergeometric(left, min(SPLIT_BLOCK, remaining))
        left -= drawn
        block = np.repeat(np.arange(len(counts), dtype=np.int8), drawn)
        rng.shuffle(block)
        yield block


class _Assignments:
    """The sets of consecutive rows, handed out in reads of any length."""

    def __init__(self, counts, seed):
        self._blocks = split_assignments(counts, seed)
        self._buffer = np.empty(0, dtype=np.int8)

    def take(self, n_rows: int) -> np.ndarray:
        parts, have = [self._buffer], len(self._buffer)
        while have < n_rows:
            block = next(self._blocks)
            parts.append(block)
            have += len(block)
        joined = np.concatenate(parts)
        self._buffer = joined[n_rows:]
        return joined[:n_rows]


@contextmanager
def scratch_hdf5(out) -> Iterator[h5py.File]:
    """A temporary HDF5 file beside ``out`` for the unsplit rows, removed on exit (named like
    the atomic writer's temporaries, so a killed command's leftover is found as stale)."""
    path = temporary_name(Path(out))
    try:
        with h5py.File(path, "w") as handle:
            yield handle
    finally:
        path.unlink(missing_ok=True)


def write_splits(source: h5py.File, out: h5py.File, test_fraction: float,
                 validation_fraction: float, seed: int, where: str,
                 progress: bool = False) -> None:
    """Copy ``source``'s X (dense or CSR) and y, if any, into the sets of :data:`SPLITS` in
    ``out``, with ``source``'s file attributes and the labels' attributes (``label_names``)."""
    X, y = source["X"], source.get("y")
    sparse = isinstance(X, h5py.Group)
    n_rows, n_features = (int(n) for n in (X.attrs["shape"] if sparse else X.shape))
    counts = split_counts(n_rows, test_fraction, validation_fraction, where)
    dtype = X["data"].dtype if sparse else X.dtype
    index_dtype = X["indices"].dtype if sparse else np.int64
    appenders = {}
    for position, ((x_name, y_name), count) in enumerate(zip(SPLITS, counts, strict=True)):
        if count:
            appenders[position] = RowAppender(
                out, x_name, None if y is None else y_name, n_features=n_features, dtype=dtype,
                sparse=sparse, label_dtype=None if y is None else y.dtype,
                chunk_rows=rows_per_write(n_features, dtype.itemsize), index_dtype=index_dtype)
            if y is not None:
                appenders[position].labels.attrs.update(dict(y.attrs))
    assignments = _Assignments(counts, seed)
    counter = Progress("split", n_rows, progress)
    reads = _csr_reads(X, n_rows, dtype, index_dtype) if sparse else _dense_reads(X, n_rows)
    for begin, end, block in reads:
        labels = None if y is None else y[begin:end]
        sets = assignments.take(end - begin)
        for position, appender in appenders.items():
            chosen = sets == position
            part = _csr_rows(block, chosen) if sparse else block[chosen]
            appender.append(part, None if labels is None else labels[chosen])
        counter.advance(end - begin)
    for appender in appenders.values():
        appender.finish(n_features)
    out.attrs.update(dict(source.attrs))
    out.attrs.update({"test_fraction": test_fraction, "validation_fraction": validation_fraction,
                      "split_seed": seed})
    counter.finish()


def _dense_reads(X: h5py.Dataset, n_rows: int):
    step = rows_per_write(X.shape[1], X.dtype.itemsize)
    for begin in range(0, n_rows, step):
        end = min(n_rows, begin + step)
        yield begin, end, X[begin:end]


def _csr_reads(group: h5py.Group, n_rows: int, dtype, index_dtype):
    """``(begin, end, (values, columns, row_lengths))`` of about WRITE_BYTES of nonzeros each
    (at least one row)."""
    budget = max(1, WRITE_BYTES // (np.dtype(dtype).itemsize + np.dtype(index_dtype).itemsize))
    indptr_rows = 1 << 16
    for window in range(0, n_rows, indptr_rows):
        pointers = group["indptr"][window:min(n_rows, window + indptr_rows) + 1]
        begin = 0
        while begin < len(pointers) - 1:
            end = int(np.searchsorted(pointers, pointers[begin] + budget, side="right")) - 1
            end = min(len(pointers) - 1, max(begin + 1, end))
            low, high = int(pointers[begin]), int(pointers[end])
            lengths = np.diff(pointers[begin:end + 1])
            yield (window + begin, window + end,
                   (group["data"][low:high], group["indices"][low:high], lengths))
            begin = end


def _csr_rows(block, chosen: np.ndarray):
    values, columns, lengths = block
    keep = np.repeat(chosen, lengths)
    return values[keep], columns[keep], lengths[chosen]
