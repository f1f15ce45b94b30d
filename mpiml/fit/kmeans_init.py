"""Initial centres of a distributed K-Means, the same on any number of ranks: k-means++
seeding, rows drawn uniformly at random, centres given by the caller, or centres read from an
HDF5 file (``kmeans.init_file``).

Every draw is made from the GLOBAL row indices by one generator seeded identically on every
rank; a chosen row is sent by the rank that owns it, so the centres do not depend on how the
rows are split.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import scipy.sparse as sp

from ..comm import allgather_object, broadcast, broadcast_object, on_root, raise_together
from ..data.stream import per_row
from ..models.kmeans import assign
from .layout import RowLayout

#: The data set of ``kmeans.init_file`` when the file name has no ``:name`` suffix.
CENTERS_DATASET = "centers"
#: Integer weights of k-means++ sum to at most 2**62: exact int64 prefix sums at any rank count.
_WEIGHT_TOTAL = float(2**62)


def _dense_row(X, row: int) -> np.ndarray:
    return np.asarray(X[row].toarray()[0] if sp.issparse(X) else X[row], dtype=np.float64)


def fetch_row(X, layout: RowLayout, global_row: int, reducer) -> np.ndarray:
    """Global row ``global_row`` as float64 on every rank, broadcast by the rank that owns it."""
    owner = layout.owner(global_row)
    row = np.empty(X.shape[1], dtype=np.float64)
    if owner == layout.rank:
        row[:] = _dense_row(X, global_row - layout.start)
    return broadcast(row, reducer.comm, root=owner)


def assigned(X, centers: np.ndarray, x_norms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mpiml.models.kmeans.assign` over all of this rank's rows, a chunk at a time when
    they stream (``data.memory_budget``)."""
    return per_row(lambda rows, lo, hi: assign(rows, centers, x_norms[lo:hi]), X, n_outputs=2)


def kmeans_plusplus(X, x_norms, layout: RowLayout, k: int, seed: int, reducer,
                    sample_weight: np.ndarray | None = None) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii), the same centres at any rank count.

    The first centre is a uniformly drawn global row; each next one is row i with probability
    ``D(x_i)^2 / sum_j D(x_j)^2`` (D = distance to the nearest centre chosen so far), drawn by
    :func:`draw_row`. With ``sample_weight`` (this rank's rows) the first centre is drawn with
    probability proportional to the weights and the next ones to ``w_i D(x_i)^2``, as
    scikit-learn draws them.
    """
    rng = np.random.default_rng(seed)
    centers = np.empty((k, X.shape[1]), dtype=np.float64)
    first = (int(rng.integers(layout.n_total)) if sample_weight is None
             else draw_row(sample_weight, layout, rng, reducer))
    centers[0] = fetch_row(X, layout, first, reducer)
    closest = assigned(X, centers[:1], x_norms)[1]
    for c in range(1, k):
        odds = closest if sample_weight is None else closest * sample_weight
        centers[c] = fetch_row(X, layout, draw_row(odds, layout, rng, reducer), reducer)
        np.minimum(closest, assigned(X, centers[c : c + 1], x_norms)[1], out=closest)
    return centers


def draw_row(odds: np.ndarray, layout: RowLayout, rng, reducer) -> int:
    """A global row drawn with probability proportional to this rank's ``odds`` (>= 0) and the
    other ranks', the same row at any rank count; uniformly if every one is 0.

    To make the draw independent of the partition, every value is rounded down to an integer
    weight ``floor(v * 2^62 / (N max v))``: the integer sums are exact in any order, so the
    global draw ``u`` (``rng`` seeded identically on every rank) falls in the same row whether
    the prefix sums are split over 1 or p ranks. The owning rank is found from the allgathered
    per-rank sums (exclusive prefix in rank order); it picks its row from its local cumulative
    sum and broadcasts it.
    """
    largest = np.array([odds.max(initial=0.0)])
    reducer.max(largest)
    scale = _WEIGHT_TOTAL / (layout.n_total * largest[0]) if largest[0] > 0 else 0.0
    weights = np.floor(odds * scale).astype(np.int64)
    cumulative = np.cumsum(weights)
    local_totals = allgather_object(int(cumulative[-1]) if len(weights) else 0, reducer.comm)
    total = sum(local_totals)
    if total == 0:
        return int(rng.integers(layout.n_total))
    u = int(rng.integers(total))
    prefix = np.cumsum([0, *local_totals])
    owner = int(np.searchsorted(prefix, u, side="right") - 1)
    chosen = -1
    if owner == layout.rank:
        chosen = layout.start + int(np.searchsorted(cumulative, u - prefix[owner], side="right"))
    return int(broadcast_object(chosen, reducer.comm, root=owner))


def random_rows(X, layout: RowLayout, k: int, seed: int, reducer,
                sample_weight: np.ndarray | None = None) -> np.ndarray:
    """``k`` distinct global rows drawn uniformly (``Generator.choice`` without replacement over
    the global row indices), in the order drawn. One allgather: each rank sends the chosen rows
    it owns. With ``sample_weight``, each next row is drawn with probability proportional to
    the weights of the rows not yet drawn (:func:`draw_row`)."""
    if sample_weight is None:
        chosen = np.random.default_rng(seed).choice(layout.n_total, size=k, replace=False)
    else:
        rng, odds, chosen = np.random.default_rng(seed), sample_weight.copy(), []
        for _ in range(k):
            chosen.append(draw_row(odds, layout, rng, reducer))
            if layout.owner(chosen[-1]) == layout.rank:
                odds[chosen[-1] - layout.start] = 0.0
    mine = {position: _dense_row(X, int(row) - layout.start)
            for position, row in enumerate(chosen) if layout.owner(int(row)) == layout.rank}
    centers = np.empty((k, X.shape[1]), dtype=np.float64)
    for found in allgather_object(mine, reducer.comm):
        for position, row in found.items():
            centers[position] = row
    return centers


def given_centers(init, k: int, d: int, comm) -> np.ndarray:
    """The caller's initial centres as float64 ``(k, d)``, checked on every rank (a bad array on
    any rank raises the same ValueError everywhere), then rank 0's on every rank."""
    centers, error = np.zeros((k, d)), None
    try:
        given = np.asarray(init, dtype=np.float64)
        if given.shape != (k, d):
            raise ValueError(f"init centres must have shape ({k}, {d}) (n_clusters, "
                             f"n_features); got {given.shape}")
        if not np.isfinite(given).all():
            row, column = np.argwhere(~np.isfinite(given))[0]
            raise ValueError(f"init centres must be finite; row {row} column {column} is "
                             f"{given[row, column]}")
        centers[...] = given
    except (TypeError, ValueError) as exc:
        error = ValueError(str(exc)) if isinstance(exc, TypeError) else exc
    raise_together(error, comm)
    return broadcast(centers, comm, root=0)


def split_init_file(spec: str) -> tuple[str, str]:
    """``kmeans.init_file`` as (file, data set): ``path.h5:name``, or ``path.h5`` for the data
    set ``centers``."""
    path, colon, name = spec.rpartition(":")
    return (path, name) if colon and name else (spec.rstrip(":"), CENTERS_DATASET)


def read_init_file(spec: str, k: int, d: int, comm) -> np.ndarray:
    """The initial centres in ``kmeans.init_file`` (see :func:`split_init_file`), read by rank 0
    and sent to every rank; a missing file or data set, a shape other than ``(k, d)`` or a
    non-finite value raises the same one-line error on every rank, naming the file and the
    shape expected."""
    path, name = split_init_file(spec)
    wanted = f"a data set {name!r} of shape ({k}, {d}) (n_clusters x n_features)"

    def read() -> np.ndarray:
        where = f"kmeans.init_file {path}"
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{where}: no such file (expected {wanted})")
        try:
            with h5py.File(path, "r") as file:
                dataset = file.get(name)
                if not isinstance(dataset, h5py.Dataset):
                    raise ValueError(f"{where}: no data set {name!r} (expected {wanted})")
                if dataset.shape != (k, d):
                    raise ValueError(f"{where}: data set {name!r} has shape {dataset.shape}; "
                                     f"expected ({k}, {d}) (n_clusters x n_features)")
                if dataset.dtype.kind not in "biuf":
                    raise ValueError(f"{where}: data set {name!r} holds {dataset.dtype}, not "
                                     f"numbers (expected {wanted})")
                centers = dataset[()].astype(np.float64)
        except OSError as exc:
            raise OSError(f"{where}: cannot be read as HDF5 ({exc})") from exc
        if not np.isfinite(centers).all():
            row, column = np.argwhere(~np.isfinite(centers))[0]
            raise ValueError(f"{where}: data set {name!r} row {row} column {column} is "
                             f"{centers[row, column]}; centres must be finite")
        return centers

    return on_root(read, comm)
