"""``convert``: CSV, LIBSVM/svmlight, .npy or .npz to the HDF5 layouts that
:func:`mpiml.data.load_shard` reads; text formats are streamed in line chunks."""

from __future__ import annotations

import csv
import itertools
import math
import os
import re

import h5py
import numpy as np
import scipy.sparse

from ...files.atomic import atomic_hdf5
from ..shard import DataError
from .writing import WRITE_BYTES, Progress, RowAppender, rows_per_write

FORMATS = {".csv": "csv", ".tsv": "csv", ".svm": "libsvm", ".libsvm": "libsvm",
           ".svmlight": "libsvm", ".npy": "npy", ".npz": "npz"}
_QID = re.compile(r"qid:\S+")
#: Values per slice when rewriting labels or indices in place.
_SCAN_VALUES = 1 << 20


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
    counter = Progress(f"convert {os.path.basename(src)}", None, progress)
    with atomic_hdf5(out) as handle:
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
        appender = RowAppender(handle, "X", None if label is None else "y",
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
    appender = RowAppender(handle, "X", "y", n_features=None, dtype=dtype, sparse=True,
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
    step = rows_per_write(X.shape[1], dtype.itemsize)
    appender = RowAppender(handle, "X", None if y is None else "y", n_features=X.shape[1],
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
    appender = RowAppender(handle, "X", None, n_features=None, dtype=dtype, sparse=True,
                            chunk_rows=matrix.shape[0] or 1)
    appender.append((matrix.data.astype(dtype), matrix.indices, np.diff(matrix.indptr)))
    appender.finish(matrix.shape[1])
    counter.advance(matrix.shape[0])
