"""This rank's rows of an HDF5 data set, checked the same way on every rank, and the batch order.

Layouts (docs/data.md):

* dense -- a 2-D numeric data set ``X`` (float32 and float64 are kept, other numeric types are
  read as float64);
* CSR -- a group ``X`` holding 1-D data sets ``data``, ``indices`` and ``indptr`` and an
  attribute ``shape = (n_rows, n_features)``: the arrays of ``scipy.sparse.csr_matrix``;
* labels -- an optional 1-D numeric data set ``y`` with one entry per row.

Rank r of p owns rows :func:`row_range` ``(n, r, p)`` and reads those rows by HDF5 hyperslab and
nothing else. Every check whose outcome could differ between ranks (a NaN in one rank's rows, a
file one rank cannot read) ends in :func:`mpiml.collectives.raise_together`, so every rank raises
the same error and none is left waiting in a collective. :class:`BatchPlan` gives mini-batches
that are a function of ``(seed, epoch)`` alone, so training sees the same batches at any rank
count.

``python -m mpiml.data`` is the data command line (synth, convert, inspect, example): see
:mod:`mpiml.datatools`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import h5py
import numpy as np
import scipy.sparse

from . import collectives

TASKS = ("regression", "binary", "multiclass")
CLASSIFICATION_TASKS = ("binary", "multiclass")
CSR_MEMBERS = ("data", "indices", "indptr")
X_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Bytes of X per HDF5 read and per default block of :meth:`LazyShard.blocks`: large enough for
#: full disk bandwidth, small enough that every temporary beside the shard stays a few MB.
BLOCK_BYTES = 16 << 20
#: Values per slice when scanning for NaN/Inf or reading labels, bounding the temporary masks.
_SCAN_VALUES = 1 << 18
_INT32_MAX = np.iinfo(np.int32).max


class DataError(ValueError):
    """The data cannot be trained on; the message names the file, the data set and the row."""


class MissingDataError(DataError, KeyError):
    """A data set (or a member of a CSR group) named by the caller is not in the file."""

    __str__ = ValueError.__str__  # KeyError would print the message in quotes


def row_range(n_rows: int, rank: int, size: int, align: int = 1) -> tuple[int, int]:
    """Rows ``[start, stop)`` owned by ``rank`` of ``size`` ranks.

    An even split in rank order; the first ``n_rows % size`` ranks get one extra row, so shard
    sizes differ by at most one and rank order is row order. With ``align=b`` the split is in
    whole blocks of ``b`` consecutive rows (the last block may be shorter): every block then lies
    on one rank, whatever the rank count (reproducible mode relies on it).
    """
    if size < 1 or not 0 <= rank < size or n_rows < 0 or align < 1:
        raise ValueError(f"row_range needs n_rows >= 0, 0 <= rank < size and align >= 1; "
                         f"got n_rows={n_rows}, rank={rank}, size={size}, align={align}")
    n_blocks = -(-n_rows // align)
    base, extra = divmod(n_blocks, size)
    first = rank * base + min(rank, extra)
    last = first + base + (1 if rank < extra else 0)
    return min(first * align, n_rows), min(last * align, n_rows)


@dataclass
class Shard:
    """This rank's rows of a data set: rows ``[start, stop)`` of ``n_total``.

    ``X`` is a C-contiguous float32/float64 array or a ``scipy.sparse.csr_matrix``. ``y`` is None
    without labels; float64 for ``task="regression"``; int64 class indices ``0..K-1`` for
    classification, where ``classes[k]`` is the original label of index k (sorted, the same on
    every rank); the stored dtype for ``task=None``.
    """

    X: np.ndarray | scipy.sparse.csr_matrix
    y: np.ndarray | None
    start: int
    stop: int
    n_total: int
    n_features: int
    classes: np.ndarray | None = None
    task: str | None = None

    @property
    def n_local(self) -> int:
        """Rows on this rank."""
        return self.stop - self.start

    @property
    def n_classes(self) -> int | None:
        """Number of classes for classification tasks, else None."""
        return None if self.classes is None else len(self.classes)

    def batch(self, rows: np.ndarray) -> tuple[np.ndarray | scipy.sparse.csr_matrix,
                                               np.ndarray | None]:
        """``(X[rows], y[rows])`` for local row indices (e.g. :meth:`BatchPlan.local_rows`).

        Dense rows are gathered with ``np.take``, about twice as fast as ``X[rows]`` on large
        arrays (measured by scripts/bench_data.py).
        """
        X = self.X[rows] if scipy.sparse.issparse(self.X) else np.take(self.X, rows, axis=0)
        return X, None if self.y is None else self.y[rows]


def load_shard(path, comm=None, x: str = "X", y: str | None = "y", dtype=None,
               task: str | None = None, align: int = 1) -> Shard:
    """Read this rank's rows of ``x`` (and ``y``) from the HDF5 file ``path``. Collective.

    ``dtype`` (float32 or float64) converts X while reading, block by block into one
    preallocated array, so two full copies never coexist. ``task`` maps labels (see
    :class:`Shard`); ``y=None`` loads no labels (K-Means). ``align`` splits the rows in whole
    blocks of that many rows (see :func:`row_range`). Every rank raises the same
    :class:`DataError`, ``FileNotFoundError`` or ``OSError`` when the data are unusable.
    """
    with open_shard(path, comm, x=x, y=y, dtype=dtype, task=task, align=align) as lazy:
        return lazy.load()


def iter_blocks(path, comm=None, x: str = "X", y: str | None = "y", block_rows: int | None = None,
                dtype=None, task: str | None = None
                ) -> Iterator[tuple[np.ndarray | scipy.sparse.csr_matrix, np.ndarray | None]]:
    """Yield ``(X_block, y_block)`` over this rank's rows, at most ``block_rows`` rows at a time.

    Peak memory is one block, not the shard: use it for shards larger than memory. Collective,
    like :meth:`LazyShard.blocks`; use :func:`open_shard` to know n_features or the classes before
    the first block or to make several passes.
    """
    with open_shard(path, comm, x=x, y=y, dtype=dtype, task=task) as lazy:
        yield from lazy.blocks(block_rows)


def open_shard(path, comm=None, x: str = "X", y: str | None = "y", dtype=None,
               task: str | None = None, align: int = 1) -> LazyShard:
    """Open this rank's rows of ``path`` without reading X yet. Collective.

    Checks the layout on every rank and this rank's labels (scanned in slices, not kept), agrees
    on the outcome, and for classification agrees on the class set (one allgather of each rank's
    ``np.unique``, so a class absent from one rank's rows maps to the same index everywhere).
    Use it as a context manager, or call :meth:`LazyShard.close`.
    """
    comm = collectives.world(comm)
    rank, size = collectives.rank_and_size(comm)
    lazy, error, local_labels = None, None, None
    try:
        lazy = LazyShard(path, comm, x, y, dtype, task, align)
        lazy._open(rank, size)
        local_labels = lazy._scan_labels()
    except Exception as exc:  # every rank must learn of any rank's failure, whatever it is
        error = exc
    try:
        _agree(error, comm)
        if task in CLASSIFICATION_TASKS:
            lazy.classes = lazy._agree_on_classes(local_labels)
    except BaseException:
        if lazy is not None:
            lazy.close()
        raise
    return lazy


class LazyShard:
    """This rank's rows of an open HDF5 file, read on demand: all at once or block by block.

    Attributes as :class:`Shard` (``start``, ``stop``, ``n_total``, ``n_features``, ``classes``,
    ``task``) plus ``sparse`` and ``dtype`` (of X as read). Built by :func:`open_shard`.
    """

    def __init__(self, path, comm, x: str, y: str | None, dtype, task: str | None,
                 align: int = 1):
        if dtype is not None and np.dtype(dtype) not in X_DTYPES:
            raise ValueError(f"dtype must be float32, float64 or None; got {dtype!r}")
        if task is not None and task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)} or None")
        if task is not None and y is None:
            raise ValueError(f"task {task!r} needs labels, but y=None asks for none")
        self.path = os.fspath(path)
        self.comm = comm
        self.x_name, self.y_name = x, y
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.task = task
        self.align = int(align)
        self.classes: np.ndarray | None = None
        self._file = None
        self._y = None

    # -- opening ------------------------------------------------------------------------------

    def _open(self, rank: int, size: int) -> None:
        """Open the file and check the layout on this rank; raise on anything unusable."""
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise OSError(f"{self.path}: cannot open as HDF5 (truncated, corrupt or not an "
                          f"HDF5 file): {exc}") from exc
        node = self._file.get(self.x_name)
        if node is None:
            raise MissingDataError(f"{self.path}: no data set '{self.x_name}'; "
                                   f"{_contents(self._file)}")
        if isinstance(node, h5py.Group):
            self._open_csr(node)
        elif isinstance(node, h5py.Dataset):
            self._open_dense(node)
        else:
            raise DataError(f"{self.path}: '{self.x_name}' is not a data set or a CSR group")
        self._y = self._open_labels() if self.y_name is not None else None
        if self.n_total == 0:
            raise DataError(f"{self.path}: data set '{self.x_name}' has no rows")
        if size > self.n_total:
            raise DataError(f"{self.path}: data set '{self.x_name}' has {self.n_total} rows but "
                            f"the job has {size} ranks; every rank needs at least one row "
                            f"(run with at most {self.n_total} ranks)")
        n_blocks = -(-self.n_total // self.align)
        if size > n_blocks:
            raise DataError(f"{self.path}: data set '{self.x_name}' has {self.n_total} rows, "
                            f"{n_blocks} blocks of {self.align}, but the job has {size} ranks; "
                            f"every rank needs at least one block (run with at most {n_blocks} "
                            "ranks, or use smaller blocks: train.block_rows)")
        self.start, self.stop = row_range(self.n_total, rank, size, self.align)

    def _open_dense(self, dataset: h5py.Dataset) -> None:
        where = f"{self.path}: data set '{self.x_name}'"
        if dataset.ndim != 2:
            raise DataError(f"{where} must be 2-D (rows x features); it has shape "
                            f"{dataset.shape}")
        self._check_numeric(dataset, where)
        self.sparse = False
        self._X = dataset
        self.n_total, self.n_features = (int(n) for n in dataset.shape)
        self._check_features(where)
        self.dtype = self.dtype or _read_dtype(dataset.dtype)

    def _open_csr(self, group: h5py.Group) -> None:
        where = f"{self.path}: CSR group '{self.x_name}'"
        missing = [name for name in CSR_MEMBERS if not isinstance(group.get(name), h5py.Dataset)]
        if missing:
            raise MissingDataError(
                f"{where} has no data set {', '.join(missing)}; a CSR group needs data, indices, "
                f"indptr and a 'shape' attribute (it holds: {', '.join(group) or 'nothing'})")
        shape = np.asarray(group.attrs.get("shape", ()))
        if shape.shape != (2,) or shape.dtype.kind not in "iu" or (shape < 0).any():
            raise DataError(f"{where} needs an attribute 'shape' = (n_rows, n_features); "
                            f"got {group.attrs.get('shape')!r}")
        data, indices, indptr = (group[name] for name in CSR_MEMBERS)
        for name, member in zip(CSR_MEMBERS, (data, indices, indptr), strict=True):
            if member.ndim != 1:
                raise DataError(f"{where}: '{name}' must be 1-D; it has shape {member.shape}")
        for name, member in (("indices", indices), ("indptr", indptr)):
            if member.dtype.kind not in "iu":
                raise DataError(f"{where}: '{name}' must hold integers; it has dtype "
                                f"{member.dtype}")
        self._check_numeric(data, f"{where}: 'data'")
        self.n_total, self.n_features = int(shape[0]), int(shape[1])
        self._check_features(where)
        nnz = len(data)
        if len(indices) != nnz:
            raise DataError(f"{where} is inconsistent: 'indices' has {len(indices)} entries but "
                            f"'data' has {nnz}")
        if len(indptr) != self.n_total + 1:
            raise DataError(f"{where} is inconsistent: 'indptr' has {len(indptr)} entries but "
                            f"shape ({self.n_total}, {self.n_features}) needs {self.n_total + 1}")
        first, last = int(indptr[0]), int(indptr[-1])
        if first != 0 or last != nnz:
            raise DataError(f"{where} is inconsistent: indptr must run from 0 to len(data) = "
                            f"{nnz}; it runs from {first} to {last}")
        self.sparse = True
        self._csr = (data, indices, indptr)
        self._nnz = nnz
        self.dtype = self.dtype or _read_dtype(data.dtype)

    def _open_labels(self) -> h5py.Dataset:
        node = self._file.get(self.y_name)
        where = f"{self.path}: data set '{self.y_name}'"
        if node is None:
            raise MissingDataError(f"{self.path}: no label data set '{self.y_name}' (pass y=None "
                                   f"for unlabelled data); {_contents(self._file)}")
        if not isinstance(node, h5py.Dataset) or node.ndim != 1:
            shape = getattr(node, "shape", "a group")
            raise DataError(f"{where} must be 1-D (one label per row); it is {shape}")
        self._check_numeric(node, where)
        if len(node) != self.n_total:
            raise DataError(f"{self.path}: data set '{self.x_name}' has {self.n_total} rows but "
                            f"'{self.y_name}' has {len(node)} labels")
        return node

    def _check_numeric(self, dataset: h5py.Dataset, where: str) -> None:
        if dataset.dtype.kind not in "biuf":
            raise DataError(f"{where} has non-numeric dtype {dataset.dtype}; expected float32 or "
                            f"float64 (integers and booleans are read as float64)")

    def _check_features(self, where: str) -> None:
        if self.n_features == 0:
            raise DataError(f"{where} has no features (0 columns)")

    def _scan_labels(self) -> np.ndarray | None:
        """Check this rank's labels in slices; return their distinct values for classification.

        Raises a DataError naming the first bad global row: NaN/Inf, or for classification a
        non-integer label (a regression target passed as classes).
        """
        if self._y is None:
            return None
        classify = self.task in CLASSIFICATION_TASKS
        distinct = []
        for lo in range(self.start, self.stop, _SCAN_VALUES):
            labels = self._read_labels(lo, min(self.stop, lo + _SCAN_VALUES))
            if labels.dtype.kind == "f":
                bad = _first_nonfinite(labels)
                if bad >= 0:
                    raise DataError(f"{self.path}: data set '{self.y_name}' holds {labels[bad]} "
                                    f"at global row {lo + bad} (labels must be finite)")
                if classify:
                    fractional = np.flatnonzero(labels != np.round(labels))
                    if fractional.size:
                        at = fractional[0]
                        raise DataError(
                            f"{self.path}: data set '{self.y_name}' holds the non-integer label "
                            f"{labels[at]} at global row {lo + at}; task '{self.task}' needs "
                            f"integer class labels (use task='regression' for continuous targets)")
            if classify:
                distinct.append(np.unique(labels))
        return np.unique(np.concatenate(distinct)) if classify else None

    def _agree_on_classes(self, local_labels: np.ndarray) -> np.ndarray:
        """The sorted global class set from every rank's distinct labels (one allgather).

        Every rank computes the same set from the same gathered arrays, so the checks below
        raise on all ranks or on none without a further collective.
        """
        classes = np.unique(np.concatenate(collectives.allgather_object(local_labels,
                                                                        self.comm)))
        where = f"{self.path}: data set '{self.y_name}'"
        shown = ", ".join(str(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
        if self.task == "binary" and len(classes) != 2:
            raise DataError(f"{where}: task 'binary' needs exactly 2 distinct labels; found "
                            f"{len(classes)}: {shown}")
        if self.task == "multiclass" and len(classes) < 2:
            raise DataError(f"{where}: task 'multiclass' needs at least 2 distinct labels; found "
                            f"{len(classes)}: {shown}")
        return classes

    # -- reading ------------------------------------------------------------------------------

    def load(self) -> Shard:
        """Read all of this rank's rows into memory. Collective (one agreement on the outcome)."""
        error, X, y = None, None, None
        try:
            X = self._read_rows(self.start, self.stop)
            y = self._labels_for(self.start, self.stop)
        except Exception as exc:  # agreed below, whatever it is
            error = exc
        _agree(error, self.comm)
        return Shard(X=X, y=y, start=self.start, stop=self.stop, n_total=self.n_total,
                     n_features=self.n_features, classes=self.classes, task=self.task)

    def blocks(self, block_rows: int | None = None
               ) -> Iterator[tuple[np.ndarray | scipy.sparse.csr_matrix, np.ndarray | None]]:
        """Yield ``(X_block, y_block)`` over this rank's rows in order. Collective.

        ``block_rows`` defaults to about 16 MB of X. Every rank yields the same number of blocks
        (the count of the largest shard; a rank with one row fewer may get an empty last
        block), and each block's read ends in one agreement (an allreduce of a flag), so a loop
        that calls a collective once per block stays in step and a NaN in one rank's block
        raises on all. Every rank must therefore consume the whole iterator. May be called
        again for another pass.
        """
        block_rows = self._default_block_rows() if block_rows is None else int(block_rows)
        if block_rows < 1:
            raise ValueError(f"block_rows must be a positive integer; got {block_rows}")
        largest_shard = -(-self.n_total // self.comm.Get_size())
        for index in range(-(-largest_shard // block_rows)):
            lo = min(self.stop, self.start + index * block_rows)
            hi = min(self.stop, lo + block_rows)
            error, block = None, None
            try:
                block = (self._read_rows(lo, hi), self._labels_for(lo, hi))
            except Exception as exc:  # agreed below, whatever it is
                error = exc
            _agree(error, self.comm)
            yield block

    def _default_block_rows(self) -> int:
        if self.sparse:
            row_bytes = self._nnz / self.n_total * (self.dtype.itemsize + 8) + 8
        else:
            row_bytes = self.n_features * self.dtype.itemsize
        return max(1, int(BLOCK_BYTES // max(row_bytes, 1)))

    def _labels_for(self, lo: int, hi: int) -> np.ndarray | None:
        """Labels of global rows ``[lo, hi)`` mapped for the task (they were checked at open),
        read in slices into the output so no second full-length copy is made."""
        if self._y is None:
            return None
        if self.classes is not None:
            dtype = np.int64
        elif self.task == "regression":
            dtype = np.float64
        else:
            dtype = self._y.dtype
        out = np.empty(hi - lo, dtype=dtype)
        for begin in range(lo, hi, _SCAN_VALUES):
            end = min(hi, begin + _SCAN_VALUES)
            labels = self._read_labels(begin, end)
            if self.classes is not None:
                labels = np.searchsorted(self.classes, labels)
            out[begin - lo:end - lo] = labels
        return out

    def _read_labels(self, lo: int, hi: int) -> np.ndarray:
        with self._reading(self.y_name, lo, hi):
            return self._y[lo:hi]

    def _read_rows(self, lo: int, hi: int) -> np.ndarray | scipy.sparse.csr_matrix:
        return self._read_csr(lo, hi) if self.sparse else self._read_dense(lo, hi)

    def _read_dense(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` of dense X, read and checked in slices of about BLOCK_BYTES."""
        out = np.empty((hi - lo, self.n_features), dtype=self.dtype)
        step = max(1, BLOCK_BYTES // (self.n_features * self.dtype.itemsize))
        for begin in range(lo, hi, step):
            end = min(hi, begin + step)
            part = out[begin - lo:end - lo]
            with self._reading(self.x_name, begin, end):
                self._X.read_direct(part, np.s_[begin:end])
            bad = _first_nonfinite(part)
            if bad >= 0:
                row, column = divmod(bad, self.n_features)
                raise DataError(f"{self.path}: data set '{self.x_name}' holds "
                                f"{part[row, column]} at global row {begin + row}, column "
                                f"{column} (every value must be finite)")
        return out

    def _read_csr(self, lo: int, hi: int) -> scipy.sparse.csr_matrix:
        """Rows ``[lo, hi)`` of CSR X: slice indptr, then read only those rows' data/indices."""
        data, indices, indptr = self._csr
        where = f"{self.path}: CSR group '{self.x_name}'"
        with self._reading(f"{self.x_name}/indptr", lo, hi):
            pointers = indptr[lo:hi + 1].astype(np.int64, copy=False)
        decreasing = pointers[1:] < pointers[:-1]
        if decreasing.any():
            row = int(np.argmax(decreasing))
            raise DataError(f"{where} is inconsistent: indptr decreases at global row {lo + row} "
                            f"(indptr[{lo + row + 1}] = {pointers[row + 1]} < indptr[{lo + row}] "
                            f"= {pointers[row]})")
        del decreasing
        first, last = int(pointers[0]), int(pointers[-1])
        wide = max(self.n_features, last - first, hi - lo) > _INT32_MAX
        index_dtype = np.int64 if wide else np.int32
        pointers -= first
        local_pointers = pointers.astype(index_dtype, copy=False)
        del pointers
        values = np.empty(last - first, dtype=self.dtype)
        columns = np.empty(last - first, dtype=index_dtype)
        if last > first:
            with self._reading(f"{self.x_name}/data", lo, hi):
                data.read_direct(values, np.s_[first:last])
                indices.read_direct(columns, np.s_[first:last])
        bad = _first_nonfinite(values)
        out_of_range = _first_out_of_range(columns, self.n_features)
        if bad >= 0 or out_of_range >= 0:
            at = min(p for p in (bad, out_of_range) if p >= 0)
            row = lo + int(np.searchsorted(local_pointers, at, side="right")) - 1
            if at == bad:
                raise DataError(f"{where} holds {values[at]} at global row {row}, column "
                                f"{columns[at]} (every value must be finite)")
            raise DataError(f"{where}: column index {columns[at]} at global row {row} is "
                            f"outside 0..{self.n_features - 1}")
        return scipy.sparse.csr_matrix((values, columns, local_pointers),
                                       shape=(hi - lo, self.n_features), copy=False)

    def _reading(self, name: str, lo: int, hi: int):
        return _naming_read_errors(self.path, name, lo, hi)

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LazyShard:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextmanager
def _naming_read_errors(path: str, name: str, lo: int, hi: int):
    """Turn h5py's OSError while reading rows into one that names the file, data set and rows."""
    try:
        yield
    except OSError as exc:
        raise OSError(f"{path}: cannot read global rows {lo}..{hi - 1} of '{name}' (truncated "
                      f"or corrupt file?): {exc}") from exc


def _agree(error: BaseException | None, comm) -> None:
    """Collective: raise on every rank if any rank failed. One small allreduce when none did."""
    if collectives.any_true(error is not None, comm):
        collectives.raise_together(error, comm)


def _read_dtype(stored: np.dtype) -> np.dtype:
    """float32/float64 are kept; every other numeric type is read as float64."""
    return stored if stored in X_DTYPES else np.dtype(np.float64)


def _first_nonfinite(values: np.ndarray) -> int:
    """Flat index of the first NaN or Inf in ``values``, or -1; scanned in slices so that the
    temporary mask stays small. Non-float arrays cannot hold either."""
    if values.dtype.kind != "f":
        return -1
    flat = values.reshape(-1)
    for begin in range(0, flat.size, _SCAN_VALUES):
        finite = np.isfinite(flat[begin:begin + _SCAN_VALUES])
        if not finite.all():
            return begin + int(np.argmin(finite))
    return -1


def _first_out_of_range(columns: np.ndarray, n_features: int) -> int:
    """Position of the first column index outside ``0..n_features-1``, or -1."""
    for begin in range(0, columns.size, _SCAN_VALUES):
        part = columns[begin:begin + _SCAN_VALUES]
        bad = (part < 0) | (part >= n_features)
        if bad.any():
            return begin + int(np.argmax(bad))
    return -1


def _contents(handle: h5py.File, limit: int = 20) -> str:
    """'the file holds: X (1000, 20) float32, y (1000,) int64, ...' for error messages."""
    found: list[str] = []
    csr_groups: list[str] = []

    def visit(name: str, node) -> None:
        if any(name.startswith(group + "/") for group in csr_groups):
            return
        if isinstance(node, h5py.Dataset):
            found.append(f"{name} {node.shape} {node.dtype}")
        elif isinstance(node, h5py.Group) and "indptr" in node:
            csr_groups.append(name)
            found.append(f"{name} (CSR group)")

    handle.visititems(visit)
    if not found:
        return "the file holds no data sets"
    more = f", ... ({len(found) - limit} more)" if len(found) > limit else ""
    return "the file holds: " + ", ".join(found[:limit]) + more


# -- global batch order ----------------------------------------------------------------------

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
    def for_shard(cls, shard: Shard | LazyShard, batch_size: int, seed: int) -> BatchPlan:
        """The plan for the rows a :class:`Shard` (or :class:`LazyShard`) owns."""
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


def _check_non_negative_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer; got {value!r}")


if __name__ == "__main__":
    from . import datatools

    sys.exit(datatools.main())
