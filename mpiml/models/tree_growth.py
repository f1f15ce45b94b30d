"""Growth of the regression trees of one boosting round from global histograms: depth-wise
(every splittable leaf of a level at once, down to ``max_depth``) or best-first (the leaf of
largest gain first, up to ``max_leaf_nodes`` leaves, as scikit-learn and LightGBM grow).

Every rank holds the binned features of its own rows (uint8, bins ``0..B-1``, column-major)
and their gradients and hessians, already rounded to integers
(:func:`mpiml.comm.exact.quantize_rows`). Each tree keeps its rows in one order array in which
every node's rows are a contiguous range; a split partitions its node's range in place. A step
of growth splits the chosen leaves, histograms the smaller child of each split (``(d, B, 3)``:
gradient, hessian and row count per feature and bin), and ONE reduction -- the ``reduce_sum``
the caller passes, an allreduce in the distributed fit (:mod:`mpiml.fit.boosting`) -- sums the
step's histograms; the larger child's is its parent's minus the smaller one's. A root's
histogram reads every row in order; a tree's sparse nodes of a step share one pass over their
rows (:data:`SPARSE`). No MPI here.
Histograms, partitions and the split search run in the compiled kernels of
:mod:`mpiml.kernels.histograms`, or in their numpy references here (:func:`node_histogram`,
:func:`partition_rows`, :func:`best_split`) when the kernels are off. Because every entry is
an integer below 2^53, float64 addition is exact in any order: the reduced histograms -- and so
every split, leaf value, tie and choice of leaf -- are bit-identical at any rank count and with
any allreduce algorithm. All the trees of a round (one per class for multiclass) grow in
lockstep and share each step's message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from ..kernels import tree_kernels

#: A child needs at least this hessian sum (scikit-learn's ``min_hessian_to_split``).
MIN_CHILD_HESSIAN = 1e-3
#: A node with fewer than ``1 / SPARSE`` of a rank's rows is sparse: its histogram costs about
#: a full read of the bins, so a tree's sparse nodes of a step share one (:func:`_histograms`).
SPARSE = 16


@dataclass
class GrowthParams:
    """Tree-shape and regularisation settings shared by every tree of a fit. ``max_leaf_nodes``
    None grows depth-wise; a number grows best-first. ``max_depth`` None: no depth limit."""

    max_depth: int | None
    max_leaf_nodes: int | None
    min_samples_leaf: int
    l2: float
    learning_rate: float


@dataclass
class _Tree:
    """Nodes of one growing tree as parallel lists; node 0 is the root.

    ``stats[i]`` is ``(G, H, count)`` of node i in quantized units (exact reduced integers);
    ``span[i]`` the range of its rows (this rank's) in the tree's row order.
    """

    grad_scale: float
    hess_scale: float
    stats: list
    span: list
    feature: list = field(default_factory=lambda: [-1])
    split_bin: list = field(default_factory=lambda: [0])
    left: list = field(default_factory=lambda: [-1])
    right: list = field(default_factory=lambda: [-1])
    depth: list = field(default_factory=lambda: [0])
    n_leaves: int = 1

    def split(self, node: int, feature: int, split_bin: int, left_stats, n_left: int):
        """Turn ``node`` into an internal node with two new leaf children (the first ``n_left``
        rows of its span go left); return their ids."""
        left, right = len(self.feature), len(self.feature) + 1
        self.feature[node], self.split_bin[node] = feature, split_bin
        self.left[node], self.right[node] = left, right
        lo, hi = self.span[node]
        self.feature += [-1, -1]
        self.split_bin += [0, 0]
        self.left += [-1, -1]
        self.right += [-1, -1]
        self.depth += [self.depth[node] + 1] * 2
        self.stats += [left_stats, tuple(np.subtract(self.stats[node], left_stats))]
        self.span += [(lo, lo + n_left), (lo + n_left, hi)]
        self.n_leaves += 1
        return left, right

    def arrays(self, params: GrowthParams) -> dict[str, np.ndarray]:
        """Flat node arrays; leaves carry ``value = -learning_rate * G / (H + l2)``."""
        stats = np.array(self.stats, dtype=np.float64).reshape(-1, 3)
        feature = np.array(self.feature, dtype=np.int32)
        with np.errstate(divide="ignore", invalid="ignore"):  # inner nodes: zeroed below
            value = -params.learning_rate * (stats[:, 0] / self.grad_scale) / (
                stats[:, 1] / self.hess_scale + params.l2)
        value[feature >= 0] = 0.0
        return {"feature": feature, "threshold_bin": np.array(self.split_bin, dtype=np.uint8),
                "left": np.array(self.left, dtype=np.int32),
                "right": np.array(self.right, dtype=np.int32), "value": value}


@dataclass
class _Job:
    """One histogram of a step's message: node ``built``'s rows; ``derived`` (-1: none) is its
    sibling, whose histogram is ``parent_hist`` minus it (in ``parent_hist``'s memory). The
    flags say which may split."""

    tree: int
    built: int
    built_may_split: bool = True
    derived: int = -1
    derived_may_split: bool = False
    parent_hist: np.ndarray | None = None


@dataclass
class _Leaf:
    """A leaf with its reduced histogram and best split (positive gain), waiting to split."""

    tree: int
    node: int
    hist: np.ndarray
    gain: float
    feature: int
    split_bin: int
    left_stats: tuple


def best_split(hist: np.ndarray, totals: np.ndarray, grad_scale: float, hess_scale: float,
               min_samples_leaf: int, l2: float, min_child_hessian: float):
    """Best split of one node from its histogram ``(d, B, 3)`` and totals ``(3,)`` (the numpy
    reference of the compiled kernel).

    Splitting after bin b sends bins ``0..b`` left. In real units (quantized sums divided by
    their scales), the gain is the XGBoost loss reduction with ``lambda = l2`` (scikit-learn's
    form, twice XGBoost's Eq. 7 with gamma = 0)::

        gain = G_L^2 / (H_L + l2) + G_R^2 / (H_R + l2) - G^2 / (H + l2)

    over splits with at least ``min_samples_leaf`` rows and hessian ``min_child_hessian`` on
    each side. Returns ``(gain, feature, bin, left totals (3,))``; ties go to the first
    ``(feature, bin)`` in order; ``gain <= 0`` means no split.
    """
    n_bins = hist.shape[1]
    left = np.cumsum(hist[:, :-1], axis=1)            # (d, B-1, 3): bins 0..b on the left
    right = totals - left
    g_left, h_left = left[..., 0] / grad_scale, left[..., 1] / hess_scale
    g_right, h_right = right[..., 0] / grad_scale, right[..., 1] / hess_scale
    valid = ((left[..., 2] >= min_samples_leaf) & (right[..., 2] >= min_samples_leaf)
             & (h_left >= min_child_hessian) & (h_right >= min_child_hessian))
    g_node = totals[0] / grad_scale
    parent = g_node * g_node / (totals[1] / hess_scale + l2)
    with np.errstate(divide="ignore", invalid="ignore"):  # empty sides (l2 = 0): masked below
        gain = g_left * g_left / (h_left + l2) + g_right * g_right / (h_right + l2)
        gain -= parent
    gain[~valid] = -np.inf
    best = int(np.argmax(gain))
    feature, split_bin = divmod(best, n_bins - 1)
    return float(gain.flat[best]), feature, split_bin, left[feature, split_bin].copy()


def grow_round(binned: np.ndarray, n_bins: int, gradients: np.ndarray, hessians: np.ndarray,
               totals: np.ndarray, grad_scale: np.ndarray, hess_scale: np.ndarray,
               params: GrowthParams, reduce_sum: Callable[[np.ndarray], np.ndarray]):
    """Grow one tree per row of ``gradients`` (T, n) together; ``reduce_sum`` sums each step's
    histogram buffer over all ranks in place (collective when it is).

    ``totals`` (T, 3) are the reduced ``(G, H, count)`` of each root. Returns the trees as node
    arrays (see :meth:`_Tree.arrays`, thresholds as bins) and the leaf of every row in every
    tree, ``(T, n)``. A leaf may split while its depth is below ``max_depth``, it has at least
    ``2 * min_samples_leaf`` rows and (best-first) its tree has fewer than ``max_leaf_nodes``
    leaves; all of that, and which leaf splits, is read from reduced values, so every rank runs
    the same steps and reductions.
    """
    n_trees, n_rows = gradients.shape
    trees = [_Tree(float(grad_scale[t]), float(hess_scale[t]), stats=[tuple(totals[t])],
                   span=[(0, n_rows)]) for t in range(n_trees)]
    compiled = tree_kernels() or _REFERENCES
    order = np.tile(np.arange(n_rows), (n_trees, 1))
    scratch = np.empty(n_rows, dtype=order.dtype)
    waiting = [[] for _ in range(n_trees)]
    jobs = [_Job(t, 0) for t in range(n_trees) if _may_split(trees[t], 0, params)]
    split_any = True
    while split_any:  # a step: histograms of the last splits' children, then the next splits
        if jobs:
            hist = _histograms(binned, n_bins, jobs, trees, order, gradients, hessians,
                               compiled)
            reduce_sum(hist)
            for leaf in _evaluate(jobs, hist, trees, params, compiled.best_split):
                waiting[leaf.tree].append(leaf)
        jobs, split_any = [], False
        for t, tree in enumerate(trees):
            for leaf in _chosen(waiting[t], tree, params):
                lo, hi = tree.span[leaf.node]
                n_left = compiled.partition_rows(binned, order[t, lo:hi], leaf.feature,
                                                 leaf.split_bin, scratch)
                children = tree.split(leaf.node, leaf.feature, leaf.split_bin, leaf.left_stats,
                                      n_left)
                jobs += _children_job(t, tree, children, leaf.hist, params)
                split_any = True
    node_of = np.empty((n_trees, n_rows), dtype=np.intp)
    for t, tree in enumerate(trees):
        for node in np.flatnonzero(np.array(tree.feature) < 0):
            lo, hi = tree.span[node]
            node_of[t, order[t, lo:hi]] = node
    return [tree.arrays(params) for tree in trees], node_of


def _histograms(binned, n_bins: int, jobs: list[_Job], trees: list[_Tree], order, gradients,
                hessians, kernels) -> np.ndarray:
    """This rank's histograms of a step's jobs, ``(jobs, d, B, 3)``: a root's from every row,
    the sparse nodes of a tree (below ``1 / SPARSE`` of the rows; two or more) in one pass over
    their rows, any other node on its own."""
    n_rows = order.shape[1]
    hist = np.zeros((len(jobs), binned.shape[1], n_bins, 3))
    sparse: dict[int, list[int]] = {}
    for slot, job in enumerate(jobs):
        lo, hi = trees[job.tree].span[job.built]
        if job.built == 0:  # the root: every row, in order
            kernels.root_histogram(binned, gradients[job.tree], hessians[job.tree], hist[slot])
        elif (hi - lo) * SPARSE < n_rows:
            sparse.setdefault(job.tree, []).append(slot)
        else:
            kernels.node_histogram(binned, order[job.tree, lo:hi], gradients[job.tree],
                                   hessians[job.tree], hist[slot])
    for t, slots in sparse.items():
        spans = [trees[t].span[jobs[slot].built] for slot in slots]
        if len(slots) == 1:
            kernels.node_histogram(binned, order[t, spans[0][0]:spans[0][1]], gradients[t],
                                   hessians[t], hist[slots[0]])
            continue
        owner = np.full(n_rows, -1, dtype=np.int32)  # the slot of each row's node, or -1
        for slot, (lo, hi) in zip(slots, spans, strict=True):
            owner[order[t, lo:hi]] = slot
        rows = np.flatnonzero(owner >= 0)
        kernels.union_histograms(binned, rows, owner[rows], gradients[t], hessians[t], hist)
    return hist


def node_histogram(binned, rows, gradients, hessians, out) -> None:
    """Add the ``(gradient, hessian, 1)`` of ``rows`` to ``out[feature, bin]`` (d, B, 3): three
    ``np.bincount`` per feature (the numpy reference of the compiled kernel)."""
    n_bins = out.shape[1]
    for feature in range(binned.shape[1]):
        bins = binned[rows, feature]
        for q, weights in enumerate((gradients[rows], hessians[rows], None)):
            out[feature, :, q] += np.bincount(bins, weights, n_bins)


def root_histogram(binned, gradients, hessians, out) -> None:
    """:func:`node_histogram` of every row (the numpy reference of the compiled kernel)."""
    node_histogram(binned, np.arange(len(binned)), gradients, hessians, out)


def union_histograms(binned, rows, slots, gradients, hessians, out) -> None:
    """:func:`node_histogram` of each slot's rows into ``out[slot]`` (the numpy reference of
    the compiled kernel)."""
    for slot in np.unique(slots):
        node_histogram(binned, rows[slots == slot], gradients, hessians, out[slot])


def partition_rows(binned, rows, feature: int, split_bin: int, scratch) -> int:
    """Reorder ``rows`` in place, those with ``bin <= split_bin`` on ``feature`` first, both
    sides in their order (``scratch``: room for the right side); returns how many went left
    (the numpy reference of the compiled kernel)."""
    goes_left = binned[rows, feature] <= split_bin
    n_left = int(goes_left.sum())
    n_right = len(rows) - n_left
    scratch[:n_right] = rows[~goes_left]
    rows[:n_left] = rows[goes_left]
    rows[n_left:] = scratch[:n_right]
    return n_left


#: The numpy references, in the shape of :mod:`mpiml.kernels.histograms`.
_REFERENCES = SimpleNamespace(node_histogram=node_histogram, root_histogram=root_histogram,
                              union_histograms=union_histograms, partition_rows=partition_rows,
                              best_split=best_split)


def _may_split(tree: _Tree, node: int, params: GrowthParams) -> bool:
    """Whether a new leaf is worth a histogram: below the depth limit, enough rows for two
    children, and (best-first) room for another leaf in its tree."""
    return ((params.max_depth is None or tree.depth[node] < params.max_depth)
            and tree.stats[node][2] >= 2 * params.min_samples_leaf
            and (params.max_leaf_nodes is None or tree.n_leaves < params.max_leaf_nodes))


def _children_job(t: int, tree: _Tree, children, parent_hist, params) -> list[_Job]:
    """The histogram job of a split's children: none if neither may split, else build the one
    with fewer rows (all ranks' rows; ties: the left) and derive the other."""
    may = [_may_split(tree, child, params) for child in children]
    if not any(may):
        return []
    left_count, right_count = (tree.stats[child][2] for child in children)
    small = 0 if left_count <= right_count else 1
    return [_Job(t, children[small], may[small], children[1 - small], may[1 - small],
                 parent_hist)]


def _evaluate(jobs: list[_Job], hist: np.ndarray, trees: list[_Tree], params: GrowthParams,
              split_search) -> list[_Leaf]:
    """Best splits (``split_search``: the kernel or :func:`best_split`) of the step's leaves
    that may split, from their reduced histograms; the leaves with a positive gain, in node
    order."""
    nodes = []
    for slot, job in enumerate(jobs):
        if job.built_may_split:
            nodes.append((job.tree, job.built, hist[slot]))
        if job.derived_may_split:
            # the parent's histogram is needed no more: the sibling's takes its memory
            nodes.append((job.tree, job.derived,
                          np.subtract(job.parent_hist, hist[slot], out=job.parent_hist)))
    leaves = []
    for t, node, node_hist in sorted(nodes, key=lambda entry: entry[:2]):
        tree = trees[t]
        gain, feature, split_bin, left = split_search(
            node_hist, np.array(tree.stats[node]), tree.grad_scale, tree.hess_scale,
            params.min_samples_leaf, params.l2, MIN_CHILD_HESSIAN)
        if gain > 0.0:
            leaves.append(_Leaf(t, node, node_hist, float(gain), int(feature), int(split_bin),
                                tuple(left)))
    return leaves


def _chosen(waiting: list[_Leaf], tree: _Tree, params: GrowthParams) -> list[_Leaf]:
    """The leaves of one tree to split this step, removed from ``waiting``: all of them
    (depth-wise), or the one of largest gain (best-first; ties: the lowest node) while the tree
    has room for another leaf."""
    if params.max_leaf_nodes is None:
        chosen, waiting[:] = list(waiting), []
        return chosen
    if not waiting or tree.n_leaves >= params.max_leaf_nodes:
        return []
    best = max(waiting, key=lambda leaf: (leaf.gain, -leaf.node))
    waiting.remove(best)
    return [best]
