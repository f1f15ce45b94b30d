"""A cheap fingerprint of the training data, so that a resume never continues on other data.

It names the data (resolved path and data sets, or "in memory"), their shape, stored dtype and
layout, and a SHA-256 of a few sampled rows (at fixed, evenly spaced global positions) and their
labels. A file regenerated or replaced under the same path changes its row count or its sampled
rows; reading 16 rows costs nothing next to training. For rows held in memory (the estimators)
each rank hashes the sampled rows it owns and the digests are combined in global row order, so
the fingerprint does not depend on the number of ranks.
"""

from __future__ import annotations

import hashlib
import os

import h5py
import numpy as np

from ..comm import allgather_object, on_root

SAMPLED_ROWS = 16


def _positions(n_rows: int) -> np.ndarray:
    return np.unique(np.linspace(0, max(n_rows - 1, 0), SAMPLED_ROWS).astype(np.int64))


def _file_facts(path: str, x: str, y: str | None) -> dict:
    with h5py.File(path, "r") as handle:
        node = handle[x]
        hasher = hashlib.sha256()
        if isinstance(node, h5py.Group):  # CSR
            n_rows, n_features = (int(v) for v in node.attrs["shape"])
            indptr = node["indptr"]
            for row in _positions(n_rows):
                lo, hi = int(indptr[row]), int(indptr[row + 1])
                hasher.update(np.asarray(node["indices"][lo:hi]).tobytes())
                hasher.update(np.asarray(node["data"][lo:hi]).tobytes())
            layout, dtype, stored = "csr", str(node["data"].dtype), int(len(node["data"]))
        else:
            n_rows, n_features = (int(v) for v in node.shape)
            hasher.update(np.asarray(node[_positions(n_rows)]).tobytes())
            layout, dtype, stored = "dense", str(node.dtype), int(node.size)
        if y is not None and y in handle:
            hasher.update(np.asarray(handle[y][_positions(n_rows)]).tobytes())
    return {"source": os.path.realpath(path), "x": x, "y": y, "rows": n_rows,
            "features": n_features, "dtype": dtype, "layout": layout, "stored_values": stored,
            "sample_sha256": hasher.hexdigest()}


def file_fingerprint(path, x: str, y: str | None, comm) -> dict:
    """The fingerprint of data set ``x`` (and labels ``y``) of the HDF5 file ``path``, read on
    rank 0 and the same on every rank. Collective."""
    return on_root(lambda: _file_facts(os.fspath(path), x, y), comm)


def rows_fingerprint(X, y, start: int, n_total: int, comm) -> dict:
    """The fingerprint of rows held in memory, rank r's rows ``start..`` of ``n_total``.
    Collective."""
    mine = [row for row in _positions(n_total) if start <= row < start + X.shape[0]]
    digests = []
    for row in mine:
        local = row - start
        values = X[local].toarray() if hasattr(X, "toarray") else X[local]
        label = b"" if y is None else np.asarray(y[local]).tobytes()
        digests.append((int(row), hashlib.sha256(np.asarray(values).tobytes() + label)
                        .hexdigest()))
    hasher = hashlib.sha256()
    for _, digest in sorted(d for part in allgather_object(digests, comm) for d in part):
        hasher.update(digest.encode())
    return {"source": "in memory", "rows": int(n_total), "features": int(X.shape[1]),
            "dtype": str(X.dtype), "layout": "csr" if hasattr(X, "toarray") else "dense",
            "sample_sha256": hasher.hexdigest()}


def differences(saved: dict, current: dict) -> list[str]:
    """``key: saved -> current`` for every fingerprint entry that differs."""
    keys = sorted(set(saved) | set(current))
    return [f"data {key}: {saved.get(key)!r} -> {current.get(key)!r}" for key in keys
            if saved.get(key) != current.get(key)]
