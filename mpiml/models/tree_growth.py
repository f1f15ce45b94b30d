"""Depth-wise growth of the regression trees of one boosting round from global histograms.

Every rank holds the binned features of its own rows (uint8, bins ``0..B-1``, column-major)
and their gradients and hessians, already rounded to integers
(:func:`mpiml.comm.exact.quantize_rows`). A level of growth makes ONE flat float64 buffer
``[grad | hess | count]`` of shape ``(3, nodes, features, bins)`` over the nodes that need a
histogram (``np.bincount`` of ``node * bins + bin`` per feature, weighted by gradients or
hessians), and ONE reduction -- the ``reduce_sum`` the caller passes, an allreduce in the
distributed fit (:mod:`mpiml.fit.boosting`) -- combines it. No MPI here. Because every entry is
an integer below 2^53, float64 addition is exact in any order: the reduced histograms -- and so
every split, leaf value and tie -- are bit-identical at any rank count and with any allreduce
algorithm.

Of two sibling nodes only the one with fewer rows is histogrammed; the other is its parent's
histogram minus it (exact, for the same reason), which halves both the work and the message.
All the trees of a round (one per class for multiclass) grow in lockstep and share the
per-level message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

#: A child needs at least this hessian sum (scikit-learn's ``min_hessian_to_split``).
MIN_CHILD_HESSIAN = 1e-3
#: Histogram entries searched for splits at a time: bounds the temporaries of the search.
_SPLIT_SEARCH_VALUES = 1 << 21


@dataclass
class GrowthParams:
    """Tree-shape and regularisation settings shared by every tree of a fit."""

    max_depth: int
    min_samples_leaf: int
    l2: float
    learning_rate: float


@dataclass
class _Tree:
    """Nodes of one growing tree as parallel lists; node 0 is the root.

    ``stats[i]`` is ``(G, H, count)`` of node i in quantized units (exact reduced integers).
    """

    grad_scale: float
    hess_scale: float
    feature: list = field(default_factory=lambda: [-1])
    split_bin: list = field(default_factory=lambda: [0])
    left: list = field(default_factory=lambda: [-1])
    right: list = field(default_factory=lambda: [-1])
    stats: list = field(default_factory=list)

    def split(self, node: int, feature: int, split_bin: int, left_stats, right_stats):
        """Turn ``node`` into an internal node with two new leaf children; return their ids."""
        left, right = len(self.feature), len(self.feature) + 1
        self.feature[node], self.split_bin[node] = feature, split_bin
        self.left[node], self.right[node] = left, right
        self.feature += [-1, -1]
        self.split_bin += [0, 0]
        self.left += [-1, -1]
        self.right += [-1, -1]
        self.stats += [left_stats, right_stats]
        return left, right

    def arrays(self, params: GrowthParams) -> dict[str, np.ndarray]:
        """Flat node arrays; leaves carry ``value = -learning_rate * G / (H + l2)``."""
        stats = np.array(self.stats, dtype=np.float64).reshape(-1, 3)
        feature = np.array(self.feature, dtype=np.int32)
        value = -params.learning_rate * (stats[:, 0] / self.grad_scale) / (
            stats[:, 1] / self.hess_scale + params.l2)
        value[feature >= 0] = 0.0
        return {"feature": feature, "threshold_bin": np.array(self.split_bin, dtype=np.uint8),
                "left": np.array(self.left, dtype=np.int32),
                "right": np.array(self.right, dtype=np.int32), "value": value}


@dataclass
class _Candidate:
    """A node that may split at this level: where its histogram comes from."""

    tree: int
    node: int
    slot: int = -1          # index among the histograms built this level, or -1 if derived
    parent_hist: np.ndarray | None = None
    sibling: _Candidate | None = None


def best_splits(hist: np.ndarray, totals: np.ndarray, grad_scale: np.ndarray,
                hess_scale: np.ndarray, params: GrowthParams):
    """Best split of each node from its histograms ``(m, 3, d, B)`` and totals ``(m, 3)``.

    Splitting after bin b sends bins ``0..b`` left. In real units (quantized sums divided by
    their scales), the gain is the XGBoost loss reduction with ``lambda = l2`` (scikit-learn's
    form, twice XGBoost's Eq. 7 with gamma = 0)::

        gain = G_L^2 / (H_L + l2) + G_R^2 / (H_R + l2) - G^2 / (H + l2)

    over splits with at least ``min_samples_leaf`` rows and hessian ``MIN_CHILD_HESSIAN`` on each
    side. Returns ``(gain, feature, bin, left totals (m, 3))``; ties go to the first
    ``(feature, bin)`` in order; ``gain <= 0`` means no split.
    """
    m, _, d, n_bins = hist.shape
    left = np.cumsum(hist[..., :-1], axis=3)            # (m, 3, d, B-1): bins 0..b on the left
    right = totals[:, :, None, None] - left
    g_scale, h_scale = grad_scale[:, None, None], hess_scale[:, None, None]
    g_left, h_left = left[:, 0] / g_scale, left[:, 1] / h_scale
    g_right, h_right = right[:, 0] / g_scale, right[:, 1] / h_scale
    valid = ((left[:, 2] >= params.min_samples_leaf) & (right[:, 2] >= params.min_samples_leaf)
             & (h_left >= MIN_CHILD_HESSIAN) & (h_right >= MIN_CHILD_HESSIAN))
    g_node = totals[:, 0] / grad_scale
    with np.errstate(divide="ignore", invalid="ignore"):  # empty sides (l2 = 0): masked below
        parent = g_node * g_node / (totals[:, 1] / hess_scale + params.l2)
        gain = g_left * g_left / (h_left + params.l2) + g_right * g_right / (h_right + params.l2)
        gain -= parent[:, None, None]
    gain[~valid] = -np.inf
    flat = gain.reshape(m, -1)
    best = np.argmax(flat, axis=1)
    feature, split_bin = np.divmod(best, n_bins - 1)
    rows = np.arange(m)
    return (flat[rows, best], feature, split_bin,
            left[rows, :, feature, split_bin])


def grow_round(binned: np.ndarray, n_bins: int, gradients: np.ndarray, hessians: np.ndarray,
               totals: np.ndarray, grad_scale: np.ndarray, hess_scale: np.ndarray,
               params: GrowthParams, reduce_sum: Callable[[np.ndarray], np.ndarray]):
    """Grow one tree per row of ``gradients`` (T, n) together, level by level; ``reduce_sum``
    sums each level's histogram buffer over all ranks in place (collective when it is).

    ``totals`` (T, 3) are the reduced ``(G, H, count)`` of each root. Returns the trees as node
    arrays (see :meth:`_Tree.arrays`, thresholds as bins) and the leaf of every row in every
    tree, ``(T, n)``. A node is a candidate for splitting while its depth is below
    ``max_depth`` and it has at least ``2 * min_samples_leaf`` rows; all of that is read from
    reduced values, so every rank runs the same number of levels and reductions.
    """
    n_trees, n_rows = gradients.shape
    d = binned.shape[1]
    trees = [_Tree(float(grad_scale[t]), float(hess_scale[t]), stats=[tuple(totals[t])])
             for t in range(n_trees)]
    node_of = np.zeros((n_trees, n_rows), dtype=np.intp)
    frontier = [_Candidate(t, 0) for t in range(n_trees)]
    for _depth in range(params.max_depth):
        candidates = [c for c in frontier
                      if trees[c.tree].stats[c.node][2] >= 2 * params.min_samples_leaf]
        if not candidates:
            break
        built = _choose_built(candidates, trees)
        built_hist = np.zeros((3, len(built), d, n_bins))
        _fill_histograms(built_hist, built, node_of, binned, gradients, hessians, trees)
        reduce_sum(built_hist)
        frontier = []
        moves = [dict() for _ in range(n_trees)]
        per_chunk = max(1, _SPLIT_SEARCH_VALUES // (3 * d * n_bins))
        for lo in range(0, len(candidates), per_chunk):
            chunk = candidates[lo : lo + per_chunk]
            hist = np.stack([_histogram_of(c, built_hist) for c in chunk])
            stats = np.array([trees[c.tree].stats[c.node] for c in chunk])
            which = np.array([c.tree for c in chunk])
            gain, feature, split_bin, left_stats = best_splits(hist, stats, grad_scale[which],
                                                               hess_scale[which], params)
            for i, c in enumerate(chunk):
                if gain[i] <= 0.0:
                    continue
                left, right = trees[c.tree].split(c.node, int(feature[i]), int(split_bin[i]),
                                                  tuple(left_stats[i]),
                                                  tuple(stats[i] - left_stats[i]))
                moves[c.tree][c.node] = (int(feature[i]), int(split_bin[i]), left, right)
                left_child = _Candidate(c.tree, left, parent_hist=hist[i])
                right_child = _Candidate(c.tree, right, parent_hist=hist[i], sibling=left_child)
                left_child.sibling = right_child
                frontier += [left_child, right_child]
        for t in range(n_trees):
            _route_rows(node_of[t], moves[t], binned, len(trees[t].feature))
    return [tree.arrays(params) for tree in trees], node_of


def _choose_built(candidates: list[_Candidate], trees: list[_Tree]) -> list[_Candidate]:
    """Which candidates get a histogram of their own: all but the larger of two candidate
    siblings, whose histogram is the parent's minus the smaller one's (ties: build the left)."""
    candidate_ids = {id(c) for c in candidates}
    built = []
    for c in candidates:
        sibling = c.sibling
        if sibling is not None and id(sibling) in candidate_ids:
            mine = trees[c.tree].stats[c.node][2]
            theirs = trees[sibling.tree].stats[sibling.node][2]
            smaller_is_me = mine < theirs or (mine == theirs and c.node < sibling.node)
            if not smaller_is_me:
                continue
        c.slot = len(built)
        built.append(c)
    return built


def _histogram_of(candidate: _Candidate, built_hist: np.ndarray) -> np.ndarray:
    """(3, d, B) histogram of a candidate: built, or parent minus the built sibling."""
    if candidate.slot >= 0:
        return built_hist[:, candidate.slot]
    return candidate.parent_hist - built_hist[:, candidate.sibling.slot]


def _fill_histograms(hist: np.ndarray, built, node_of, binned, gradients, hessians,
                     trees) -> None:
    """This rank's ``[grad | hess | count]`` histograms ``(3, built, d, B)`` of the built nodes.

    Per tree and feature, one bincount per quantity over the index ``slot * B + bin`` of the
    rows that sit in a built node; each feature's bins of those rows are gathered from its
    contiguous column (``binned`` is column-major), one feature at a time.
    """
    n_bins = hist.shape[3]
    for t in range(len(trees)):
        mine = [c for c in built if c.tree == t]
        if not mine:
            continue
        local_slot = np.full(len(trees[t].feature), -1, dtype=np.intp)
        local_slot[[c.node for c in mine]] = np.arange(len(mine))
        slots = local_slot[node_of[t]]
        rows = np.flatnonzero(slots >= 0)
        if rows.size == 0:
            continue
        every = rows.size == len(slots)
        base = slots[rows] * n_bins
        size = len(mine) * n_bins
        targets = [c.slot for c in mine]
        weights = (gradients[t, rows], hessians[t, rows], None)
        for j in range(binned.shape[1]):
            index = base + (binned[:, j] if every else binned[:, j][rows])
            for q, weight in enumerate(weights):
                hist[q, targets, j] = np.bincount(index, weight, size).reshape(len(mine), n_bins)


def _route_rows(node_of: np.ndarray, moves: dict, binned: np.ndarray, n_nodes: int) -> None:
    """Send the rows of every node split this level to its left (bin <= split bin) or right
    child, in place."""
    if not moves:
        return
    feature = np.full(n_nodes, -1, dtype=np.intp)
    split_bin = np.zeros(n_nodes, dtype=np.intp)
    left = np.zeros(n_nodes, dtype=np.intp)
    right = np.zeros(n_nodes, dtype=np.intp)
    for node, (f, b, lo, hi) in moves.items():
        feature[node], split_bin[node], left[node], right[node] = f, b, lo, hi
    rows = np.flatnonzero(feature[node_of] >= 0)
    nodes = node_of[rows]
    goes_left = binned[rows, feature[nodes]] <= split_bin[nodes]
    node_of[rows] = np.where(goes_left, left[nodes], right[nodes])
