"""Sums whose bits do not depend on how rows are split over ranks: one fixed-point grid, agreed
by all ranks, onto which every addend is rounded so that integer addition is exact in any order.

Floating-point addition is not associative: the sum of the same numbers grouped per rank and then
across ranks changes with the rank count. Here, per element j:

1. one MAX allreduce agrees on ``m_j``, the largest magnitude of any addend on any rank;
2. :func:`grid_exponents` picks the power of two ``2**s_j`` that scales every addend onto
   integers small enough that the sum of all ``n`` addends stays below ``2**headroom``;
3. integers add exactly in any order, so the total -- and ``total * 2**-s_j`` -- is the same
   for every partition.

Two uses share that grid:

* :func:`exact_sum` -- reproducible mode's block sums: each addend is the sum over a fixed run
  of consecutive global rows (a block), held on one rank; ``int64`` integers, 62 bits of room.
  The total's error is below ``n_blocks * m_j * 2**-(62 - ceil(log2 n_blocks))``: about 1e-16
  relative to the largest block value for a million blocks.
* :func:`quantize_rows` -- the boosted trees' gradients: every row's value is rounded onto the
  grid once, as float64 integers (53 bits of room), so that any histogram of any subset of rows
  is an exact sum (``np.bincount`` adds float64 weights); rounding error at most
  ``max|v| * N / 2**52`` relative to one value.

``reduce`` is the run's :class:`mpiml.comm.Reducer` (anything with in-place ``max`` and ``sum``).
"""

from __future__ import annotations

import math

import numpy as np

#: Bits of integer room: int64 sums, and the integers float64 represents exactly.
INT64_BITS = 62
FLOAT64_BITS = 53
#: Below this magnitude no finite power-of-two scale fits (2**1080 overflows): counts as zero.
_TINIEST = 2.0**-960


def grid_exponents(magnitudes: np.ndarray, n_addends: int, headroom_bits: int = INT64_BITS
                   ) -> np.ndarray:
    """Per element, the power of two that scales values of magnitude <= ``magnitudes`` into
    integers whose sum over ``n_addends`` addends stays below ``2**headroom_bits``."""
    _, exponent = np.frexp(magnitudes)  # magnitude < 2**exponent
    spare = headroom_bits - max(1, math.ceil(math.log2(max(n_addends, 1)))) - 1
    return np.where(magnitudes > 0, spare - exponent, 0).astype(np.int64)


def exact_sum(blocks: list[np.ndarray], width: int, n_blocks_total: int, reduce,
              votes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sum of every rank's ``blocks`` (float64 vectors of length ``width``) with identical bits
    for any partition of the blocks over ranks. Collective: two allreduces.

    ``n_blocks_total`` is the number of blocks over all ranks (known from the global batch, so
    it is the same on every rank whatever the partition). ``votes`` (small non-negative floats)
    are combined by MAX in the first message and returned reduced. A non-finite block value
    makes the corresponding total NaN (for the non-finite guard), never an integer overflow.
    """
    votes = np.zeros(0) if votes is None else np.asarray(votes, dtype=np.float64)
    header = np.zeros(width + votes.size)
    for block in blocks:
        np.maximum(header[:width], np.abs(block), out=header[:width])
    header[width:] = votes
    header[:width][~np.isfinite(header[:width])] = np.inf
    reduce.max(header)
    magnitudes = header[:width]
    broken = ~np.isfinite(magnitudes)
    exponents = grid_exponents(np.where(broken, 0.0, magnitudes), n_blocks_total)
    total = np.zeros(width, dtype=np.int64)
    for block in blocks:
        scaled = np.ldexp(np.where(broken, 0.0, block), exponents)
        total += np.rint(scaled).astype(np.int64)
    reduce.sum(total)
    result = np.ldexp(total.astype(np.float64), -exponents)
    result[broken] = np.nan
    return result, header[width:].copy()


def quantize_rows(values: np.ndarray, n_total: int, reduce) -> tuple[np.ndarray, np.ndarray]:
    """Round each row of ``values`` (m, n) onto its agreed grid: ``q = rint(v * s)``, returned
    as float64 integers with the scales ``s`` (powers of two). Collective: one MAX allreduce.

    ``n_total`` is the number of values summed at most (all ranks' rows), so every sum of at
    most that many ``q`` is an integer below 2**53 and float64 adds them exactly in any order;
    dividing by ``s`` is exact too. A row whose largest magnitude is below 2**-960 counts as
    zero.
    """
    largest = np.abs(values).max(axis=1, initial=0.0)
    reduce.max(largest)
    usable = largest > _TINIEST
    exponents = grid_exponents(np.where(usable, largest, 0.0), max(n_total, 2), FLOAT64_BITS)
    scale = np.where(usable, np.ldexp(1.0, exponents), 1.0)
    return np.where(usable[:, None], np.rint(values * scale[:, None]), 0.0), scale
