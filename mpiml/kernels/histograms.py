"""Tree-growth kernels (numba): the gradient/hessian/count histogram of one node's rows, and
the stable partition of a node's rows between its children. Their numpy references live in
:mod:`mpiml.models.tree_growth`; the tests compare the two bit for bit (the gradients and
hessians are integers on the agreed grid, :func:`mpiml.comm.exact.quantize_rows`, so their
sums are exact in any order).

``binned`` is the (n, d) uint8 bins of a rank's rows, column-major; ``rows`` the local indices
of a node's rows (ascending, a slice of the tree's row order); histograms are float64
``(d, bins, 3)``: gradient, hessian and row count of each (feature, bin).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def node_histogram(binned, rows, gradients, hessians, out):
    """Add the rows' ``(gradient, hessian, 1)`` to ``out[feature, bin]``: the rows' gradients
    and hessians gathered once, then one pass over the rows per four features, reading their
    contiguous columns of bins (four independent histograms per row: 20% faster than one)."""
    n_rows = rows.shape[0]
    grad = np.empty(n_rows)
    hess = np.empty(n_rows)
    for i in range(n_rows):
        grad[i] = gradients[rows[i]]
        hess[i] = hessians[rows[i]]
    n_features = binned.shape[1]
    first = 0
    while first + 4 <= n_features:
        c0, c1 = binned[:, first], binned[:, first + 1]
        c2, c3 = binned[:, first + 2], binned[:, first + 3]
        h0, h1, h2, h3 = out[first], out[first + 1], out[first + 2], out[first + 3]
        for i in range(n_rows):
            row, g, h = rows[i], grad[i], hess[i]
            _add(h0, c0[row], g, h)
            _add(h1, c1[row], g, h)
            _add(h2, c2[row], g, h)
            _add(h3, c3[row], g, h)
        first += 4
    for feature in range(first, n_features):
        column, hist = binned[:, feature], out[feature]
        for i in range(n_rows):
            _add(hist, column[rows[i]], grad[i], hess[i])


@numba.njit(inline="always")
def _add(hist, b, g, h):
    hist[b, 0] += g
    hist[b, 1] += h
    hist[b, 2] += 1.0


@numba.njit(cache=True, nogil=True)
def partition_rows(binned, rows, feature, split_bin, scratch):
    """Reorder ``rows`` in place: those with ``bin <= split_bin`` on ``feature`` first, both
    sides keeping their order; returns how many went left. ``scratch``: room for the right."""
    column = binned[:, feature]
    n_left = 0
    n_right = 0
    for i in range(rows.shape[0]):
        row = rows[i]
        if column[row] <= split_bin:
            rows[n_left] = row
            n_left += 1
        else:
            scratch[n_right] = row
            n_right += 1
    rows[n_left:] = scratch[:n_right]
    return n_left


@numba.njit(cache=True, nogil=True, error_model="numpy")  # x / 0 is inf or nan, as in numpy
def best_split(hist, totals, grad_scale, hess_scale, min_samples_leaf, l2, min_child_hessian):
    """The split of largest gain of one node from its histogram ``(d, B, 3)`` and totals
    ``(3,)``: ``(gain, feature, bin, left totals (3,))``, one pass over the bins of each
    feature with running left sums; the same arithmetic, in the same order, as the reference
    :func:`mpiml.models.tree_growth.best_split` (no split: gain ``-inf``)."""
    n_features, n_bins, _ = hist.shape
    g_node = totals[0] / grad_scale
    parent = g_node * g_node / (totals[1] / hess_scale + l2)
    best_gain, best_feature, best_bin = -np.inf, 0, 0
    for feature in range(n_features):
        g_sum, h_sum, count = 0.0, 0.0, 0.0
        for b in range(n_bins - 1):
            g_sum += hist[feature, b, 0]
            h_sum += hist[feature, b, 1]
            count += hist[feature, b, 2]
            g_left, h_left = g_sum / grad_scale, h_sum / hess_scale
            g_right = (totals[0] - g_sum) / grad_scale
            h_right = (totals[1] - h_sum) / hess_scale
            if (count < min_samples_leaf or totals[2] - count < min_samples_leaf
                    or h_left < min_child_hessian or h_right < min_child_hessian):
                continue
            gain = g_left * g_left / (h_left + l2) + g_right * g_right / (h_right + l2)
            gain -= parent
            if gain > best_gain:
                best_gain, best_feature, best_bin = gain, feature, b
    left = np.zeros(3)
    for b in range(best_bin + 1):
        left += hist[best_feature, b]
    return best_gain, best_feature, best_bin, left
