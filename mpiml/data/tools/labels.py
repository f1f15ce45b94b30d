"""Labels shared by the converters of tables (CSV, Parquet): which column holds them, and text
labels renumbered into sorted name order."""

from __future__ import annotations

import h5py
import numpy as np

from ..shard import DataError

#: Values per slice when rewriting labels in place.
SCAN_VALUES = 1 << 20


def label_index(src, names, label_column, header) -> int | None:
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


def sort_label_codes(labels: h5py.Dataset, codes: dict[str, int]) -> None:
    """Renumber text-label codes (first-seen order) into sorted name order, slice by slice."""
    names = sorted(codes)
    renumber = np.empty(len(codes), dtype=np.float64)
    for new, name in enumerate(names):
        renumber[codes[name]] = new
    for begin in range(0, len(labels), SCAN_VALUES):
        end = min(len(labels), begin + SCAN_VALUES)
        labels[begin:end] = renumber[labels[begin:end].astype(np.int64)]
    labels.attrs["label_names"] = names
