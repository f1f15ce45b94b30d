"""Rows moved between ranks so that every block of rows lies on one rank.

Reproducible mode sums per block of ``block_rows`` consecutive global rows, so a block must not
straddle two ranks. Rows a caller holds in memory may be split anywhere (3,001 rows on 2 ranks,
a rank with none); :func:`rebalance_rows` then moves them, in one all-to-all, so that every rank
holds the rows :func:`row_range` ``(n_total, rank, size, block_rows)`` gives it, and every
per-row array (X dense or CSR, labels, weights) travels with its rows. The global row order is
kept: rank r's rows still come after rank r-1's.

Memory: besides the caller's arrays (never modified) and the rows it ends with, a rank holds the
bytes of the rows it sends and of the rows it receives, once each, during the exchange; rows
that stay on their rank are copied straight across.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from ..comm import allgather_object, exchange_bytes, mark_raised_together, rank_and_size, world
from .shard import Shard, row_range

_INDEX = np.dtype(np.int64)  # CSR row lengths and column indices travel as int64


class Rows(NamedTuple):
    """This rank's rows ``[start, stop)`` after a rebalance: X and the per-row arrays."""

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray | None
    w: np.ndarray | None
    start: int
    stop: int


def in_whole_blocks(counts: list[int], block_rows: int) -> bool:
    """Whether rows split as ``counts`` (rows per rank, in rank order) leave every block of
    ``block_rows`` global rows on one rank: every boundary between ranks is a block boundary
    (or the end of the rows)."""
    n_total = sum(counts)
    return all(bound % block_rows == 0 or bound == n_total for bound in np.cumsum(counts)[:-1])


def rebalance_rows(X, y, w, counts: list[int], block_rows: int, comm=None) -> Rows:
    """This rank's rows of :func:`row_range` ``(sum(counts), rank, size, block_rows)``, from the
    rows every rank holds now: ``X`` (dense or CSR), ``y`` and ``w`` (per-row arrays, or None on
    every rank), with ``counts`` the agreed rows per rank in rank order. Collective: one small
    allgather agrees on layout and dtypes, then one all-to-all moves the rows.

    The result is new arrays (the inputs are never modified), C-contiguous or CSR. Layout and
    dtypes are those of the ranks holding rows: CSR if any of them holds CSR, the wider float if
    they differ, so rows meet on one layout wherever they came from.
    """
    comm = world(comm)
    rank, size = rank_and_size(comm)
    layout = _agree_layout(X, y, w, counts, comm)
    X = _as_layout(X, layout)
    y = None if layout.y is None else np.asarray(y, dtype=layout.y)
    w = None if layout.w is None else np.asarray(w, dtype=layout.w)
    n_total = sum(counts)
    held = [(sum(counts[:r]), sum(counts[:r + 1])) for r in range(size)]
    wanted = [row_range(n_total, r, size, block_rows) for r in range(size)]
    start = held[rank][0]
    outgoing = [_overlap(held[rank], wanted[d], start) if d != rank else (0, 0)
                for d in range(size)]
    send, send_counts = _pack(X, y, w, outgoing, layout)
    received, received_counts = exchange_bytes(send, send_counts, comm)
    del send
    lo, hi = wanted[rank]
    pieces = []  # (X part, y part, w part) from each rank in rank order
    offset = 0
    for source in range(size):
        if source == rank:
            first, last = _overlap(held[rank], wanted[rank], start)
            pieces.append(_slice(X, y, w, first, last))
            continue
        n_rows = max(0, min(held[source][1], hi) - max(held[source][0], lo))
        payload = received[offset:offset + received_counts[source]]
        pieces.append(_unpack(payload, n_rows, layout))
        offset += received_counts[source]
    return Rows(*_joined(pieces, layout, hi - lo), lo, hi)


def rebalance_shard(shard: Shard, block_rows: int, comm=None) -> Shard:
    """``shard`` with this rank's rows of :func:`row_range` ``(n_total, rank, size,
    block_rows)``: the rows of every rank moved (one all-to-all) so that each block of
    ``block_rows`` global rows lies on one rank, as reproducible sums need
    (:meth:`mpiml.comm.Reducer.sum_over_rows`). Collective. Returns ``shard`` itself when its
    rows already lie in whole blocks on every rank; never modifies it."""
    counts = allgather_object(shard.n_local, world(comm))
    if in_whole_blocks(counts, block_rows):
        return shard
    rows = rebalance_rows(shard.X, shard.y, shard.w, counts, block_rows, comm)
    return dataclasses.replace(shard, X=rows.X, y=rows.y, w=rows.w, start=rows.start,
                               stop=rows.stop)


class _Layout(NamedTuple):
    """What every rank agreed: CSR or dense, and the dtypes of X, y and w (None: absent)."""

    sparse: bool
    x: np.dtype
    y: np.dtype | None
    w: np.dtype | None
    n_features: int


def _agree_layout(X, y, w, counts: list[int], comm) -> _Layout:
    """The layout of the rebalanced rows, from one allgather of every rank's; raised on every
    rank when some ranks pass labels or weights and others do not, when widths differ, or for
    values that are not numbers (rows travel as raw bytes)."""
    def dtype_of(values):
        return None if values is None else np.asarray(values).dtype.str

    reports = allgather_object((sp.issparse(X), X.dtype.str, dtype_of(y), dtype_of(w),
                                X.shape[1]), comm)
    for name, index in (("labels", 2), ("weights", 3)):
        given = [r for r, report in enumerate(reports) if report[index] is not None]
        if given and len(given) != len(reports):
            raise mark_raised_together(ValueError(
                f"rebalancing rows: ranks {given} pass {name} and the others none"))
    kinds = {np.dtype(kind).kind for report in reports for kind in report[1:4] if kind}
    if not kinds <= set("biuf"):
        raise mark_raised_together(TypeError(
            f"rebalancing rows: X, labels and weights must hold numbers; found dtypes "
            f"{sorted({kind for report in reports for kind in report[1:4] if kind})}"))
    widths = sorted({report[4] for report in reports})
    if len(widths) > 1:
        raise mark_raised_together(ValueError(
            f"rebalancing rows: ranks hold different feature counts: {widths}"))
    holding = [report for report, n in zip(reports, counts, strict=True) if n] or reports

    def widest(index):
        kinds = [report[index] for report in holding]
        return None if kinds[0] is None else np.result_type(*kinds)

    return _Layout(any(report[0] for report in holding), widest(1), widest(2), widest(3),
                   widths[0])


def _as_layout(X, layout: _Layout):
    """This rank's X in the agreed layout and dtype (a copy only when it differs)."""
    if layout.sparse:
        return sp.csr_matrix(X, dtype=layout.x)
    return np.ascontiguousarray(X.toarray() if sp.issparse(X) else X, dtype=layout.x)


def _overlap(held: tuple[int, int], wanted: tuple[int, int], start: int) -> tuple[int, int]:
    """Local rows ``[first, last)`` of the held global rows that fall in ``wanted``."""
    first, last = max(held[0], wanted[0]), min(held[1], wanted[1])
    return (first - start, last - start) if first < last else (0, 0)


def _slice(X, y, w, first: int, last: int) -> tuple:
    """Local rows ``[first, last)``: X's rows (a CSR as row lengths, indices, data: views) and
    the per-row arrays' (views)."""
    if sp.issparse(X):
        lo, hi = X.indptr[first], X.indptr[last]
        part = (np.diff(X.indptr[first:last + 1]), X.indices[lo:hi], X.data[lo:hi])
    else:
        part = X[first:last]
    return (part, None if y is None else y[first:last], None if w is None else w[first:last])


def _pack(X, y, w, outgoing: list[tuple[int, int]], layout: _Layout
          ) -> tuple[np.ndarray, list[int]]:
    """One byte buffer holding, for each destination in rank order, its rows: X (dense rows;
    or CSR row lengths, column indices, values), then y, then w; and the bytes per destination.
    Values are written straight into the buffer: no other copy of the rows sent is made."""
    per_row = sum(np.dtype(d).itemsize for d in (layout.y, layout.w) if d is not None)
    if layout.sparse:
        per_row += _INDEX.itemsize
        per_value = _INDEX.itemsize + layout.x.itemsize
        counts = [(last - first) * per_row + int(X.indptr[last] - X.indptr[first]) * per_value
                  for first, last in outgoing]
    else:
        per_row += layout.n_features * layout.x.itemsize
        counts = [(last - first) * per_row for first, last in outgoing]
    send = np.empty(sum(counts), dtype=np.uint8)
    offset = 0
    for first, last in outgoing:
        x_part, y_part, w_part = _slice(X, y, w, first, last)
        wire = [(x_part[0], _INDEX), (x_part[1], _INDEX), (x_part[2], layout.x)] \
            if layout.sparse else [(x_part, layout.x)]
        wire += [(y_part, layout.y), (w_part, layout.w)]
        for array, dtype in wire:
            if array is None:
                continue
            nbytes = array.size * np.dtype(dtype).itemsize
            send[offset:offset + nbytes].view(dtype)[:] = array.reshape(-1)
            offset += nbytes
    return send, counts


def _unpack(payload: np.ndarray, n_rows: int, layout: _Layout) -> tuple:
    """The (X part, y part, w part) of ``n_rows`` rows packed by :func:`_pack` (views into
    ``payload``)."""
    def take(count: int, dtype) -> np.ndarray:
        nonlocal offset
        nbytes = count * np.dtype(dtype).itemsize
        array = payload[offset:offset + nbytes].view(dtype)
        offset += nbytes
        return array

    offset = 0
    if layout.sparse:
        lengths = take(n_rows, _INDEX)
        nnz = int(lengths.sum())
        x_part = (lengths, take(nnz, _INDEX), take(nnz, layout.x))
    else:
        x_part = take(n_rows * layout.n_features, layout.x).reshape(n_rows, layout.n_features)
    y_part = None if layout.y is None else take(n_rows, layout.y)
    w_part = None if layout.w is None else take(n_rows, layout.w)
    return x_part, y_part, w_part


def _joined(pieces: list[tuple], layout: _Layout, n_rows: int) -> tuple:
    """(X, y, w) of this rank's new rows from the pieces of every rank, in rank order."""
    def column(index: int) -> np.ndarray | None:
        parts = [piece[index] for piece in pieces]
        return None if parts[0] is None else np.concatenate(parts)

    if layout.sparse:
        indptr = np.concatenate([[0], np.cumsum(np.concatenate([x[0] for x, *_ in pieces]))])
        indices = np.concatenate([x[1] for x, *_ in pieces])
        data = np.concatenate([x[2] for x, *_ in pieces])
        new_X = sp.csr_matrix((data, indices, indptr), shape=(n_rows, layout.n_features))
    else:
        new_X = np.concatenate([x for x, *_ in pieces])
    return new_X, column(1), column(2)
