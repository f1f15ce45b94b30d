"""Value checks for the HDF5 reader: non-finite values and out-of-range columns found in
slices, the memory a host has, what a file holds (for error messages), and the missing inputs
of a linked (virtual) data set."""

from __future__ import annotations

import os

import h5py
import numpy as np

#: Values per slice when scanning for NaN/Inf or reading labels, bounding the temporary masks.
SCAN_VALUES = 1 << 18

X_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def available_bytes() -> int | None:
    """The memory this host has available (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def read_dtype(stored: np.dtype) -> np.dtype:
    """float32/float64 are kept; every other numeric type is read as float64."""
    return stored if stored in X_DTYPES else np.dtype(np.float64)


def shown_value(stored, read) -> str:
    """A non-finite value as read, or the finite stored value that overflowed into it."""
    if np.isfinite(stored):
        return (f"{stored}, which overflows {np.asarray(read).dtype} (largest "
                f"{np.finfo(np.asarray(read).dtype).max:.3g}; set data.dtype to float64)")
    return str(read)


def first_nonfinite(values: np.ndarray) -> int:
    """Flat index of the first NaN or Inf in ``values``, or -1; scanned in slices so that the
    temporary mask stays small. Non-float arrays cannot hold either."""
    if values.dtype.kind != "f":
        return -1
    flat = values.reshape(-1)
    for begin in range(0, flat.size, SCAN_VALUES):
        finite = np.isfinite(flat[begin:begin + SCAN_VALUES])
        if not finite.all():
            return begin + int(np.argmin(finite))
    return -1


def first_out_of_range(columns: np.ndarray, n_features: int) -> int:
    """Position of the first column index outside ``0..n_features-1``, or -1."""
    for begin in range(0, columns.size, SCAN_VALUES):
        part = columns[begin:begin + SCAN_VALUES]
        bad = (part < 0) | (part >= n_features)
        if bad.any():
            return begin + int(np.argmax(bad))
    return -1


def contents(handle: h5py.File, limit: int = 20) -> str:
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


def missing_sources(path, dataset: h5py.Dataset) -> list[str]:
    """The inputs of the virtual data set ``dataset`` (of the file ``path``) that do not exist,
    as stored; [] for an ordinary data set. Relative paths are taken from the file's directory,
    as HDF5 resolves them (unless HDF5_VDS_PREFIX says otherwise)."""
    if not dataset.is_virtual:
        return []
    base = os.path.dirname(os.path.abspath(path))
    stored = dict.fromkeys(source.file_name.replace("%%", "%")
                           for source in dataset.virtual_sources())
    return [name for name in stored
            if name != "." and not os.path.exists(os.path.join(base, name))]
