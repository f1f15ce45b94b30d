"""Converting Parquet to mpiml's HDF5 layout a row group at a time, so memory is bounded by one
row group, not by the file. The input is one file or a directory of ``.parquet``/``.pq`` files,
read as one table in name order. pyarrow (the ``parquet`` extra) is imported only here, when a
Parquet file is converted."""

from __future__ import annotations

import os

import numpy as np

from ..shard import DataError
from .labels import label_index, sort_label_codes
from .writing import RowAppender, rows_per_write

PARQUET_SUFFIXES = (".parquet", ".pq")


def convert_parquet(src, handle, label_column, dtype, counter) -> None:
    """Write the feature columns of ``src`` as a dense X and ``label_column`` (a name, an index
    or None) as y: numbers as float64, text as codes in sorted name order (``label_names``).
    ``dtype`` of X defaults to float32 when every feature column is float32, else float64."""
    pa, pq = _pyarrow()
    paths = parquet_paths(src)
    tables = [_open(pa, pq, path) for path in paths]
    schema = tables[0].schema_arrow
    for path, table in zip(paths[1:], tables[1:], strict=True):
        _check_same_columns(paths[0], schema, path, table.schema_arrow)
    names = schema.names
    label = label_index(src, names, label_column, "yes")
    features = [position for position in range(len(names)) if position != label]
    if not features:
        raise DataError(f"{src}: no feature columns: the only column is the label {names[label]!r}")
    for position in features:
        kind = schema.field(position).type
        if not _is_numeric(pa, kind):
            raise DataError(f"{src}: column {names[position]!r} has type {kind}; feature columns "
                            f"must be numeric (integer, floating point or boolean)")
    text_labels = label is not None and _is_text(pa, schema.field(label).type)
    if label is not None and not (text_labels or _is_numeric(pa, schema.field(label).type)):
        raise DataError(f"{src}: label column {names[label]!r} has type "
                        f"{schema.field(label).type}; labels must be numbers or text")
    float32 = all(schema.field(position).type == pa.float32() for position in features)
    dtype = np.dtype(dtype or (np.float32 if float32 else np.float64))
    appender = RowAppender(handle, "X", None if label is None else "y",
                           n_features=len(features), dtype=dtype, sparse=False,
                           label_dtype=np.float64,
                           chunk_rows=rows_per_write(len(features), dtype.itemsize))
    label_codes: dict[str, int] = {}
    for path, table in zip(paths, tables, strict=True):
        first_row = 0
        for group in range(table.num_row_groups):
            try:
                rows = table.read_row_group(group)
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot read row group {group}: {exc}") from exc
            X = np.empty((rows.num_rows, len(features)), dtype=dtype)
            for column, position in enumerate(features):
                X[:, column] = _feature(pa, path, first_row, names[position], rows[position],
                                        dtype)
            y = None
            if label is not None:
                y = (_text_labels(pa, path, first_row, names[label], rows[label], label_codes)
                     if text_labels
                     else _feature(pa, path, first_row, names[label], rows[label], np.float64,
                                   "label"))
            appender.append(X, y)
            counter.advance(rows.num_rows)
            first_row += rows.num_rows
    appender.finish()
    if appender.n_rows == 0:
        raise DataError(f"{src}: no data rows")
    handle.attrs["feature_names"] = [names[position] for position in features]
    if label_codes:
        sort_label_codes(appender.labels, label_codes)


def parquet_paths(src) -> list[str]:
    """``[src]`` for a file; for a directory, its Parquet files in name order (names starting
    with '.' or '_', such as Spark's _SUCCESS, are not data)."""
    if not os.path.isdir(src):
        return [src]
    paths = sorted(os.path.join(src, name) for name in os.listdir(src)
                   if name.lower().endswith(PARQUET_SUFFIXES) and name[0] not in "._")
    if not paths:
        raise DataError(f"{src}: no {' or '.join(PARQUET_SUFFIXES)} files in the directory")
    return paths


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.compute  # noqa: F401 (pyarrow.compute is used through pyarrow)
        import pyarrow.parquet
    except ImportError as exc:
        raise DataError("converting Parquet needs pyarrow, which is not installed "
                        "(pip install -e '.[parquet]')") from exc
    return pyarrow, pyarrow.parquet


def _open(pa, pq, path):
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable Parquet file: {exc}") from exc


def _check_same_columns(first_path, first, path, schema) -> None:
    """Every file of a directory must have the first file's columns, in order, of its types."""
    for position in range(max(len(first), len(schema))):
        want = first.field(position) if position < len(first) else None
        have = schema.field(position) if position < len(schema) else None
        if want is None or have is None or (want.name, want.type) != (have.name, have.type):
            shown = [f"{field.name!r} {field.type}" if field is not None else "nothing"
                     for field in (have, want)]
            raise DataError(f"{path}: column {position + 1} is {shown[0]} but in "
                            f"{os.path.basename(first_path)} it is {shown[1]}: every file must "
                            f"have the same columns")


def _is_numeric(pa, kind) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _is_text(pa, kind) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _feature(pa, path, first_row, name, column, dtype, what="value") -> np.ndarray:
    """A numeric column as ``dtype``; a null, a NaN or infinity, or a value out of the
    ``dtype`` range is refused naming the row (counted from 0 in the file) and the column."""
    if column.null_count:
        row = int(np.argmax(pa.compute.is_null(column).to_numpy(zero_copy_only=False)))
        raise DataError(f"{path}, row {first_row + row}, column {name!r}: missing {what} (null)")
    values = column.to_numpy(zero_copy_only=False)
    with np.errstate(over="ignore"):
        cast = values.astype(dtype)
    bad = np.flatnonzero(~np.isfinite(cast))
    if bad.size:
        row = int(bad[0])
        problem = ("is not a finite number" if not np.isfinite(values[row])
                   else f"is out of the {np.dtype(dtype)} range")
        raise DataError(f"{path}, row {first_row + row}, column {name!r}: {what} "
                        f"{values[row].item()!r} {problem}")
    return cast


def _text_labels(pa, path, first_row, name, column, codes: dict[str, int]) -> np.ndarray:
    """Text labels as float64 codes in first-seen order (``codes`` grows across row groups)."""
    if column.null_count:
        row = int(np.argmax(pa.compute.is_null(column).to_numpy(zero_copy_only=False)))
        raise DataError(f"{path}, row {first_row + row}, column {name!r}: missing label (null)")
    encoded = column.combine_chunks()
    if not pa.types.is_dictionary(encoded.type):
        encoded = pa.compute.dictionary_encode(encoded)
    positions = encoded.indices.to_numpy(zero_copy_only=False)
    mapping = np.full(len(encoded.dictionary), np.nan)
    for index in np.unique(positions):  # only the names that occur: no phantom classes
        text = encoded.dictionary[int(index)].as_py()
        if not text.strip():
            row = int(np.flatnonzero(positions == index)[0])
            raise DataError(f"{path}, row {first_row + row}, column {name!r}: empty label")
        mapping[index] = codes.setdefault(text, len(codes))
    return mapping[positions]
