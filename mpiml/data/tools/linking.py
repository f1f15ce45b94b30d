"""``link``: several HDF5 data files as one data set, without copying a row.

The linked file holds HDF5 virtual data sets: ``X`` is the inputs' ``X`` one below the other,
and so are ``y``, ``X_test``/``y_test`` and ``X_val``/``y_val`` when every input has them. A
reader sees ordinary data sets and reads them by hyperslab; HDF5 fetches each row from its
input. Dense X only: a CSR group cannot be linked, because each input's ``indptr`` counts from
its own first nonzero, and a virtual data set places values but cannot shift them.

A missing input reads as the fill value, which is NaN here (X keeps a float dtype and y is
float64 for that reason), so the NaN check of every load refuses it instead of training on it.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import h5py
import numpy as np

from ...files.atomic import atomic_hdf5
from ..scan import contents
from ..shard import DataError, MissingDataError
from .splitting import SPLITS


def link(out, sources, *, absolute: bool = False) -> list[str]:
    """Write ``out`` with virtual data sets concatenating the rows of ``sources`` in order.

    Paths are stored relative to the directory of ``out`` (the linked file keeps working from
    any working directory, and when its directory is moved together with the inputs), or
    absolute with ``absolute`` (the linked file may move alone). Inputs must agree on the
    feature count and dtype of each linked set and on the names of text labels
    (``label_names``). Returns one note per set that only some inputs hold (not linked).
    """
    out = Path(os.fspath(out))
    sources = [os.fspath(source) for source in sources]
    if not sources:
        raise ValueError("link needs at least one input file")
    for source in sources:
        if os.path.realpath(source) == os.path.realpath(out):
            raise ValueError(f"{out}: the output is also an input")
    notes = []
    with ExitStack() as stack:
        handles = [stack.enter_context(_open(source)) for source in sources]
        plan = []
        for x_name, y_name in SPLITS:
            holders = [source for source, handle in zip(sources, handles, strict=True)
                       if x_name in handle]
            if x_name == "X" and len(holders) < len(sources):
                missing = next(source for source in sources if source not in holders)
                handle = handles[sources.index(missing)]
                raise MissingDataError(f"{missing}: no data set 'X'; {contents(handle)}")
            if holders and len(holders) < len(sources):
                absent = next(source for source in sources if source not in holders)
                notes.append(f"{x_name}: not in {absent}; not linked")
                continue
            if holders:
                plan.append(_describe_set(sources, handles, x_name, y_name, notes))
        base = os.path.dirname(os.path.realpath(out))
        stored = [os.path.realpath(source) if absolute
                  else os.path.relpath(os.path.realpath(source), base) for source in sources]
        with atomic_hdf5(out) as linked:
            for x_name, y_name, rows, n_features, dtype, label_names in plan:
                _write_virtual(linked, x_name, stored, rows, (n_features,), dtype)
                if y_name is not None:
                    labels = _write_virtual(linked, y_name, stored, rows, (), np.float64)
                    if label_names is not None:
                        labels.attrs["label_names"] = label_names
            names = [handle.attrs.get("feature_names") for handle in handles]
            if names[0] is not None and all(_same(names[0], other) for other in names[1:]):
                linked.attrs["feature_names"] = names[0]
            linked.attrs.update({"created_by": "mpiml.data link", "sources": stored,
                                 "paths": "absolute" if absolute else "relative"})
    return notes


def _open(source: str) -> h5py.File:
    if not os.path.exists(source):
        raise FileNotFoundError(f"{source}: no such file")
    try:
        return h5py.File(source, "r")
    except OSError as exc:
        raise OSError(f"{source}: cannot open as HDF5 (truncated, corrupt or not an HDF5 "
                      f"file): {exc}") from exc


def _describe_set(sources, handles, x_name, y_name, notes):
    """``(x_name, y_name or None, rows per input, n_features, dtype, label_names)`` of one set,
    checked to agree across the inputs."""
    rows, first = [], None
    for source, handle in zip(sources, handles, strict=True):
        node = handle[x_name]
        if isinstance(node, h5py.Group):
            raise DataError(f"{source}: '{x_name}' is a CSR group; link joins dense data sets "
                            f"only (a virtual data set cannot offset each input's indptr)")
        if node.ndim != 2 or node.dtype.kind not in "biuf":
            raise DataError(f"{source}: data set '{x_name}' must be a 2-D numeric array; it has "
                            f"shape {node.shape}, dtype {node.dtype}")
        if first is None:
            first = (source, node.shape[1], node.dtype)
        elif node.shape[1] != first[1]:
            raise DataError(f"{source}: '{x_name}' has {node.shape[1]} features but "
                            f"{first[0]} has {first[1]}")
        elif node.dtype != first[2]:
            raise DataError(f"{source}: '{x_name}' has dtype {node.dtype} but {first[0]} has "
                            f"{first[2]}")
        rows.append(node.shape[0])
    dtype = first[2] if first[2] in (np.float32, np.float64) else np.dtype(np.float64)
    have_labels = [y_name in handle for handle in handles]
    if not any(have_labels):
        return x_name, None, rows, first[1], dtype, None
    if not all(have_labels):
        absent = sources[have_labels.index(False)]
        notes.append(f"{y_name}: not in {absent}; {x_name} linked without labels")
        return x_name, None, rows, first[1], dtype, None
    label_names = None
    for position, (source, handle) in enumerate(zip(sources, handles, strict=True)):
        labels = handle[y_name]
        if not isinstance(labels, h5py.Dataset) or labels.ndim != 1 or (
                labels.dtype.kind not in "biuf"):
            raise DataError(f"{source}: data set '{y_name}' must be a 1-D numeric array")
        if len(labels) != rows[position]:
            raise DataError(f"{source}: '{x_name}' has {rows[position]} rows but '{y_name}' has "
                            f"{len(labels)} labels")
        names = labels.attrs.get("label_names")
        if position == 0:
            label_names = names
        elif not _same(label_names, names):
            raise DataError(f"{source}: the text labels of '{y_name}' differ from those of "
                            f"{sources[0]} (attribute label_names), so their codes would mean "
                            f"different classes")
    return x_name, y_name, rows, first[1], dtype, label_names


def _same(first, other) -> bool:
    if first is None or other is None:
        return first is None and other is None
    return list(np.asarray(first).tolist()) == list(np.asarray(other).tolist())


def _write_virtual(handle, name, stored, rows, tail, dtype) -> h5py.Dataset:
    """A virtual data set ``name`` of ``sum(rows)`` rows: the rows of ``name`` in each stored
    path, in order; NaN where an input cannot be read."""
    layout = h5py.VirtualLayout(shape=(sum(rows), *tail), dtype=dtype)
    begin = 0
    for path, count in zip(stored, rows, strict=True):
        # HDF5 reads '%' in a source name as a printf-style specifier: '%%' is a literal '%'
        layout[begin:begin + count] = h5py.VirtualSource(path.replace("%", "%%"), name,
                                                         shape=(count, *tail))
        begin += count
    return handle.create_virtual_dataset(name, layout, fillvalue=np.nan)
