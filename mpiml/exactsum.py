"""Sums whose bits do not depend on how rows are split over ranks (reproducible mode).

Floating-point addition is not associative: the sum of the same numbers grouped per rank and then
across ranks changes with the rank count. Here every addend is a *block* vector -- the sum over a
fixed run of consecutive global rows, computed on the one rank that holds the block -- and blocks
are added exactly:

1. one MAX allreduce agrees, for every element j, on ``m_j = max |v_j|`` over all blocks of all
   ranks (the control votes of the step ride in the same message);
2. each block value becomes an integer on a fixed-point grid: ``q = rint(v * 2**s_j)``, with
   ``s_j`` chosen from ``m_j`` and the total number of blocks so that the sum of all ``q`` stays
   below 2**62 in magnitude;
3. integers add exactly in any order: local int64 sums, then one int64 SUM allreduce;
4. ``total * 2**-s_j`` back to float64.

Everything that decides the result -- block contents, ``m_j``, ``s_j``, the integer total -- is
independent of the partition, so 1, 2, 3 ... ranks give the same bits. Accuracy: each block value
is rounded to ``m_j * 2**-(61 - ceil(log2 n_blocks))``, so the total's error is below
``n_blocks * m_j * 2**-(62 - ceil(log2 n_blocks))``: about 1e-16 relative to the largest block
value for a million blocks, close to float64's own rounding of an ordinary sum.
"""

from __future__ import annotations

import math

import numpy as np

from . import collectives

_HEADROOM_BITS = 62


def grid_exponents(magnitudes: np.ndarray, n_blocks: int) -> np.ndarray:
    """Per element, the power of two that scales values of magnitude <= ``magnitudes`` into
    integers whose sum over ``n_blocks`` blocks stays below 2**62."""
    _, exponent = np.frexp(magnitudes)  # magnitude < 2**exponent
    spare = _HEADROOM_BITS - max(1, math.ceil(math.log2(max(n_blocks, 1)))) - 1
    return np.where(magnitudes > 0, spare - exponent, 0).astype(np.int64)


def exact_sum(blocks: list[np.ndarray], width: int, n_blocks_total: int, comm=None,
              votes: np.ndarray | None = None, algorithm: str = "auto",
              ring_threshold: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sum of every rank's ``blocks`` (float64 vectors of length ``width``) with identical bits
    for any partition of the blocks over ranks. Collective: two allreduces.

    ``n_blocks_total`` is the number of blocks over all ranks (known from the global batch, so
    it is the same on every rank whatever the partition). ``votes`` (small non-negative floats)
    are combined by MAX in the first message and returned reduced. A non-finite block value
    makes the corresponding total NaN (for the non-finite guard), never an integer overflow.
    """
    options = {"algorithm": algorithm}
    if ring_threshold is not None:
        options["ring_threshold"] = ring_threshold
    votes = np.zeros(0) if votes is None else np.asarray(votes, dtype=np.float64)
    header = np.zeros(width + votes.size)
    for block in blocks:
        np.maximum(header[:width], np.abs(block), out=header[:width])
    header[width:] = votes
    finite = np.isfinite(header[:width])
    header[:width][~finite] = np.inf
    collectives.allreduce(header, comm, op="max", validate=False, **options)
    magnitudes = header[:width]
    broken = ~np.isfinite(magnitudes)
    exponents = grid_exponents(np.where(broken, 0.0, magnitudes), n_blocks_total)
    total = np.zeros(width, dtype=np.int64)
    for block in blocks:
        scaled = np.ldexp(np.where(broken, 0.0, block), exponents)
        total += np.rint(scaled).astype(np.int64)
    collectives.allreduce(total, comm, validate=False, **options)
    result = np.ldexp(total.astype(np.float64), -exponents)
    result[broken] = np.nan
    return result, header[width:].copy()
