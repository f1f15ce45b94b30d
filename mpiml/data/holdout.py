"""A validation set held out of the training rows (``data.validation_fraction``).

Which rows are held out depends only on their GLOBAL position and the seed, never on the rank
count: unit ``u`` (a row, or in reproducible mode a whole block of ``block_rows`` rows) is held
out when a hash of ``(seed, u)`` falls below the fraction. Each rank keeps its rows where they
are; the kept rows and the held-out rows are each renumbered in global order, so both shards are
contiguous, rank-ordered and (in reproducible mode) start on block boundaries -- exactly what
the batch order and the exact sums need. One small allgather agrees on the new offsets.
"""

from __future__ import annotations

import numpy as np

from ..comm import allgather_object, mark_raised_together, rank_and_size
from .shard import DataError, Shard

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: uint64 -> well-mixed uint64 (wrapping arithmetic)."""
    z = values.copy()
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def held_out(units: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Whether each global unit index in ``units`` belongs to the validation set."""
    with np.errstate(over="ignore"):
        keys = (np.asarray(units, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        keys ^= _mix(np.array([seed], dtype=np.uint64))[0]
        uniform = (_mix(keys) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return uniform < fraction


def split_validation(shard: Shard, fraction: float, seed: int, block_rows: int, comm,
                     source: str) -> tuple[Shard, Shard]:
    """``(training, validation)`` shards from this rank's ``shard``; collective. ``source``
    names the data in the error raised (on every rank) when either part would be empty."""
    units = np.arange(shard.start, shard.stop) // block_rows
    mask = held_out(units, fraction, seed)
    n_held = int(mask.sum())
    counts = allgather_object((shard.n_local - n_held, n_held), comm)
    rank = rank_and_size(comm)[0]
    kept_total = sum(kept for kept, _ in counts)
    held_total = sum(held for _, held in counts)
    if kept_total == 0 or held_total == 0:
        empty = "validation" if held_total == 0 else "training"
        raise mark_raised_together(DataError(
            f"data.validation_fraction {fraction:g} of the {shard.n_total} rows of {source} "
            f"leaves the {empty} set empty: use more rows or another fraction"))
    kept_start = sum(kept for kept, _ in counts[:rank])
    held_start = sum(held for _, held in counts[:rank])
    return (shard.take(np.flatnonzero(~mask), kept_start, kept_total),
            shard.take(np.flatnonzero(mask), held_start, held_total))
