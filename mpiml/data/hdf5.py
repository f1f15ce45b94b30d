"""This rank's rows of an HDF5 data set, read by hyperslab and checked the same way on every rank.

Layouts (docs/data.md):

* dense -- a 2-D numeric data set ``X`` (float32 and float64 are kept, other numeric types are
  read as float64);
* CSR -- a group ``X`` holding 1-D data sets ``data``, ``indices`` and ``indptr`` and an
  attribute ``shape = (n_rows, n_features)``: the arrays of ``scipy.sparse.csr_matrix``;
* labels -- an optional 1-D numeric data set ``y`` with one entry per row;
* sample weights -- an optional 1-D numeric data set (``w``) with one entry per row, finite and
  >= 0.

Rank r of p owns rows :func:`row_range` ``(n, r, p)`` and reads those rows by HDF5 hyperslab and
nothing else. Every check whose outcome could differ between ranks (a NaN in one rank's rows, a
file one rank cannot read) ends in :func:`mpiml.comm.raise_together`, so every rank raises
the same error and none is left waiting in a collective.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import h5py
import numpy as np
import scipy.sparse

from ..comm import agree_on_error, allgather_object, mark_raised_together, rank_and_size, world
from .scan import (
    SCAN_VALUES,
    X_DTYPES,
    available_bytes,
    contents,
    first_nonfinite,
    first_out_of_range,
    missing_sources,
    read_dtype,
    shown_value,
)
from .shard import (
    CLASSIFICATION_TASKS,
    TASKS,
    DataError,
    MissingDataError,
    Shard,
    naming_read_errors,
    row_range,
)
from .weights import check_weights

CSR_MEMBERS = ("data", "indices", "indptr")

#: Bytes of X per HDF5 read and per default chunk of :meth:`LazyShard.chunks`: large enough for
#: full disk bandwidth, small enough that every temporary beside the shard stays a few MB.
CHUNK_BYTES = 16 << 20
_INT32_MAX = np.iinfo(np.int32).max


def load_shard(path, comm=None, x: str = "X", y: str | None = "y", dtype=None,
               task: str | None = None, block_rows: int = 1, progress=None,
               w: str | None = None) -> Shard:
    """Read this rank's rows of ``x`` (and ``y``, and the sample weights ``w``) from the HDF5
    file ``path``. Collective.

    ``dtype`` (float32 or float64) converts X while reading, slice by slice into one
    preallocated array, so two full copies never coexist. ``task`` maps labels (see
    :class:`Shard`); ``y=None`` loads no labels (K-Means). ``block_rows`` splits the rows in
    whole blocks of that many rows (see :func:`row_range`). ``progress()``, when given, is
    called after every slice read (e.g. to tell a stall watchdog the reading goes on). Every
    rank raises the same :class:`DataError`, ``FileNotFoundError`` or ``OSError`` when the data
    are unusable.
    """
    with open_shard(path, comm, x=x, y=y, dtype=dtype, task=task, block_rows=block_rows,
                    progress=progress, w=w) as lazy:
        return lazy.load()


def iter_chunks(path, comm=None, x: str = "X", y: str | None = "y", chunk_rows: int | None = None,
                dtype=None, task: str | None = None
                ) -> Iterator[tuple[np.ndarray | scipy.sparse.csr_matrix, np.ndarray | None]]:
    """Yield ``(X_chunk, y_chunk)`` over this rank's rows, at most ``chunk_rows`` rows at a time.

    Peak memory is one chunk, not the shard: use it for shards larger than memory. Collective,
    like :meth:`LazyShard.chunks`; use :func:`open_shard` to know n_features or the classes before
    the first chunk or to make several passes.
    """
    with open_shard(path, comm, x=x, y=y, dtype=dtype, task=task) as lazy:
        yield from lazy.chunks(chunk_rows)


def open_shard(path, comm=None, x: str = "X", y: str | None = "y", dtype=None,
               task: str | None = None, block_rows: int = 1, progress=None,
               w: str | None = None, memory_budget: int | None = None) -> LazyShard:
    """Open this rank's rows of ``path`` without reading X yet. Collective. ``memory_budget``
    (bytes of X this rank will hold at most: it streams the rest) bounds the memory check.

    Checks the layout on every rank and this rank's labels (scanned in slices, not kept), agrees
    on the outcome, and for classification agrees on the class set (one allgather of each rank's
    ``np.unique``, so a class absent from one rank's rows maps to the same index everywhere).
    Use it as a context manager, or call :meth:`LazyShard.close`.
    """
    comm = world(comm)
    rank, size = rank_and_size(comm)
    lazy, error, local_labels = None, None, None
    try:
        lazy = LazyShard(path, comm, x, y, dtype, task, block_rows, progress, w)
        lazy.memory_budget = memory_budget
        lazy._open(rank, size)
        local_labels = lazy._scan_labels()
    except Exception as exc:  # every rank must learn of any rank's failure, whatever it is
        error = exc
    try:
        agree_on_error(error, comm)
        if task in CLASSIFICATION_TASKS:
            lazy.classes = lazy._agree_on_classes(local_labels)
    except BaseException:
        if lazy is not None:
            lazy.close()
        raise
    return lazy


class LazyShard:
    """This rank's rows of an open HDF5 file, read on demand: all at once or chunk by chunk.

    Attributes as :class:`Shard` (``start``, ``stop``, ``n_total``, ``n_features``, ``classes``,
    ``task``) plus ``sparse`` and ``dtype`` (of X as read). Built by :func:`open_shard`.
    """

    def __init__(self, path, comm, x: str, y: str | None, dtype, task: str | None,
                 block_rows: int = 1, progress=None, w: str | None = None):
        if dtype is not None and np.dtype(dtype) not in X_DTYPES:
            raise ValueError(f"dtype must be float32, float64 or None; got {dtype!r}")
        if task is not None and task not in TASKS:
            raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)} or None")
        if task is not None and y is None:
            raise ValueError(f"task {task!r} needs labels, but y=None asks for none")
        self.path = os.fspath(path)
        self.comm = comm
        self.x_name, self.y_name, self.w_name = x, y, w
        self.dtype = None if dtype is None else np.dtype(dtype)
        self.task = task
        self.block_rows = int(block_rows)
        self.progress = progress
        self.classes: np.ndarray | None = None
        self._file = self.memory_budget = None
        self._y = self._w = None

    # -- opening ------------------------------------------------------------------------------

    def _open(self, rank: int, size: int) -> None:
        """Open the file and check the layout on this rank; raise on anything unusable."""
        if not os.path.exists(self.path):
            raise FileNotFoundError(f"{self.path}: no such file")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:
            raise OSError(f"{self.path}: cannot open as HDF5 (truncated, corrupt or not an HDF5 "
                          f"file): {exc}") from exc
        node = self._file.get(self.x_name)
        if node is None:
            raise MissingDataError(f"{self.path}: no data set '{self.x_name}'; "
                                   f"{contents(self._file)}")
        if isinstance(node, h5py.Group):
            self._open_csr(node)
        elif isinstance(node, h5py.Dataset):
            self._open_dense(node)
        else:
            raise DataError(f"{self.path}: '{self.x_name}' is not a data set or a CSR group")
        if self.y_name is not None:
            self._y = self._open_column(self.y_name, "label", " (pass y=None for unlabelled data)")
        if self.w_name is not None:
            self._w = self._open_column(self.w_name, "weight")
        if self.n_total == 0:
            raise DataError(f"{self.path}: data set '{self.x_name}' has no rows")
        if size > self.n_total:
            raise DataError(f"{self.path}: data set '{self.x_name}' has {self.n_total} rows but "
                            f"the job has {size} ranks; every rank needs at least one row "
                            f"(run with at most {self.n_total} ranks)")
        n_blocks = -(-self.n_total // self.block_rows)
        if size > n_blocks:
            raise DataError(f"{self.path}: data set '{self.x_name}' has {self.n_total} rows, "
                            f"{n_blocks} blocks of {self.block_rows}, but the job has {size} "
                            f"ranks; every rank needs at least one block (run with at most "
                            f"{n_blocks} ranks, or use smaller blocks: train.block_rows)")
        self.start, self.stop = row_range(self.n_total, rank, size, self.block_rows)
        self._check_memory()

    def _check_memory(self) -> None:
        """Refuse, before anything is allocated, a declared size this rank cannot hold: its
        dense rows, or (any layout) one float64 vector per feature, as every model keeps."""
        available = available_bytes()
        if available is None:
            return
        itemsize = (self.dtype or np.dtype(np.float64)).itemsize
        wanted = [(self.n_features * 8, f"a model over its {self.n_features} features")]
        if not self.sparse:
            rows = (self.stop - self.start) * self.n_features * itemsize
            wanted.append((min(rows, self.memory_budget or rows), f"this rank's "
                           f"{self.stop - self.start} rows x {self.n_features} features"))
        for size, what in wanted:
            if size > available:
                raise DataError(f"{self.path}: '{self.x_name}' is too large to hold: {what} "
                                f"needs {size / 2**30:.3g} GiB; this host has "
                                f"{available / 2**30:.3g} GiB available (use more ranks or "
                                "hosts, or check the file's declared shape)")

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
        self.dtype = self.dtype or read_dtype(dataset.dtype)

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
        self.dtype = self.dtype or read_dtype(data.dtype)

    def _open_column(self, name: str, what: str, hint: str = "") -> h5py.Dataset:
        """The 1-D numeric data set ``name`` holding one ``what`` (label, weight) per row."""
        node = self._file.get(name)
        where = f"{self.path}: data set '{name}'"
        if node is None:
            raise MissingDataError(f"{self.path}: no {what} data set '{name}'{hint}; "
                                   f"{contents(self._file)}")
        if not isinstance(node, h5py.Dataset) or node.ndim != 1:
            shape = getattr(node, "shape", "a group")
            raise DataError(f"{where} must be 1-D (one {what} per row); it is {shape}")
        self._check_numeric(node, where)
        if len(node) != self.n_total:
            raise DataError(f"{self.path}: data set '{self.x_name}' has {self.n_total} rows but "
                            f"'{name}' has {len(node)} {what}s")
        return node

    def _check_numeric(self, dataset: h5py.Dataset, where: str) -> None:
        """Numbers, and (a linked data set) every input file there to read them from."""
        if dataset.dtype.kind not in "biuf":
            raise DataError(f"{where} has non-numeric dtype {dataset.dtype}; expected float32 or "
                            f"float64 (integers and booleans are read as float64)")
        if missing := missing_sources(self.path, dataset):
            raise DataError(f"{where} is linked to inputs that do not exist: "
                            f"{', '.join(missing)} (mpiml-data link again, or restore them)")

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
        for lo in range(self.start, self.stop, SCAN_VALUES):
            labels = self._read_labels(lo, min(self.stop, lo + SCAN_VALUES))
            if labels.dtype.kind == "f":
                bad = first_nonfinite(labels)
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
        classes = np.unique(np.concatenate(allgather_object(local_labels, self.comm)))
        where = f"{self.path}: data set '{self.y_name}'"
        shown = ", ".join(str(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
        if self.task == "binary" and len(classes) != 2:
            raise mark_raised_together(DataError(
                f"{where}: task 'binary' needs exactly 2 distinct labels; found {len(classes)}: "
                f"{shown}"))
        if self.task == "multiclass" and len(classes) < 2:
            raise mark_raised_together(DataError(
                f"{where}: task 'multiclass' needs at least 2 distinct labels; found "
                f"{len(classes)}: {shown}"))
        return classes

    # -- reading ------------------------------------------------------------------------------

    def load(self, rows=None) -> Shard:
        """Read all of this rank's rows into memory (X: ``rows(self)`` instead when given, e.g.
        :class:`mpiml.data.stream.StreamedRows`). Collective (one agreement on the outcome)."""
        error, X, y, w = None, None, None, None
        try:
            X = self.read_rows(self.start, self.stop) if rows is None else rows(self)
            y = self._labels_for(self.start, self.stop)
            w = self._weights_for(self.start, self.stop)
        except Exception as exc:  # agreed below, whatever it is
            error = exc
        agree_on_error(error, self.comm)
        return Shard(X=X, y=y, start=self.start, stop=self.stop, n_total=self.n_total,
                     n_features=self.n_features, classes=self.classes, task=self.task, w=w)

    def chunks(self, chunk_rows: int | None = None
               ) -> Iterator[tuple[np.ndarray | scipy.sparse.csr_matrix, np.ndarray | None]]:
        """Yield ``(X_chunk, y_chunk)`` over this rank's rows in order. Collective.

        ``chunk_rows`` defaults to about 16 MB of X. Every rank yields the same number of chunks
        (the count of the largest shard; a rank with fewer rows may get empty last chunks), and
        each chunk's read ends in one agreement (an allreduce of a flag), so a loop that calls a
        collective once per chunk stays in step and a NaN in one rank's chunk raises on all.
        Every rank must therefore consume the whole iterator. May be called again for another
        pass.
        """
        chunk_rows = self._default_chunk_rows() if chunk_rows is None else int(chunk_rows)
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive integer; got {chunk_rows}")
        first, last = row_range(self.n_total, 0, self.comm.Get_size(), self.block_rows)
        for index in range(-(-(last - first) // chunk_rows)):  # rank 0 holds the most rows
            lo = min(self.stop, self.start + index * chunk_rows)
            hi = min(self.stop, lo + chunk_rows)
            error, chunk = None, None
            try:
                chunk = (self.read_rows(lo, hi), self._labels_for(lo, hi))
            except Exception as exc:  # agreed below, whatever it is
                error = exc
            agree_on_error(error, self.comm)
            yield chunk

    def _default_chunk_rows(self) -> int:
        if self.sparse:
            row_bytes = self._nnz / self.n_total * (self.dtype.itemsize + 8) + 8
        else:
            row_bytes = self.n_features * self.dtype.itemsize
        return max(1, int(CHUNK_BYTES // max(row_bytes, 1)))

    def _labels_for(self, lo: int, hi: int) -> np.ndarray | None:
        """Labels of global rows ``[lo, hi)`` mapped for the task (they were checked at open),
        read in slices into the output so no second full-length copy is made."""
        if self._y is None:
            return None
        regression = np.float64 if self.task == "regression" else self._y.dtype
        out = np.empty(hi - lo, dtype=np.int64 if self.classes is not None else regression)
        for begin in range(lo, hi, SCAN_VALUES):
            end = min(hi, begin + SCAN_VALUES)
            labels = self._read_labels(begin, end)
            if self.classes is not None:
                labels = np.searchsorted(self.classes, labels)
            out[begin - lo:end - lo] = labels
        return out

    def _weights_for(self, lo: int, hi: int) -> np.ndarray | None:
        """Sample weights of global rows ``[lo, hi)`` as float64, read in slices and checked."""
        if self._w is None:
            return None
        out = np.empty(hi - lo)
        for begin in range(lo, hi, SCAN_VALUES):
            end = min(hi, begin + SCAN_VALUES)
            with self._reading(self.w_name, begin, end):
                out[begin - lo:end - lo] = self._w[begin:end]
        check_weights(out, lo, f"{self.path}: data set '{self.w_name}'")
        return out

    def _read_labels(self, lo: int, hi: int) -> np.ndarray:
        with self._reading(self.y_name, lo, hi):
            return self._y[lo:hi]

    def read_rows(self, lo: int, hi: int, check: bool = True, out: np.ndarray | None = None
                  ) -> np.ndarray | scipy.sparse.csr_matrix:
        """Global rows ``[lo, hi)`` of X, read now; checked (finite, in range) unless dense
        rows already checked (``check=False``: a later pass of streamed rows). Dense rows go
        into the first rows of ``out`` when given (a buffer reused from read to read)."""
        return self._read_csr(lo, hi) if self.sparse else self._read_dense(lo, hi, check, out)

    def _read_dense(self, lo: int, hi: int, check: bool, out: np.ndarray | None) -> np.ndarray:
        """Rows ``[lo, hi)`` of dense X, read and checked in slices of about CHUNK_BYTES."""
        out = (np.empty((hi - lo, self.n_features), self.dtype) if out is None
               else out[: hi - lo])
        step = max(1, CHUNK_BYTES // (self.n_features * self.dtype.itemsize))
        for begin in range(lo, hi, step):
            end = min(hi, begin + step)
            part = out[begin - lo:end - lo]
            with self._reading(self.x_name, begin, end):
                self._X.read_direct(part, np.s_[begin:end])
            bad = first_nonfinite(part) if check else -1
            if bad >= 0:
                row, column = divmod(bad, self.n_features)
                stored = self._X[begin + row, column]
                raise DataError(f"{self.path}: data set '{self.x_name}' holds "
                                f"{shown_value(stored, part[row, column])} at global row "
                                f"{begin + row}, column {column} (every value must be finite)")
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
        bad = first_nonfinite(values)
        out_of_range = first_out_of_range(columns, self.n_features)
        if bad >= 0 or out_of_range >= 0:
            at = min(p for p in (bad, out_of_range) if p >= 0)
            row = lo + int(np.searchsorted(local_pointers, at, side="right")) - 1
            if at == bad:
                stored = data[first + at]
                raise DataError(f"{where} holds {shown_value(stored, values[at])} at global "
                                f"row {row}, column {columns[at]} (every value must be finite)")
            raise DataError(f"{where}: column index {columns[at]} at global row {row} is "
                            f"outside 0..{self.n_features - 1}")
        return scipy.sparse.csr_matrix((values, columns, local_pointers),
                                       shape=(hi - lo, self.n_features), copy=False)

    @contextmanager
    def _reading(self, name: str, lo: int, hi: int):
        with naming_read_errors(self.path, name, lo, hi):
            yield
        if self.progress is not None:
            self.progress()

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
