"""``inspect``: data sets, shapes, dtypes, label counts and NaN/Inf counts of an HDF5 file
(streamed, so any file size fits in memory), and the inputs of linked data sets that are
missing."""

from __future__ import annotations

import json
import math
import os

import h5py
import numpy as np

from ..scan import missing_sources

_LABEL_COUNT_LIMIT = 20
_SCAN_VALUES = 1 << 20


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
                lines.append(_describe_dataset(path, name, node))
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


def _describe_dataset(path: str, name: str, dataset: h5py.Dataset) -> str:
    text = f"{name}: {dataset.shape} {dataset.dtype}"
    if dataset.is_virtual:
        files = len({source.file_name for source in dataset.virtual_sources()})
        text += f", linked from {files} file{'s' if files > 1 else ''}"
        missing = missing_sources(path, dataset)
        if missing:
            text += f" (MISSING: {', '.join(missing)}; they read as NaN)"
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
