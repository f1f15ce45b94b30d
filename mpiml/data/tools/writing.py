"""Writing rows into HDF5 data sets a block at a time, and a progress line on a terminal."""

from __future__ import annotations

import sys
import time

import h5py
import numpy as np

#: Default bytes of X per HDF5 write (and per parsed chunk of a text file).
WRITE_BYTES = 4 << 20


class Progress:
    """A one-line row counter on stderr, shown only when stderr is a terminal."""

    def __init__(self, label: str, total: int | None, enabled: bool):
        self.label, self.total, self.enabled = label, total, enabled and sys.stderr.isatty()
        self.done, self._last = 0, 0.0

    def advance(self, rows: int) -> None:
        self.done += rows
        now = time.monotonic()
        if self.enabled and now - self._last > 0.25:
            self._last = now
            of = f"/{self.total:,} rows ({100 * self.done / self.total:.0f}%)" if self.total \
                else " rows"
            sys.stderr.write(f"\r{self.label}: {self.done:,}{of}")
            sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled and self._last:
            sys.stderr.write(f"\r{self.label}: {self.done:,} rows, done\n")


class RowAppender:
    """Append blocks of rows to X (dense or CSR) and y, about ``chunk_rows`` rows per write.

    Data sets are chunked and resizable, so the row count need not be known in advance. A CSR
    block is ``(values, columns, row_lengths)``; ``n_features`` of a CSR X may be given only at
    :meth:`finish` (LIBSVM files reveal it at the end). The file's contents do not depend on
    ``chunk_rows``; only the memory and the number of writes do.
    """

    def __init__(self, handle: h5py.File, x_name: str, y_name: str | None, *,
                 n_features: int | None, dtype, sparse: bool, label_dtype=None,
                 chunk_rows: int, index_dtype=np.int64):
        self._written, self.n_nonzero = 0, 0
        self.sparse, self.chunk_rows = sparse, max(1, int(chunk_rows))
        self._pending: list = []
        self._pending_labels: list[np.ndarray] = []
        self._pending_rows = 0
        if sparse:
            self._group = handle.create_group(x_name)
            for name, member_dtype in (("data", dtype), ("indices", index_dtype)):
                self._group.create_dataset(name, shape=(0,), maxshape=(None,), dtype=member_dtype,
                                           chunks=(1 << 18,))
            self._group.create_dataset("indptr", data=np.zeros(1, np.int64), maxshape=(None,),
                                       chunks=(1 << 16,))
        else:
            rows_per_chunk = max(1, (1 << 20) // (n_features * np.dtype(dtype).itemsize))
            self._X = handle.create_dataset(x_name, shape=(0, n_features),
                                            maxshape=(None, n_features), dtype=dtype,
                                            chunks=(rows_per_chunk, n_features))
        self._y = None
        if y_name is not None:
            self._y = handle.create_dataset(y_name, shape=(0,), maxshape=(None,),
                                            dtype=label_dtype, chunks=(1 << 16,))

    @property
    def n_rows(self) -> int:
        """Rows appended so far, written or queued."""
        return self._written + self._pending_rows

    @property
    def labels(self) -> h5py.Dataset | None:
        return self._y

    def append(self, X, y: np.ndarray | None = None) -> None:
        """Queue a block of rows (dense array or CSR triple) and its labels; write when full."""
        rows = len(X[2]) if self.sparse else len(X)
        self._pending.append(X)
        if self._y is not None:
            self._pending_labels.append(y)
        self._pending_rows += rows
        if self._pending_rows >= self.chunk_rows:
            self._flush()

    def finish(self, n_features: int | None = None) -> None:
        """Write what is queued; a CSR X gets its ``shape`` attribute."""
        self._flush()
        if self.sparse:
            self._group.attrs["shape"] = np.array([self.n_rows, n_features], dtype=np.int64)

    def _flush(self) -> None:
        if not self._pending_rows:
            return
        begin, end = self._written, self._written + self._pending_rows
        if self.sparse:
            values, columns, lengths = (np.concatenate(part) for part in zip(*self._pending,
                                                                              strict=True))
            nnz_end = self.n_nonzero + len(values)
            for name, part in (("data", values), ("indices", columns)):
                self._group[name].resize((nnz_end,))
                self._group[name][self.n_nonzero:nnz_end] = part
            indptr = self._group["indptr"]
            indptr.resize((end + 1,))
            indptr[begin + 1:end + 1] = self.n_nonzero + np.cumsum(lengths, dtype=np.int64)
            self.n_nonzero = nnz_end
        else:
            block = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
            self._X.resize((end, self._X.shape[1]))
            self._X[begin:end] = block
        if self._y is not None:
            self._y.resize((end,))
            self._y[begin:end] = np.concatenate(self._pending_labels)
        self._written = end
        self._pending, self._pending_labels, self._pending_rows = [], [], 0


def rows_per_write(n_features: int, itemsize: int) -> int:
    return max(1, WRITE_BYTES // (max(1, n_features) * itemsize))
