"""The ``python -m mpiml.data`` command line: make, convert and inspect HDF5 training data.

Subcommands (docs/data.md):

* ``synth``   -- a synthetic data set drawn from a hidden model fixed by the seed, written in
  bounded memory; the bytes depend only on the arguments (each block of ``SYNTH_UNIT_ROWS`` rows
  has its own random stream), never on how many rows go into one HDF5 write;
* ``convert`` -- CSV, LIBSVM/svmlight, .npy or .npz to the HDF5 layouts that
  :func:`mpiml.data.load_shard` reads; text formats are streamed in line chunks;
* ``inspect`` -- data sets, shapes, dtypes, label counts and NaN/Inf counts (streamed);
* ``example`` -- scikit-learn's bundled data sets with a fixed train/test split.

Each subcommand is also a function (:func:`synth`, :func:`convert`, :func:`inspect`,
:func:`write_example`) that raises ``ValueError`` (:class:`~mpiml.data.DataError` for bad input
data) or ``OSError``; :func:`main` turns those into one line on stderr and exit status 1.
Progress goes to stderr only when it is a terminal.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass

import h5py
import numpy as np
import scipy.sparse

from .data import DataError

PROG = "python -m mpiml.data"
SYNTH_TASKS = ("binary", "multiclass", "regression", "blobs")
#: Rows per random stream in ``synth``: row block u is drawn from ``default_rng([seed, part, u])``.
SYNTH_UNIT_ROWS = 512
#: Default bytes of X per HDF5 write (and per parsed chunk of a text file).
WRITE_BYTES = 4 << 20
FORMATS = {".csv": "csv", ".tsv": "csv", ".svm": "libsvm", ".libsvm": "libsvm",
           ".svmlight": "libsvm", ".npy": "npy", ".npz": "npz"}
EXAMPLES = {
    "breast_cancer": ("load_breast_cancer", "binary"),
    "digits": ("load_digits", "multiclass"),
    "diabetes": ("load_diabetes", "regression"),
    "wine": ("load_wine", "multiclass"),
    "line": (None, "regression"),  # generated: y = 2x + 1 + noise (needs no scikit-learn)
}
LINE_ROWS, LINE_TEST_ROWS, LINE_NOISE = 10_000, 2_000, 0.5
EXAMPLE_TEST_FRACTION = 0.25
EXAMPLE_SPLIT_SEED = 0
_LABEL_COUNT_LIMIT = 20
_SCAN_VALUES = 1 << 20
_QID = re.compile(r"qid:\S+")


# -- shared plumbing --------------------------------------------------------------------------

class _Progress:
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


@contextmanager
def _atomic_hdf5(path):
    """Write an HDF5 file under a temporary name and move it into place only on success; a
    missing parent directory of ``path`` is created."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    try:
        with h5py.File(partial, "w") as handle:
            yield handle
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


class _RowAppender:
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


def _rows_per_write(n_features: int, itemsize: int) -> int:
    return max(1, WRITE_BYTES // (max(1, n_features) * itemsize))


# -- synth ------------------------------------------------------------------------------------

@dataclass
class _HiddenModel:
    """The model a synthetic data set is drawn from; fixed by the seed alone."""

    task: str
    n_features: int
    density: float
    noise: float
    coef: np.ndarray  # (outputs, features); blobs: the cluster centres (classes, features)
    intercept: np.ndarray

    @classmethod
    def draw(cls, task: str, n_features: int, n_classes: int, informative: int, noise: float,
             density: float, seed: int) -> _HiddenModel:
        rng = np.random.default_rng([seed, 0])
        chosen = np.sort(rng.choice(n_features, size=informative, replace=False))
        outputs = n_classes if task in ("multiclass", "blobs") else 1
        coef = np.zeros((outputs, n_features))
        if task == "blobs":
            coef[:, chosen] = 4.0 * rng.standard_normal((outputs, informative))
            intercept = np.zeros(outputs)
        else:
            # informative scores have standard deviation 3 whatever the width and density
            scale = 3.0 / math.sqrt(informative * density)
            coef[:, chosen] = scale * rng.standard_normal((outputs, informative))
            spread = 1.0 if task == "regression" else 0.5
            intercept = spread * rng.standard_normal(outputs)
        return cls(task, n_features, density, noise, coef, intercept)

    def rows(self, rng: np.random.Generator, n_rows: int):
        """``n_rows`` rows (dense float64 array or CSR triple) and their labels."""
        if self.task == "blobs":
            labels = rng.integers(len(self.coef), size=n_rows)
            X = self.coef[labels] + self.noise * rng.standard_normal((n_rows, self.n_features))
            return X, labels.astype(np.int64)
        if self.density < 1.0:
            values, columns, lengths = _bernoulli_cells(rng, n_rows, self.n_features,
                                                        self.density)
            indptr = np.concatenate(([0], np.cumsum(lengths)))
            X = (values, columns, lengths)
            matrix = scipy.sparse.csr_matrix((values, columns, indptr),
                                             shape=(n_rows, self.n_features))
        else:
            X = matrix = rng.standard_normal((n_rows, self.n_features))
        scores = np.asarray(matrix @ self.coef.T) + self.intercept
        scores += self.noise * rng.standard_normal(scores.shape)
        if self.task == "regression":
            return X, scores[:, 0]
        if self.task == "binary":
            return X, (scores[:, 0] > 0).astype(np.int64)
        return X, np.argmax(scores, axis=1).astype(np.int64)


def _bernoulli_cells(rng: np.random.Generator, n_rows: int, n_features: int, density: float):
    """CSR triple of an ``n_rows x n_features`` matrix whose cells are nonzero with probability
    ``density``, values standard normal. Geometric gaps between nonzero cells give exactly that
    Bernoulli pattern in time and memory proportional to the nonzeros, not to the cells."""
    cells = n_rows * n_features
    expected = cells * density
    batch = int(expected + 4 * math.sqrt(expected) + 16)
    found, last = [], -1
    while last < cells:
        positions = last + np.cumsum(rng.geometric(density, size=batch))
        found.append(positions)
        last = int(positions[-1])
    positions = np.concatenate(found)
    positions = positions[positions < cells]
    rows, columns = np.divmod(positions, n_features)
    values = rng.standard_normal(len(positions))
    return values, columns.astype(np.int32), np.bincount(rows, minlength=n_rows)


def synth(out, task: str, rows: int, features: int, *, seed: int, classes: int | None = None,
          informative: int | None = None, noise: float = 1.0, density: float = 1.0,
          test_rows: int = 0, dtype="float32", chunk_rows: int | None = None,
          progress: bool = False) -> None:
    """Write a synthetic data set (X, y and optionally X_test, y_test) to the HDF5 file ``out``.

    The hidden model: ``informative`` features (default min(features, 10) for dense data, all
    for sparse) carry weights that give scores of standard deviation 3; ``noise`` is the
    standard deviation of Gaussian noise on the regression target, on the logits (binary:
    label = score > 0; multiclass: argmax), or around the cluster centres (blobs, y = the true
    cluster). ``density < 1`` writes CSR X.
    Memory stays near ``chunk_rows`` rows (default about 4 MB) whatever ``rows`` is.
    """
    n_classes = _check_synth_args(task, rows, features, classes, informative, noise, density,
                                  test_rows, seed, dtype)
    if informative is None:  # sparse rows hold few nonzeros: let every feature count
        informative = min(features, 10) if density == 1.0 else features
    dtype = np.dtype(dtype)
    model = _HiddenModel.draw(task, features, n_classes, informative, noise, density, seed)
    sparse = density < 1.0
    chunk_rows = chunk_rows or _rows_per_write(int(features * density) or 1, dtype.itemsize)
    label_dtype = np.float64 if task == "regression" else np.int64
    counter = _Progress("synth", rows + test_rows, progress)
    with _atomic_hdf5(out) as handle:
        for part, (x_name, y_name, n_rows) in enumerate(
                (("X", "y", rows), ("X_test", "y_test", test_rows)), start=1):
            if n_rows == 0:
                continue
            appender = _RowAppender(handle, x_name, y_name, n_features=features, dtype=dtype,
                                    sparse=sparse, label_dtype=label_dtype,
                                    chunk_rows=chunk_rows, index_dtype=np.int32)
            for unit, begin in enumerate(range(0, n_rows, SYNTH_UNIT_ROWS)):
                size = min(SYNTH_UNIT_ROWS, n_rows - begin)
                X, y = model.rows(np.random.default_rng([seed, part, unit]), size)
                if sparse:
                    X = (X[0].astype(dtype), X[1], X[2])
                else:
                    X = X.astype(dtype)
                appender.append(X, y)
                counter.advance(size)
            appender.finish(features)
        hidden = handle.create_group("hidden_model")
        if task == "blobs":
            hidden["centers"] = model.coef
        else:
            hidden["coef"] = model.coef
            hidden["intercept"] = model.intercept
        handle.attrs.update({
            "created_by": "mpiml.data synth", "task": task, "seed": seed, "rows": rows,
            "features": features, "informative": informative, "noise": noise,
            "density": density, "test_rows": test_rows, "dtype": dtype.name,
            "unit_rows": SYNTH_UNIT_ROWS, "layout": "csr" if sparse else "dense",
        })
        if task != "regression":
            handle.attrs["n_classes"] = n_classes
    counter.finish()


def _check_synth_args(task, rows, features, classes, informative, noise, density, test_rows,
                      seed, dtype) -> int:
    """Validate synth's arguments; return the number of classes (1 for regression)."""
    if task not in SYNTH_TASKS:
        raise ValueError(f"unknown task {task!r}; valid tasks: {', '.join(SYNTH_TASKS)}")
    for name, value, least in (("rows", rows, 1), ("features", features, 1),
                               ("test_rows", test_rows, 0), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}; got {value!r}")
    if informative is not None and not 1 <= informative <= features:
        raise ValueError(f"informative must be between 1 and features ({features}); "
                         f"got {informative}")
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1]; got {density}")
    if not 0.0 <= noise < math.inf:
        raise ValueError(f"noise must be a finite number >= 0; got {noise}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype!r}")
    if task == "blobs" and density < 1.0:
        raise ValueError("blobs are dense: density must be 1")
    if task == "regression":
        if classes is not None:
            raise ValueError("classes has no meaning for task 'regression'")
        return 1
    if task == "binary":
        if classes not in (None, 2):
            raise ValueError(f"task 'binary' has 2 classes; got classes={classes}")
        return 2
    n_classes = 3 if classes is None else classes
    if n_classes < 2:
        raise ValueError(f"task {task!r} needs classes >= 2; got {n_classes}")
    return n_classes


# -- convert ----------------------------------------------------------------------------------

def convert(src, out, *, fmt: str | None = None, label_column: str | int | None = -1,
            header: str = "auto", delimiter: str | None = None, n_features: int | None = None,
            zero_based: str = "auto", x_key: str = "X", y_key: str | None = "y",
            dtype=None, progress: bool = False) -> None:
    """Convert ``src`` (CSV, LIBSVM/svmlight, .npy or .npz) to the HDF5 file ``out``.

    ``fmt`` defaults to the one the file name's extension implies. CSV: ``label_column`` is a
    column name, an index (default -1, the last) or None for no labels; ``header`` is "auto",
    "yes" or "no"; labels that are not numbers become class codes in sorted name order
    (attribute ``label_names`` on y). LIBSVM: to CSR; ``zero_based`` "auto" (one-based unless
    an index 0 occurs, as scikit-learn's load_svmlight_file decides), "yes" or "no".
    .npy holds X only; .npz holds ``x_key`` and, if present, ``y_key``, or a matrix saved by
    scipy.sparse.save_npz. ``dtype`` of X: float64 for text, the stored float type otherwise.
    """
    src = os.fspath(src)
    if not os.path.isfile(src):
        raise FileNotFoundError(f"{src}: no such file")
    fmt = fmt or FORMATS.get(os.path.splitext(src)[1].lower())
    if fmt not in ("csv", "libsvm", "npy", "npz"):
        raise ValueError(f"cannot tell the format of {src} from its extension; pass --format "
                         f"csv, libsvm, npy or npz")
    if dtype is not None and np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype!r}")
    counter = _Progress(f"convert {os.path.basename(src)}", None, progress)
    with _atomic_hdf5(out) as handle:
        try:
            if fmt == "csv":
                _convert_csv(src, handle, label_column, header, delimiter, dtype, counter)
            elif fmt == "libsvm":
                _convert_libsvm(src, handle, n_features, zero_based, dtype, counter)
            else:
                _convert_numpy(src, handle, fmt, x_key, y_key, dtype, counter)
        except UnicodeDecodeError as exc:
            raise DataError(f"{src}: not a {fmt} text file ({exc})") from exc
        handle.attrs.update({"created_by": "mpiml.data convert", "format": fmt,
                             "source": os.path.basename(src)})
    counter.finish()


def _convert_csv(src, handle, label_column, header, delimiter, dtype, counter) -> None:
    if header not in ("auto", "yes", "no"):
        raise ValueError(f"header must be auto, yes or no; got {header!r}")
    delimiter = delimiter or ("\t" if src.lower().endswith(".tsv") else ",")
    with open(src, newline="") as stream:
        numbered = ((number, line) for number, line in enumerate(stream, start=1)
                    if line.strip())
        first = next(numbered, None)
        if first is None:
            raise DataError(f"{src}: no data rows")
        names = next(csv.reader([first[1]], delimiter=delimiter))
        n_columns = len(names)
        label = _label_index(src, names, label_column, header)
        if header == "yes" or isinstance(label_column, str) or (
                header == "auto" and any(field.strip() and not _is_number(field)
                                         for position, field in enumerate(names)
                                         if position != label)):
            rows = numbered
        else:
            rows = itertools.chain([first], numbered)
            names = None
        n_features = n_columns - (label is not None)
        if n_features < 1:
            raise DataError(f"{src}: no feature columns")
        chunk_lines = max(64, WRITE_BYTES // (8 * n_columns))
        dtype = np.dtype(dtype or np.float64)
        appender = _RowAppender(handle, "X", None if label is None else "y",
                                n_features=n_features, dtype=dtype, sparse=False,
                                label_dtype=np.float64, chunk_rows=chunk_lines)
        label_codes: dict[str, int] | None = None  # text labels -> codes in first-seen order
        while chunk := list(itertools.islice(rows, chunk_lines)):
            if appender.n_rows == 0 and label is not None:
                fields = next(csv.reader([chunk[0][1]], delimiter=delimiter))
                if len(fields) > label and not _is_number(fields[label]):
                    label_codes = {}
            X, y = _parse_csv_chunk(src, chunk, delimiter, n_columns, label, label_codes)
            appender.append(X.astype(dtype, copy=False), y)
            counter.advance(len(X))
        appender.finish()
        if appender.n_rows == 0:
            raise DataError(f"{src}: no data rows")
        if names is not None:
            handle.attrs["feature_names"] = [n for i, n in enumerate(names) if i != label]
        if label_codes:
            _sort_label_codes(appender.labels, label_codes)


def _label_index(src, names, label_column, header) -> int | None:
    """Column index of the labels (None for no labels) from a name or a possibly negative index."""
    if label_column is None:
        return None
    if isinstance(label_column, str):
        if header == "no":
            raise ValueError(f"label column {label_column!r} is a name, but header=no")
        if label_column not in names:
            raise DataError(f"{src}: no column named {label_column!r} in the header "
                            f"({', '.join(names)})")
        return names.index(label_column)
    if not -len(names) <= label_column < len(names):
        raise DataError(f"{src}: label column {label_column} is out of range: the file has "
                        f"{len(names)} columns")
    return label_column % len(names)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_csv_chunk(src, chunk, delimiter, n_columns, label, label_codes):
    """Parse ``[(line_number, line), ...]`` into X (float64) and labels.

    Numeric files go through numpy's C parser; files with text labels through the csv module.
    A chunk that fails is re-read line by line to name the first bad line.
    """
    lines = [line for _, line in chunk]
    try:
        if label_codes is None:
            table = np.loadtxt(lines, delimiter=delimiter, dtype=np.float64, ndmin=2,
                               comments=None, quotechar='"')
            if table.shape[1] != n_columns:
                raise ValueError("column count")
            if label is None:
                return table, None
            return np.delete(table, label, axis=1), table[:, label]
        fields = list(csv.reader(lines, delimiter=delimiter))
        if any(len(row) != n_columns for row in fields):
            raise ValueError("column count")
        X = np.array([row[:label] + row[label + 1:] for row in fields], dtype=np.float64)
        codes = [label_codes.setdefault(row[label], len(label_codes)) for row in fields]
        return X, np.array(codes, dtype=np.float64)
    except ValueError:
        raise _bad_csv_line(src, chunk, delimiter, n_columns, label,
                            label_codes is not None) from None


def _bad_csv_line(src, chunk, delimiter, n_columns, label, text_labels) -> DataError:
    for number, line in chunk:
        fields = next(csv.reader([line], delimiter=delimiter))
        if len(fields) != n_columns:
            return DataError(f"{src}, line {number}: {len(fields)} fields where the first line "
                             f"has {n_columns}")
        for position, field in enumerate(fields):
            if (position != label or not text_labels) and not _is_number(field):
                what = "label" if position == label else "value"
                return DataError(f"{src}, line {number}, column {position + 1}: {what} "
                                 f"{field!r} is not a number")
    return DataError(f"{src}, lines {chunk[0][0]}..{chunk[-1][0]}: cannot parse")


def _sort_label_codes(labels: h5py.Dataset, codes: dict[str, int]) -> None:
    """Renumber text-label codes (first-seen order) into sorted name order, slice by slice."""
    names = sorted(codes)
    renumber = np.empty(len(codes), dtype=np.float64)
    for new, name in enumerate(names):
        renumber[codes[name]] = new
    for begin in range(0, len(labels), _SCAN_VALUES):
        end = min(len(labels), begin + _SCAN_VALUES)
        labels[begin:end] = renumber[labels[begin:end].astype(np.int64)]
    labels.attrs["label_names"] = names


def _convert_libsvm(src, handle, n_features, zero_based, dtype, counter) -> None:
    if zero_based not in ("auto", "yes", "no"):
        raise ValueError(f"zero_based must be auto, yes or no; got {zero_based!r}")
    dtype = np.dtype(dtype or np.float64)
    appender = _RowAppender(handle, "X", "y", n_features=None, dtype=dtype, sparse=True,
                            label_dtype=np.float64, chunk_rows=1)
    smallest, largest = math.inf, -1
    with open(src) as stream:
        numbered = enumerate(stream, start=1)
        while chunk := list(itertools.islice(numbered, 1 << 13)):
            parsed = _parse_libsvm_chunk(src, chunk)
            if parsed is None:
                continue
            labels, values, columns, lengths = parsed
            if len(columns):
                smallest, largest = min(smallest, int(columns.min())), max(largest,
                                                                           int(columns.max()))
            appender.append((values.astype(dtype), columns, lengths), labels)
            counter.advance(len(labels))
    if appender.n_rows == 0:
        raise DataError(f"{src}: no data rows")
    shift = zero_based == "no" or (zero_based == "auto" and smallest > 0)
    if shift and smallest == 0:
        raise DataError(f"{src}: feature index 0 in a file read as one-based (zero_based=no)")
    largest -= shift
    if n_features is None:
        n_features = largest + 1
    elif largest >= n_features:
        raise DataError(f"{src}: feature index {largest + shift} needs n_features >= "
                        f"{largest + 1}; got n_features={n_features}")
    appender.finish(max(n_features, 1))
    if shift:
        indices = handle["X/indices"]
        for begin in range(0, len(indices), _SCAN_VALUES):
            end = min(len(indices), begin + _SCAN_VALUES)
            indices[begin:end] = indices[begin:end] - 1
    handle.attrs["zero_based"] = not shift


def _parse_libsvm_chunk(src, chunk):
    """Parse ``[(line_number, line), ...]`` of ``label idx:val ...`` lines into labels and a CSR
    triple. Comments (#) and qid: fields are ignored; blank lines are skipped. A chunk that
    fails is re-read line by line to name the first bad line."""
    numbers, labels, pairs, lengths = [], [], [], []
    for number, line in chunk:
        fields = line.split("#", 1)[0].split(None, 1)
        if not fields:
            continue
        rest = fields[1] if len(fields) > 1 else ""
        if "qid:" in rest:
            rest = _QID.sub(" ", rest)
        numbers.append(number)
        labels.append(fields[0])
        lengths.append(rest.count(":"))
        pairs.append(rest.replace(":", " "))
    if not numbers:
        return None
    lengths = np.array(lengths, dtype=np.int64)
    try:
        labels = np.array(labels, dtype=np.float64)
        flat = np.array(" ".join(pairs).split(), dtype=np.float64)
        if flat.size != 2 * lengths.sum():
            raise ValueError("token count")
    except ValueError:
        raise _bad_libsvm_line(src, chunk) from None
    columns = flat[0::2].astype(np.int64)
    row_of = np.repeat(np.arange(len(lengths)), lengths)
    bad = np.flatnonzero(columns != flat[0::2])
    if bad.size:
        raise DataError(f"{src}, line {numbers[row_of[bad[0]]]}: feature index "
                        f"{flat[2 * bad[0]]} is not an integer")
    if columns.size and columns.min() < 0:
        at = int(np.argmax(columns < 0))
        raise DataError(f"{src}, line {numbers[row_of[at]]}: negative feature index "
                        f"{columns[at]}")
    unsorted = np.flatnonzero((np.diff(columns) <= 0) & (row_of[1:] == row_of[:-1]))
    if unsorted.size:
        raise DataError(f"{src}, line {numbers[row_of[unsorted[0] + 1]]}: feature indices must "
                        f"be sorted and unique (as scikit-learn's load_svmlight_file requires)")
    return labels, flat[1::2], columns, lengths


def _bad_libsvm_line(src, chunk) -> DataError:
    for number, line in chunk:
        fields = _QID.sub(" ", line.split("#", 1)[0]).split()
        if not fields:
            continue
        if not _is_number(fields[0]):
            return DataError(f"{src}, line {number}: label {fields[0]!r} is not a number "
                             f"(multi-label files are not supported)")
        for field in fields[1:]:
            index, colon, value = field.partition(":")
            if not colon or not _is_number(index) or not _is_number(value):
                return DataError(f"{src}, line {number}: {field!r} is not index:value")
    return DataError(f"{src}, lines {chunk[0][0]}..{chunk[-1][0]}: cannot parse")


def _convert_numpy(src, handle, fmt, x_key, y_key, dtype, counter) -> None:
    if fmt == "npy":
        X, y = _load_npy(src), None
    else:
        try:
            archive = np.load(src, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{src}: not a readable .npz file: {exc}") from exc
        with archive:
            if {"format", "shape", "data", "indices", "indptr"} <= set(archive.files):
                _write_saved_sparse(src, handle, archive, dtype, counter)
                return
            if x_key not in archive.files:
                raise DataError(f"{src}: no array {x_key!r}; the file holds "
                                f"{', '.join(archive.files)} (choose with --x-key)")
            X = archive[x_key]
            y = archive[y_key] if y_key in archive.files else None
            if y_key is not None and y is None and y_key != "y":
                raise DataError(f"{src}: no array {y_key!r}; the file holds "
                                f"{', '.join(archive.files)} (choose with --y-key)")
    if X.ndim != 2 or X.dtype.kind not in "biuf" or X.shape[1] == 0:
        raise DataError(f"{src}: X must be a 2-D numeric array with columns; got shape "
                        f"{X.shape}, dtype {X.dtype}")
    if y is not None and (y.ndim != 1 or len(y) != len(X) or y.dtype.kind not in "biuf"):
        raise DataError(f"{src}: y must be a 1-D numeric array with {len(X)} entries; got "
                        f"shape {y.shape}, dtype {y.dtype}")
    dtype = np.dtype(dtype or (X.dtype if X.dtype in (np.float32, np.float64) else np.float64))
    step = _rows_per_write(X.shape[1], dtype.itemsize)
    appender = _RowAppender(handle, "X", None if y is None else "y", n_features=X.shape[1],
                            dtype=dtype, sparse=False,
                            label_dtype=None if y is None else y.dtype, chunk_rows=step)
    for begin in range(0, len(X), step):
        block = np.asarray(X[begin:begin + step], dtype=dtype)
        appender.append(block, None if y is None else y[begin:begin + step])
        counter.advance(len(block))
    appender.finish()


def _load_npy(src) -> np.ndarray:
    try:
        return np.load(src, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{src}: not a readable .npy file: {exc}") from exc


def _write_saved_sparse(src, handle, archive, dtype, counter) -> None:
    """An .npz written by scipy.sparse.save_npz (CSR, or any format converted to CSR)."""
    try:
        matrix = scipy.sparse.load_npz(src).tocsr()
    except (ValueError, OSError) as exc:
        raise DataError(f"{src}: not a readable sparse .npz file: {exc}") from exc
    matrix.sum_duplicates()
    dtype = np.dtype(dtype or (matrix.dtype if matrix.dtype in (np.float32, np.float64)
                               else np.float64))
    appender = _RowAppender(handle, "X", None, n_features=None, dtype=dtype, sparse=True,
                            chunk_rows=matrix.shape[0] or 1)
    appender.append((matrix.data.astype(dtype), matrix.indices, np.diff(matrix.indptr)))
    appender.finish(matrix.shape[1])
    counter.advance(matrix.shape[0])


# -- inspect ----------------------------------------------------------------------------------

def inspect(path) -> str:
    """A text report of an HDF5 file: attributes, and for each data set (or CSR group) its
    shape, dtype, NaN/Inf count and, for 1-D integer-like data, the count of each label.
    Values are streamed in slices, so any file size fits in memory."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise OSError(f"{path}: cannot open as HDF5 (truncated, corrupt or not an HDF5 file): "
                      f"{exc}") from exc
    with handle:
        lines = [f"file: {path}"]
        for key, value in sorted(handle.attrs.items()):
            lines.append(f"  {key} = {_attribute_text(value)}")
        entries: list[tuple[str, object]] = []
        handle.visititems(lambda name, node: entries.append((name, node)))
        csr_groups = [name for name, node in entries
                      if isinstance(node, h5py.Group) and "indptr" in node]
        for name, node in entries:
            if any(name.startswith(group + "/") for group in csr_groups):
                continue
            if name in csr_groups:
                lines.append(_describe_csr(name, node))
            elif isinstance(node, h5py.Dataset):
                lines.append(_describe_dataset(name, node))
    return "\n".join(lines)


def _attribute_text(value) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, np.ndarray):
        text = json.dumps([_plain(v) for v in value[:8]])
        return text if len(value) <= 8 else text[:-1] + f", ... ({len(value)} in all)]"
    return str(value)


def _plain(value):
    """A JSON-ready Python value from an element of an attribute array."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value.item() if isinstance(value, np.generic) else value


def _describe_csr(name: str, group: h5py.Group) -> str:
    shape = tuple(int(n) for n in np.asarray(group.attrs.get("shape", (0, 0))))
    data = group.get("data")
    if data is None:
        return f"{name}: CSR group without 'data'"
    cells = max(1, shape[0] * shape[1])
    return (f"{name}: CSR {shape} {data.dtype}, {len(data):,} nonzeros "
            f"(density {len(data) / cells:.4g}), {_nonfinite_count(data)} NaN/Inf")


def _describe_dataset(name: str, dataset: h5py.Dataset) -> str:
    text = f"{name}: {dataset.shape} {dataset.dtype}"
    if dataset.dtype.kind not in "biuf":
        return text
    if dataset.dtype.kind == "f":
        text += f", {_nonfinite_count(dataset)} NaN/Inf"
    if dataset.ndim == 1:
        text += ", " + _label_summary(dataset)
    return text


def _slices(dataset: h5py.Dataset):
    """Consecutive slices of ``dataset`` along its first axis, about _SCAN_VALUES values each."""
    per_row = int(np.prod(dataset.shape[1:], dtype=np.int64)) or 1
    step = max(1, _SCAN_VALUES // per_row)
    for begin in range(0, dataset.shape[0] if dataset.ndim else 0, step):
        yield dataset[begin:begin + step]


def _nonfinite_count(dataset: h5py.Dataset) -> int:
    if dataset.dtype.kind != "f":
        return 0
    return sum(int(values.size - np.count_nonzero(np.isfinite(values)))
               for values in _slices(dataset))


def _label_summary(dataset: h5py.Dataset) -> str:
    """'labels 0: 510, 1: 490' for integer-like data with few values, else a value range."""
    counts: dict = {}
    integer_like = True
    low, high = math.inf, -math.inf
    for values in _slices(dataset):
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if finite.size:
            low, high = min(low, finite.min()), max(high, finite.max())
        if finite.dtype.kind == "f":
            integer_like = integer_like and bool(np.all(finite == np.round(finite)))
        if integer_like and len(counts) <= _LABEL_COUNT_LIMIT:
            for value, count in zip(*np.unique(finite, return_counts=True), strict=True):
                counts[value.item()] = counts.get(value.item(), 0) + int(count)
    if integer_like and 0 < len(counts) <= _LABEL_COUNT_LIMIT:
        names = dataset.attrs.get("label_names")
        shown = []
        for value, count in sorted(counts.items()):
            label = f"{names[int(value)]}={value:g}" if names is not None else f"{value:g}"
            shown.append(f"{label}: {count:,}")
        return "labels " + ", ".join(shown)
    if low > high:
        return "no finite values"
    return f"values {low:g}..{high:g}"


# -- example ----------------------------------------------------------------------------------

def write_line_example(out) -> None:
    """The classic first distributed regression: x ~ U(-5, 5), y = 2x + 1 + N(0, 0.5^2),
    10,000 training and 2,000 test rows (seed 0); a fit must recover slope 2 and intercept 1."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-5.0, 5.0, size=(LINE_ROWS + LINE_TEST_ROWS, 1))
    y = 2.0 * x[:, 0] + 1.0 + rng.normal(0.0, LINE_NOISE, size=len(x))
    with _atomic_hdf5(out) as handle:
        handle["X"], handle["y"] = x[:LINE_ROWS], y[:LINE_ROWS]
        handle["X_test"], handle["y_test"] = x[LINE_ROWS:], y[LINE_ROWS:]
        handle.attrs.update({"created_by": "mpiml.data example", "source": "y = 2x + 1 + noise",
                             "task": "regression", "noise": LINE_NOISE})


def write_example(name: str, out) -> None:
    """Write scikit-learn's bundled data set ``name`` (never a download) to ``out``: X, y,
    X_test, y_test from a fixed stratified split (classification) of 25 % for testing.
    ``line`` is generated instead (:func:`write_line_example`)."""
    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}")
    if name == "line":
        write_line_example(out)
        return
    try:
        import sklearn.datasets
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise DataError("the 'example' command needs scikit-learn, which is not installed "
                        "(pip install scikit-learn)") from exc
    loader, task = EXAMPLES[name]
    bunch = getattr(sklearn.datasets, loader)()
    label_dtype = np.float64 if task == "regression" else np.int64
    X, y = bunch.data.astype(np.float64), bunch.target.astype(label_dtype)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=EXAMPLE_TEST_FRACTION, random_state=EXAMPLE_SPLIT_SEED,
        stratify=None if task == "regression" else y)
    with _atomic_hdf5(out) as handle:
        for key, array in (("X", X_train), ("y", y_train), ("X_test", X_test),
                           ("y_test", y_test)):
            handle[key] = array
        handle.attrs.update({
            "created_by": "mpiml.data example", "source": f"sklearn.datasets.{loader}",
            "task": task, "test_fraction": EXAMPLE_TEST_FRACTION,
            "split_seed": EXAMPLE_SPLIT_SEED,
            "feature_names": [str(n) for n in getattr(bunch, "feature_names", range(X.shape[1]))],
        })
        if task != "regression":
            handle.attrs["n_classes"] = len(np.unique(y))


# -- command line -----------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def _non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is below {least}")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not finite")
    return value


def _label_column(text: str) -> str | int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Make, convert and inspect HDF5 training data for mpiml "
                               "(see docs/data.md).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    make = commands.add_parser("synth", help="generate a synthetic data set",
                               description=synth.__doc__.split("\n\n")[0])
    make.add_argument("--task", required=True, choices=SYNTH_TASKS)
    make.add_argument("--rows", required=True, type=_positive_int)
    make.add_argument("--features", required=True, type=_positive_int)
    make.add_argument("--classes", type=_positive_int, help="multiclass/blobs (default 3)")
    make.add_argument("--informative", type=_positive_int,
                      help="features the hidden model uses (default min(features, 10); "
                           "all when sparse)")
    make.add_argument("--noise", type=_number, default=1.0,
                      help="standard deviation of the noise (default 1)")
    make.add_argument("--density", type=_number, default=1.0,
                      help="fraction of nonzero cells; below 1 writes CSR (default 1)")
    make.add_argument("--test-rows", type=_non_negative_int, default=0,
                      help="rows of a held-out X_test/y_test (default 0)")
    make.add_argument("--seed", required=True, type=_non_negative_int)
    make.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    make.add_argument("--chunk-rows", type=_positive_int,
                      help="rows per HDF5 write (default about 4 MB); does not change the output")
    make.add_argument("--force", action="store_true", help="overwrite OUT")
    make.add_argument("out", metavar="OUT.h5")

    conv = commands.add_parser("convert", help="convert CSV, LIBSVM, .npy or .npz to HDF5",
                               description=convert.__doc__.split("\n\n")[0])
    conv.add_argument("src", metavar="IN")
    conv.add_argument("out", metavar="OUT.h5")
    conv.add_argument("--format", choices=("csv", "libsvm", "npy", "npz"),
                      help="input format (default: from the extension)")
    conv.add_argument("--label-column", type=_label_column, default=-1,
                      help="CSV label column: name, index (default -1 = last) or none")
    conv.add_argument("--header", choices=("auto", "yes", "no"), default="auto")
    conv.add_argument("--delimiter", help="CSV delimiter (default ',' or tab for .tsv)")
    conv.add_argument("--n-features", type=_positive_int, help="LIBSVM: number of features")
    conv.add_argument("--zero-based", choices=("auto", "yes", "no"), default="auto",
                      help="LIBSVM: are feature indices zero-based (default auto)")
    conv.add_argument("--x-key", default="X", help=".npz: array of features (default X)")
    conv.add_argument("--y-key", default="y", help=".npz: array of labels (default y)")
    conv.add_argument("--dtype", choices=("float32", "float64"))
    conv.add_argument("--force", action="store_true", help="overwrite OUT")

    look = commands.add_parser("inspect", help="describe an HDF5 data file")
    look.add_argument("path", metavar="FILE.h5")

    example = commands.add_parser("example", help="write a scikit-learn bundled data set (or "
                                                  "the generated 'line': y = 2x + 1 + noise)")
    example.add_argument("name", choices=sorted(EXAMPLES))
    example.add_argument("out", metavar="OUT.h5")
    example.add_argument("--force", action="store_true", help="overwrite OUT")
    return parser


def _check_output(out: str, force: bool, src: str | None = None) -> None:
    if src is not None and os.path.abspath(src) == os.path.abspath(out):
        raise ValueError(f"{out}: output and input are the same file")
    if os.path.exists(out) and not force:
        raise ValueError(f"{out} exists; pass --force to overwrite it")


def _run(args: argparse.Namespace) -> None:
    progress = sys.stderr.isatty()
    if args.command == "synth":
        _check_output(args.out, args.force)
        synth(args.out, args.task, args.rows, args.features, seed=args.seed,
              classes=args.classes, informative=args.informative, noise=args.noise,
              density=args.density, test_rows=args.test_rows, dtype=args.dtype,
              chunk_rows=args.chunk_rows, progress=progress)
    elif args.command == "convert":
        _check_output(args.out, args.force, args.src)
        delimiter = args.delimiter.replace("\\t", "\t") if args.delimiter else None
        convert(args.src, args.out, fmt=args.format, label_column=args.label_column,
                header=args.header, delimiter=delimiter, n_features=args.n_features,
                zero_based=args.zero_based, x_key=args.x_key, y_key=args.y_key,
                dtype=args.dtype, progress=progress)
    elif args.command == "inspect":
        sys.stdout.write(inspect(args.path) + "\n")
    else:
        _check_output(args.out, args.force)
        write_example(args.name, args.out)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m mpiml.data``; returns the exit status.

    0 on success, 1 for bad input or arguments (one line on stderr, no traceback), 2 for usage
    errors found by argparse, 130 on Ctrl-C.
    """
    args = _parser().parse_args(argv)
    try:
        _run(args)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"{PROG} {args.command}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    return 0
