"""Converting .npy and .npz files (dense arrays, or scipy.sparse.save_npz archives) to
mpiml's HDF5 layout, refusing truncated, corrupt or mislabelled files with one line."""

from __future__ import annotations

import zipfile
import zlib

import numpy as np
import scipy.sparse

from ..shard import DataError
from .writing import RowAppender, rows_per_write

_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", (b"PK\x03\x04", b"PK\x05\x06")
_ARCHIVE_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def convert_numpy(src, handle, fmt, x_key, y_key, dtype, counter) -> None:
    _check_magic(src, fmt)
    if fmt == "npy":
        X, y = _load_npy(src), None
    else:
        try:
            archive = np.load(src, allow_pickle=False)
        except _ARCHIVE_ERRORS as exc:
            raise DataError(f"{src}: not a readable .npz file: {exc}") from exc
        with archive:
            if {"format", "shape", "data", "indices", "indptr"} <= set(archive.files):
                _write_saved_sparse(src, handle, dtype, counter)
                return
            if x_key not in archive.files:
                raise DataError(f"{src}: no array {x_key!r}; the file holds "
                                f"{', '.join(archive.files)} (choose with --x-key)")
            X = _member(src, archive, x_key)
            y = _member(src, archive, y_key) if y_key in archive.files else None
            if y_key is not None and y is None and y_key != "y":
                raise DataError(f"{src}: no array {y_key!r}; the file holds "
                                f"{', '.join(archive.files)} (choose with --y-key)")
    if X.ndim != 2 or X.dtype.kind not in "biuf" or X.shape[1] == 0:
        raise DataError(f"{src}: X must be a 2-D numeric array with columns; got shape "
                        f"{X.shape}, dtype {X.dtype}")
    if len(X) == 0:
        raise DataError(f"{src}: no data rows")
    if y is not None and (y.ndim != 1 or len(y) != len(X) or y.dtype.kind not in "biuf"):
        raise DataError(f"{src}: y must be a 1-D numeric array with {len(X)} entries; got "
                        f"shape {y.shape}, dtype {y.dtype}")
    dtype = np.dtype(dtype or (X.dtype if X.dtype in (np.float32, np.float64) else np.float64))
    step = rows_per_write(X.shape[1], dtype.itemsize)
    appender = RowAppender(handle, "X", None if y is None else "y", n_features=X.shape[1],
                            dtype=dtype, sparse=False,
                            label_dtype=None if y is None else y.dtype, chunk_rows=step)
    for begin in range(0, len(X), step):
        block, bad = _cast(X[begin:begin + step], dtype)
        if bad >= 0:
            raise DataError(f"{src}: X row {begin + bad // X.shape[1]} has values out of the "
                            f"{dtype} range")
        appender.append(block, None if y is None else y[begin:begin + step])
        counter.advance(len(block))
    appender.finish()


def _check_magic(src, fmt) -> None:
    """Refuse a file whose first bytes are not those of an .npy (or .npz: zip) file."""
    with open(src, "rb") as stream:
        start = stream.read(len(_NPY_MAGIC))
    kind = "npy" if start == _NPY_MAGIC else "npz" if start[:4] in _ZIP_MAGIC else None
    if kind != fmt:
        hint = f" (it is an .{kind} file: pass --format {kind})" if kind else ""
        raise DataError(f"{src}: not an .{fmt} file{hint}")


def _member(src, archive, key) -> np.ndarray:
    try:
        return archive[key]
    except _ARCHIVE_ERRORS as exc:
        raise DataError(f"{src}: array {key!r} is not readable: {exc}") from exc


def _cast(values: np.ndarray, dtype) -> tuple[np.ndarray, int]:
    """``values`` as ``dtype``, and the flat position of the first finite value that overflows
    it (float64 to float32), or -1."""
    with np.errstate(over="ignore"):
        cast = np.asarray(values, dtype=dtype)
    if values.dtype.kind == "f" and dtype.itemsize < values.dtype.itemsize:
        bad = np.flatnonzero(np.isinf(cast) & np.isfinite(values))
        if bad.size:
            return cast, int(bad[0])
    return cast, -1


def _load_npy(src) -> np.ndarray:
    try:
        return np.load(src, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{src}: not a readable .npy file: {exc}") from exc


def _write_saved_sparse(src, handle, dtype, counter) -> None:
    """An .npz written by scipy.sparse.save_npz (CSR, or any format converted to CSR)."""
    try:
        matrix = scipy.sparse.load_npz(src).tocsr()
    except _ARCHIVE_ERRORS as exc:
        raise DataError(f"{src}: not a readable sparse .npz file: {exc}") from exc
    try:
        matrix.check_format(full_check=True)
    except ValueError as exc:
        raise DataError(f"{src}: not a valid sparse matrix: {exc}") from exc
    if matrix.dtype.kind not in "biuf":
        raise DataError(f"{src}: the sparse matrix must be numeric; got dtype {matrix.dtype}")
    if matrix.shape[0] == 0:
        raise DataError(f"{src}: no data rows")
    matrix.sum_duplicates()
    dtype = np.dtype(dtype or (matrix.dtype if matrix.dtype in (np.float32, np.float64)
                               else np.float64))
    data, bad = _cast(matrix.data, dtype)
    if bad >= 0:
        row = np.searchsorted(matrix.indptr, bad, side="right") - 1
        raise DataError(f"{src}: X row {row} has values out of the {dtype} range")
    appender = RowAppender(handle, "X", None, n_features=None, dtype=dtype, sparse=True,
                            chunk_rows=matrix.shape[0])
    appender.append((data, matrix.indices, np.diff(matrix.indptr)))
    appender.finish(matrix.shape[1])
    counter.advance(matrix.shape[0])
