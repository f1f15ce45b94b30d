"""Gradient-boosted regression trees as plain arrays (no MPI): binning, the losses' gradients
and hessians, the model dict, and prediction.

The distributed fit (bin edges agreed by all ranks, boosting rounds, histograms reduced per
level) is :mod:`mpiml.fit.boosting`; tree growth from histograms is :mod:`.tree_growth`.

The model is a dict of plain numpy arrays (saves to HDF5 without pickle)::

    task            bytes scalar: b"binary" | b"regression" | b"multiclass"
    baseline        (n_outputs,) raw prediction before any tree
    bin_edges       edges of all features, concatenated; edge_offsets (d+1,) delimits them
    tree_offsets    (n_trees+1,) node range of each tree in the node arrays
    tree_output     (n_trees,) output column each tree adds to (its class for multiclass)
    feature         (n_nodes,) int32 split feature, -1 for a leaf
    threshold_bin   (n_nodes,) uint8: rows with bin <= threshold_bin go left
    threshold       (n_nodes,) float64: the same split on raw values, x <= threshold
    left, right     (n_nodes,) int32 child index within the tree, -1 for a leaf
    value           (n_nodes,) float64 leaf value (learning rate included), 0 inside
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, log_softmax, softmax

from ..kernels import binning_kernel
from .base import check_positive_int, class_indices, weighted_sum

TASKS = ("binary", "regression", "multiclass")
#: Rows densified or binned at a time.
TILE_ROWS = 1 << 14
NODE_KEYS = ("feature", "threshold_bin", "threshold", "left", "right", "value")


# -- binning ------------------------------------------------------------------------------------


def dense_rows(X, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo..hi`` of dense or CSR ``X`` as a dense float64 array."""
    rows = X[lo:hi]
    return np.asarray(rows.toarray() if sp.issparse(rows) else rows, dtype=np.float64)


def feature_edges(column: np.ndarray, max_bins: int,
                  sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Bin edges of one feature from sample values (scikit-learn's ``_find_binning_thresholds``).

    At most ``max_bins`` distinct values: the midpoints between consecutive ones. More: the
    ``max_bins - 1`` inner percentiles (method ``averaged_inverted_cdf``; weighted by
    ``sample_weight`` when given), duplicates removed. Values of weight 0 take no part.
    """
    if sample_weight is not None:
        column, sample_weight = column[sample_weight != 0], sample_weight[sample_weight != 0]
        order = np.argsort(column, kind="stable")
        column, sample_weight = column[order], sample_weight[order]
    else:
        column = np.sort(column)
    distinct = column[np.concatenate([[True], column[1:] != column[:-1]])]
    if len(distinct) <= max_bins:
        return (distinct[:-1] + distinct[1:]) * 0.5
    percentiles = np.linspace(0, 100, num=max_bins + 1)[1:-1]
    if sample_weight is None:
        return np.unique(np.percentile(column, percentiles, method="averaged_inverted_cdf"))
    return np.unique(weighted_percentiles(column, sample_weight, percentiles))


def weighted_percentiles(values: np.ndarray, weights: np.ndarray,
                         percentiles: np.ndarray) -> np.ndarray:
    """Percentiles of sorted ``values`` with positive ``weights``, method
    ``averaged_inverted_cdf``: the first value whose cumulative weight reaches the percentile's
    share of the total, or the mean of it and the next value when it reaches it exactly."""
    cumulative = np.cumsum(weights)
    targets = percentiles / 100 * cumulative[-1]
    last = len(values) - 1
    at = np.clip(np.searchsorted(cumulative, targets), 0, last)
    beyond = cumulative[at] - targets > np.finfo(np.float64).eps
    return np.where(beyond, values[at], (values[at] + values[np.minimum(at + 1, last)]) / 2)


def bin_features(X, edges: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """uint8 bins of X (dense or CSR): ``bin = #edges < x``, by the compiled kernel
    (:func:`mpiml.kernels.binning.bin_rows`) or its reference :func:`bin_rows`; float arrays in
    one call, anything else a densified tile of rows at a time.

    Column-major, so that each feature's bins are contiguous for the histograms.
    """
    n, d = X.shape
    binned = np.empty((n, d), dtype=np.uint8, order="F")
    kernel = binning_kernel() or bin_rows
    if not sp.issparse(X) and X.dtype in (np.float32, np.float64):
        kernel(X, edges, offsets, binned, 0)
        return binned
    for lo in range(0, n, TILE_ROWS):
        kernel(dense_rows(X, lo, min(n, lo + TILE_ROWS)), edges, offsets, binned, lo)
    return binned


def bin_rows(X, edges: np.ndarray, offsets: np.ndarray, out: np.ndarray, start: int) -> None:
    """``out[start + i, j] = #(edges of feature j) < X[i, j]``, one ``searchsorted`` per feature
    (the numpy reference of :func:`mpiml.kernels.binning.bin_rows`)."""
    for j in range(X.shape[1]):
        out[start : start + len(X), j] = np.searchsorted(edges[offsets[j] : offsets[j + 1]],
                                                         X[:, j], side="left")


# -- losses -------------------------------------------------------------------------------------


def encode_targets(y, task: str, n_classes: int) -> np.ndarray:
    """Labels as float64 (binary 0/1, regression values) or int class indices (multiclass)."""
    y = np.asarray(y)
    if task == "regression":
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise ValueError(f"regression targets must be finite; got "
                             f"{y[~np.isfinite(y)][0]!r}")
        return y
    return class_indices(y, n_classes if task == "multiclass" else 2)


def target_columns(targets: np.ndarray, task: str, n_outputs: int) -> np.ndarray:
    """(n_outputs, n) values whose means give the baseline: y, or one-hot classes."""
    if task == "multiclass":
        return (targets[None, :] == np.arange(n_outputs)[:, None]).astype(np.float64)
    return targets[None, :].astype(np.float64)


def baseline_scores(means: np.ndarray, task: str) -> np.ndarray:
    """Raw prediction of the constant model (scikit-learn's ``fit_intercept_only``): the mean
    (regression), the log-odds of the positive rate (binary), or the centred log class
    frequencies (multiclass); rates clipped to [eps, 1 - eps]."""
    if task == "regression":
        return means.copy()
    eps = np.finfo(np.float64).eps
    rates = np.clip(means, eps, 1.0 - eps)
    if task == "binary":
        return np.log(rates / (1.0 - rates))
    log_rates = np.log(rates)
    return log_rates - log_rates.mean()


def gradients(raw: np.ndarray, targets: np.ndarray, task: str,
              sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Gradients and hessians of the loss at the raw predictions, as ``(2T, n)``: T gradient
    rows then T hessian rows, each times the row's ``sample_weight`` when given.

    * binary, logistic loss: ``p = expit(f)``, ``g = p - y``, ``h = p (1 - p)``;
    * regression, ``0.5 (f - y)^2``: ``g = f - y``, ``h = 1``;
    * multiclass, softmax cross-entropy: ``p = softmax(f)``, ``g_k = p_k - [y = k]``,
      ``h_k = p_k (1 - p_k)`` (the diagonal of the Hessian, as scikit-learn).
    """
    if task == "regression":
        both = np.stack([raw[:, 0] - targets, np.ones(len(targets))])
    elif task == "binary":
        probability = expit(raw[:, 0])
        both = np.stack([probability - targets, probability * (1.0 - probability)])
    else:
        probability = softmax(raw, axis=1).T
        gradient = probability.copy()
        gradient[targets, np.arange(len(targets))] -= 1.0
        both = np.concatenate([gradient, probability * (1.0 - probability)])
    if sample_weight is not None:
        both *= sample_weight
    return both


def loss_sum(raw: np.ndarray, targets: np.ndarray, task: str,
             sample_weight: np.ndarray | None = None) -> float:
    """Sum over the rows of the (weighted) loss at the raw predictions."""
    if task == "regression":
        return 0.5 * weighted_sum(np.square(raw[:, 0] - targets), sample_weight)
    if task == "binary":
        losses = np.logaddexp(0.0, raw[:, 0]) - targets * raw[:, 0]
    else:
        losses = -log_softmax(raw, axis=1)[np.arange(len(targets)), targets]
    return weighted_sum(losses, sample_weight)


# -- the model as arrays ------------------------------------------------------------------------


def task_of(model: dict) -> str:
    """The task stored in a model dict (bytes as saved, or str)."""
    task = model["task"]
    task = task.item() if isinstance(task, np.ndarray) else task
    return task.decode() if isinstance(task, bytes) else str(task)


def model_arrays(task: str, baseline, edges, edge_offsets, trees: list) -> dict:
    """Flat model dict (see the module docstring) from ``[(output, node arrays), ...]``."""
    sizes = [len(tree["feature"]) for _, tree in trees]
    model = {"task": np.array(task.encode()), "baseline": baseline.copy(),
             "bin_edges": edges.copy(), "edge_offsets": edge_offsets.copy(),
             "tree_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
             "tree_output": np.array([output for output, _ in trees], dtype=np.int32)}
    empty = {"feature": np.int32, "threshold_bin": np.uint8, "threshold": np.float64,
             "left": np.int32, "right": np.int32, "value": np.float64}
    for key in NODE_KEYS:
        model[key] = (np.concatenate([tree[key] for _, tree in trees]) if trees
                      else np.empty(0, dtype=empty[key]))
    return model


def trees_of(model: dict) -> list:
    """``[(output, node arrays), ...]`` of a model dict, in training order."""
    offsets = np.asarray(model["tree_offsets"])
    return [(int(model["tree_output"][i]),
             {key: np.asarray(model[key][offsets[i] : offsets[i + 1]]) for key in NODE_KEYS})
            for i in range(len(offsets) - 1)]


def leaves(tree: dict, binned: np.ndarray) -> np.ndarray:
    """Leaf of every row: all rows descend one level per pass (no loop over rows)."""
    node = np.zeros(len(binned), dtype=np.intp)
    feature, threshold_bin = tree["feature"], tree["threshold_bin"]
    while True:
        rows = np.flatnonzero(feature[node] >= 0)
        if rows.size == 0:
            return node
        nodes = node[rows]
        goes_left = binned[rows, feature[nodes]] <= threshold_bin[nodes]
        node[rows] = np.where(goes_left, tree["left"][nodes], tree["right"][nodes])


def add_trees(raw: np.ndarray, trees: list, binned: np.ndarray) -> None:
    """``raw[:, output] += leaf value`` for every tree in order (the order training used, so a
    resumed fit rebuilds the same bits)."""
    for output, tree in trees:
        raw[:, output] += tree["value"][leaves(tree, binned)]


def predict_raw(model: dict, X) -> np.ndarray:
    """Raw scores ``(n, n_outputs)``: baseline plus the leaf values of every tree."""
    binned = bin_features(X, np.asarray(model["bin_edges"]), np.asarray(model["edge_offsets"]))
    raw = np.tile(np.asarray(model["baseline"], dtype=np.float64), (X.shape[0], 1))
    add_trees(raw, trees_of(model), binned)
    return raw


def predict(model: dict, X) -> np.ndarray:
    """Values (regression) or class indices 0..K-1 (int64)."""
    raw = predict_raw(model, X)
    task = task_of(model)
    if task == "regression":
        return raw[:, 0]
    if task == "binary":
        return (raw[:, 0] > 0.0).astype(np.int64)
    return np.argmax(raw, axis=1).astype(np.int64)


def predict_proba(model: dict, X) -> np.ndarray:
    """Class probabilities ``(n, K)`` (K = 2 for binary)."""
    task = task_of(model)
    if task == "regression":
        raise ValueError("predict_proba needs a classification model; this one is regression")
    raw = predict_raw(model, X)
    if task == "binary":
        positive = expit(raw[:, 0])
        return np.column_stack([1.0 - positive, positive])
    return softmax(raw, axis=1)


# -- argument checks ----------------------------------------------------------------------------


def check_arguments(X, task, n_classes, n_estimators, learning_rate, max_depth,
                    max_leaf_nodes, min_samples_leaf, l2, max_bins, bin_sample_rows) -> None:
    """Raise a ValueError naming the first boosting argument out of its range."""
    if not (sp.issparse(X) or isinstance(X, np.ndarray)) or X.ndim != 2:
        raise ValueError(f"X must be a 2-D numpy array or a CSR matrix; got {type(X).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    for name, value in (("n_estimators", n_estimators), ("min_samples_leaf", min_samples_leaf),
                        ("max_bins", max_bins), ("n_classes", n_classes),
                        ("bin_sample_rows", bin_sample_rows)):
        check_positive_int(name, value)
    if max_depth is not None:
        check_positive_int("max_depth", max_depth)
    if max_leaf_nodes is not None and check_positive_int("max_leaf_nodes", max_leaf_nodes) < 2:
        raise ValueError(f"max_leaf_nodes must be at least 2 (or None: depth-wise growth); "
                         f"got {max_leaf_nodes}")
    if not 2 <= max_bins <= 255:
        raise ValueError(f"max_bins must be in 2..255 (bins are uint8); got {max_bins}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2; got {n_classes}")
    if task == "binary" and n_classes != 2:
        raise ValueError(f"task 'binary' needs n_classes=2; got {n_classes} (use 'multiclass')")
    for name, value, low_open in (("learning_rate", learning_rate, True), ("l2", l2, False)):
        ok = isinstance(value, numbers.Real) and math.isfinite(value)
        if not ok or value < 0 or (low_open and value == 0):
            raise ValueError(f"{name} must be a finite number {'>' if low_open else '>='} 0; "
                             f"got {value!r}")


def check_local_data(X, y, task: str, n_classes: int) -> np.ndarray:
    """This rank's targets; raises on non-finite features or bad labels."""
    if np.shape(y) != (X.shape[0],):
        raise ValueError(f"y must be 1-D with {X.shape[0]} entries (rows of X); "
                         f"got shape {np.shape(y)}")
    values = X.data if sp.issparse(X) else X
    # min and max propagate NaN and show an infinity: no boolean copy of X (10x faster)
    if values.size and not (np.isfinite(values.min()) and np.isfinite(values.max())):
        raise ValueError("X holds NaN or infinite values (missing values are not supported)")
    return encode_targets(y, task, n_classes)
