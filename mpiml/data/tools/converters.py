"""``convert``: CSV, LIBSVM/svmlight, .npy, .npz or Parquet to the HDF5 layouts that
:func:`mpiml.data.load_shard` reads, optionally split into training, test and validation sets;
text formats are streamed in chunks of lines, and every line is checked: a bad one is named,
never read as something else."""

from __future__ import annotations

import csv
import itertools
import math
import os
import re

import numpy as np

from ...files.atomic import atomic_hdf5
from ..shard import DataError
from .labels import label_index, sort_label_codes
from .numpy_files import convert_numpy
from .parquet_files import convert_parquet
from .splitting import check_fractions, scratch_hdf5, write_splits
from .writing import WRITE_BYTES, Progress, RowAppender

FORMATS = {".csv": "csv", ".tsv": "csv", ".svm": "libsvm", ".libsvm": "libsvm",
           ".svmlight": "libsvm", ".npy": "npy", ".npz": "npz", ".parquet": "parquet",
           ".pq": "parquet"}
_QID = re.compile(r"qid:\S+")
_COMMENT = re.compile(r"#[^\n]*")
#: LIBSVM lines once comments and qid: fields are gone: blank, or a label and index:value
#: pairs. Labels and values are printable ASCII but ':' and '_' (float() reads 1_0, numpy's
#: text parsers do not), so str.split() and float() agree with the pattern on every token.
_SPACE, _TOKEN = "[ \t\r\f\v]", "[!-9;-^`-~]"
_LIBSVM_LINES = re.compile(rf"(?:{_SPACE}*+(?:{_TOKEN}++(?:{_SPACE}++[0-9]++:{_TOKEN}++)*+"
                           rf"{_SPACE}*+)?\n)*+")
_SPACES = re.compile(f"{_SPACE}+")
_PRINTABLE = re.compile("[!-~]+")
#: Feature indices below this are exact in float64.
_MAX_INDEX = 2 ** 53
_INTEGER = re.compile(r"[+-]?[0-9]+")
#: Values per slice when rewriting indices in place.
_SCAN_VALUES = 1 << 20


def convert(src, out, *, fmt: str | None = None, label_column: str | int | None = -1,
            header: str = "auto", delimiter: str | None = None, n_features: int | None = None,
            zero_based: str = "auto", x_key: str = "X", y_key: str | None = "y",
            dtype=None, test_fraction: float = 0.0, validation_fraction: float = 0.0,
            split_seed: int = 0, progress: bool = False) -> None:
    """Convert ``src`` (CSV, LIBSVM/svmlight, .npy, .npz or Parquet) to the HDF5 file ``out``.

    ``fmt`` defaults to the one the file name's extension implies (a directory: Parquet). CSV and
    Parquet: ``label_column`` is a column name, an index (default -1, the last) or None for no
    labels; CSV: ``header`` is "auto", "yes" or "no"; labels that are not numbers become class
    codes in sorted name order (attribute ``label_names`` on y). LIBSVM: to CSR; ``zero_based``
    "auto" (one-based unless an index 0 occurs, as scikit-learn's load_svmlight_file decides),
    "yes" or "no". .npy holds X only; .npz holds ``x_key`` and, if present, ``y_key``, or a
    matrix saved by scipy.sparse.save_npz. ``dtype`` of X: float64 for text, the stored float
    type otherwise. ``test_fraction`` and ``validation_fraction`` move that share of the rows,
    chosen at random from ``split_seed``, to X_test/y_test and X_val/y_val (splitting.py).
    Bad input raises DataError naming the file and, for text, the line (docs/data.md).
    """
    src = os.fspath(src)
    if not os.path.exists(src):
        raise FileNotFoundError(f"{src}: no such file")
    if os.path.isdir(src):
        fmt = fmt or "parquet"
    fmt = fmt or FORMATS.get(os.path.splitext(src)[1].lower())
    if fmt not in ("csv", "libsvm", "npy", "npz", "parquet"):
        raise ValueError(f"cannot tell the format of {src} from its extension; pass --format "
                         f"csv, libsvm, npy, npz or parquet")
    if os.path.isdir(src) and fmt != "parquet":
        raise ValueError(f"{src} is a directory; only a directory of Parquet files converts")
    if dtype is not None and np.dtype(dtype) not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64; got {dtype!r}")
    check_fractions(test_fraction, validation_fraction)
    counter = Progress(f"convert {os.path.basename(src)}", None, progress)
    read = (src, fmt, label_column, header, delimiter, n_features, zero_based, x_key, y_key,
            dtype, counter)
    with atomic_hdf5(out) as handle:
        if test_fraction or validation_fraction:
            with scratch_hdf5(out) as scratch:
                _convert_into(scratch, *read)
                counter.finish()
                write_splits(scratch, handle, test_fraction, validation_fraction, split_seed,
                             src, progress)
        else:
            _convert_into(handle, *read)
            counter.finish()
        handle.attrs.update({"created_by": "mpiml.data convert", "format": fmt,
                             "source": os.path.basename(os.path.normpath(src))})


def _convert_into(handle, src, fmt, label_column, header, delimiter, n_features, zero_based,
                  x_key, y_key, dtype, counter) -> None:
    """Write X and y (and the file attributes the format gives) of ``src`` into ``handle``."""
    try:
        if fmt == "csv":
            _convert_csv(src, handle, label_column, header, delimiter, dtype, counter)
        elif fmt == "libsvm":
            _convert_libsvm(src, handle, n_features, zero_based, dtype, counter)
        elif fmt == "parquet":
            convert_parquet(src, handle, label_column, dtype, counter)
        else:
            convert_numpy(src, handle, fmt, x_key, y_key, dtype, counter)
    except UnicodeDecodeError as exc:
        raise DataError(f"{src}: not a {fmt} text file ({exc})") from exc


def _convert_csv(src, handle, label_column, header, delimiter, dtype, counter) -> None:
    if header not in ("auto", "yes", "no"):
        raise ValueError(f"header must be auto, yes or no; got {header!r}")
    delimiter = delimiter or ("\t" if src.lower().endswith(".tsv") else ",")
    dtype = np.dtype(dtype or np.float64)
    with open(src, newline="") as stream:
        numbered = ((number, line) for number, line in enumerate(stream, start=1)
                    if line.strip())
        head = list(itertools.islice(numbered, 2))
        if not head:
            raise DataError(f"{src}: no data rows")
        names = _csv_fields(src, *head[0], delimiter)
        n_columns = len(names)
        label = label_index(src, names, label_column, header)
        second = _csv_fields(src, *head[1], delimiter) if len(head) > 1 else None
        if header == "yes" or isinstance(label_column, str) or (
                header == "auto" and _is_header(src, head[0], names, second, label)):
            rows = itertools.chain(head[1:], numbered)
        else:
            rows = itertools.chain(head, numbered)
            names = None
        n_features = n_columns - (label is not None)
        if n_features < 1:
            raise DataError(f"{src}: no feature columns in {n_columns} field(s) split at "
                            f"{delimiter!r} (see --delimiter)")
        chunk_lines = max(64, WRITE_BYTES // (8 * n_columns))
        appender = RowAppender(handle, "X", None if label is None else "y",
                                n_features=n_features, dtype=dtype, sparse=False,
                                label_dtype=np.float64, chunk_rows=chunk_lines)
        label_codes: dict[str, int] | None = None  # text labels -> codes in first-seen order
        while chunk := list(itertools.islice(rows, chunk_lines)):
            if appender.n_rows == 0 and label is not None:
                fields = _csv_fields(src, *chunk[0], delimiter)
                if len(fields) > label and not _is_number(fields[label]):
                    label_codes = {}
            X, y = _parse_csv_chunk(src, chunk, delimiter, n_columns, label, label_codes, dtype,
                                    names is not None)
            appender.append(X, y)
            counter.advance(len(X))
        appender.finish()
        if appender.n_rows == 0:
            raise DataError(f"{src}: no data rows")
        if names is not None:
            handle.attrs["feature_names"] = [n for i, n in enumerate(names) if i != label]
        if label_codes:
            sort_label_codes(appender.labels, label_codes)


def _csv_fields(src, number, line, delimiter) -> list[str]:
    try:
        return next(csv.reader([line], delimiter=delimiter))
    except csv.Error as exc:
        raise DataError(f"{src}, line {number}: {exc}") from None


def _is_header(src, first, names, second, label) -> bool:
    """header=auto: is ``first`` (line number and text; ``names``, its fields) a header?
    ``second``: the next line's fields, or None.

    Yes when a feature field is not a number, or the label field is not a number above one that
    is; or when the feature fields read 0, 1, 2, ... (pandas' names of unnamed columns) above a
    feature that is not an integer. The same names above integers may be data: the caller must
    choose with ``header``. A header with an empty name (pandas' index column) is refused.
    """
    features = [field.strip() for position, field in enumerate(names) if position != label]
    comparable = second is not None and len(second) == len(names)
    text_above_number = (label is not None and comparable and not _is_number(names[label])
                         and _is_number(second[label]))
    if not text_above_number and all(not field or _is_number(field) for field in features):
        if (len(names) < 3 or features != [str(i) for i in range(len(features))]
                or (second is not None and not comparable)):
            return False
        if second is None or all(_INTEGER.fullmatch(field.strip())
                                 for position, field in enumerate(second) if position != label):
            raise DataError(f"{src}, line {first[0]}: {first[1].strip()!r} may be column names "
                            f"(as pandas writes them) or data; pass --header yes or --header no")
    stripped = [name.strip() for name in names]
    if "" in stripped:
        raise DataError(f"{src}, line {first[0]}, column {stripped.index('') + 1}: no name in "
                        f"the header (pandas writes none above its index); pass --header yes to "
                        f"read the column as a feature")
    return True


def _is_number(text: str) -> bool:
    """A number as both Python and numpy's text parsers read it (ASCII, no underscores)."""
    if not text.isascii() or "_" in text:
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


def _number_problem(text: str, dtype) -> str | None:
    """Why ``text`` is not a finite number of ``dtype`` (a phrase), or None."""
    if not _is_number(text):
        return "is not a number"
    if not math.isfinite(float(text)):
        return "is not a finite number"
    with np.errstate(over="ignore"):
        if not np.isfinite(np.dtype(dtype).type(float(text))):
            return f"is out of the {np.dtype(dtype)} range"
    return None


def _parse_csv_chunk(src, chunk, delimiter, n_columns, label, label_codes, dtype, header):
    """Parse ``[(line_number, line), ...]`` into X (of ``dtype``) and labels (float64).

    Numbers go through numpy's C parser, text labels through the csv module. A chunk that
    fails (or holds a value that is not finite) is re-read line by line to name the first bad
    line.
    """
    lines = [line for _, line in chunk]
    read = dict(delimiter=delimiter, dtype=np.float64, ndmin=2, comments=None, quotechar='"')
    try:
        if label_codes is None:
            table = np.loadtxt(lines, **read)
            if table.shape[1] != n_columns:
                raise ValueError("column count")
            X, y = (table, None) if label is None else (np.delete(table, label, axis=1),
                                                        table[:, label])
        else:
            fields = list(csv.reader(lines, delimiter=delimiter))
            if any(len(row) != n_columns for row in fields):
                raise ValueError("column count")
            names = [row[label].strip() for row in fields]
            if not all(names):
                raise ValueError("empty label")
            X = np.loadtxt(lines, usecols=[c for c in range(n_columns) if c != label], **read)
            y = np.array([label_codes.setdefault(name, len(label_codes)) for name in names],
                         dtype=np.float64)
        with np.errstate(over="ignore"):
            X = X.astype(dtype, copy=False)
        if not (np.isfinite(X).all() and (y is None or np.isfinite(y).all())):
            raise ValueError("not finite")
        return X, y
    except (ValueError, csv.Error):
        raise _bad_csv_line(src, chunk, delimiter, n_columns, label, label_codes is not None,
                            dtype, header) from None


def _bad_csv_line(src, chunk, delimiter, n_columns, label, text_labels, dtype,
                  header) -> DataError:
    for number, line in chunk:
        fields = _csv_fields(src, number, line, delimiter)
        if len(fields) != n_columns:
            return DataError(f"{src}, line {number}: {len(fields)} fields where the "
                             f"{'header' if header else 'first line'} has {n_columns}")
        for position, field in enumerate(fields):
            where = f"{src}, line {number}, column {position + 1}"
            if position == label and text_labels:
                if not field.strip():
                    return DataError(f"{where}: empty label")
                continue
            problem = _number_problem(field, np.float64 if position == label else dtype)
            if problem:
                what = "label" if position == label else "value"
                return DataError(f"{where}: {what} {field!r} {problem}")
    return DataError(f"{src}, lines {chunk[0][0]}..{chunk[-1][0]}: cannot parse")


def _convert_libsvm(src, handle, n_features, zero_based, dtype, counter) -> None:
    if zero_based not in ("auto", "yes", "no"):
        raise ValueError(f"zero_based must be auto, yes or no; got {zero_based!r}")
    dtype = np.dtype(dtype or np.float64)
    appender = RowAppender(handle, "X", "y", n_features=None, dtype=dtype, sparse=True,
                            label_dtype=np.float64, chunk_rows=1)
    smallest, largest = math.inf, -1
    with open(src) as stream:
        # about half a write of text: its tokens as Python strings take a few times more
        for first, text in _text_chunks(stream, max(1, WRITE_BYTES // 2)):
            parsed = _parse_libsvm_chunk(src, first, text, dtype)
            if parsed is None:
                continue
            labels, values, columns, lengths = parsed
            if len(columns):
                smallest, largest = min(smallest, int(columns.min())), max(largest,
                                                                           int(columns.max()))
            appender.append((values, columns, lengths), labels)
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


def _text_chunks(stream, size):
    """Yield ``(number of the first line, text)``: whole lines of about ``size`` characters,
    the last one given its missing newline."""
    number, rest = 1, ""
    while block := stream.read(size):
        block = rest + block
        end = block.rfind("\n") + 1
        rest = block[end:]
        if end:
            yield number, block[:end]
            number += block.count("\n", 0, end)
    if rest:
        yield number, rest + "\n"


def _parse_libsvm_chunk(src, first, text, dtype):
    """Parse whole ``label index:value ...`` lines (``first``: the first one's number) into
    labels, values of ``dtype``, indices and row lengths; None when all are blank. Comments (#)
    and qid: fields are ignored.

    The chunk is checked as a whole: one regular expression for the layout of every line, then
    vectorised tests (finite, in range, indices increasing within a row); a chunk that fails is
    re-read line by line to name the first bad line.
    """
    if "#" in text:
        text = _COMMENT.sub("", text)
    if "qid:" in text:
        text = _QID.sub(" ", text)
    lines = text.split("\n")[:-1]
    if _LIBSVM_LINES.fullmatch(text) is None:
        raise _bad_libsvm_line(src, first, lines, dtype)
    rows = [line for line in lines if line and not line.isspace()]
    if not rows:
        return None
    lengths = np.array([line.count(":") for line in rows], dtype=np.int64)
    try:
        flat = np.array(text.replace(":", " ").split(), dtype=np.float64)
    except ValueError:
        raise _bad_libsvm_line(src, first, lines, dtype) from None
    starts = np.cumsum(2 * lengths + 1) - (2 * lengths + 1)  # each row's label
    labels, pairs = flat[starts], np.delete(flat, starts)
    columns = pairs[0::2]
    with np.errstate(over="ignore"):
        values = pairs[1::2].astype(dtype)
    same_row = np.repeat(np.arange(len(rows)), lengths)
    same_row = same_row[1:] == same_row[:-1]
    if not (np.isfinite(labels).all() and np.isfinite(values).all()
            and (columns < _MAX_INDEX).all() and (np.diff(columns)[same_row] > 0).all()):
        raise _bad_libsvm_line(src, first, lines, dtype)
    return labels, values, columns.astype(np.int64), lengths


def _bad_libsvm_line(src, first, lines, dtype) -> DataError:
    """The error of the first bad line of ``lines`` (comments and qid: removed)."""
    for number, line in enumerate(lines, start=first):
        problem = _libsvm_line_problem(line, dtype)
        if problem:
            return DataError(f"{src}, line {number}: {problem}")
    return DataError(f"{src}, lines {first}..{first + len(lines) - 1}: cannot parse")


def _libsvm_line_problem(line, dtype) -> str | None:
    """What is wrong with one LIBSVM line, or None."""
    label, *pairs = _SPACES.split(line.strip(" \t\r\f\v"))
    if not label:
        return None
    for field in (label, *pairs):
        if not _PRINTABLE.fullmatch(field):
            return f"unexpected character in {field!r}"
    if ":" in label:
        return f"expected a label, got {label!r}"
    problem = _number_problem(label, np.float64)
    if problem:
        multi = " (multi-label files are not supported)" if "," in label else ""
        return f"label {label!r} {problem}{multi}"
    previous = -1
    for field in pairs:
        index, _, value = field.partition(":")
        if not index or not value or ":" in value:
            return f"expected index:value, got {field!r}"
        if not index.isdigit():
            if _is_number(index) and float(index) < 0:
                return f"negative feature index {index}"
            return f"feature index {index!r} is not an integer"
        if int(index) >= _MAX_INDEX:
            return f"feature index {index} is too large"
        if int(index) <= previous:
            return f"feature indices must be sorted and unique ({index} after {previous})"
        previous = int(index)
        problem = _number_problem(value, dtype)
        if problem:
            return f"value {value!r} of feature {index} {problem}"
    return None
