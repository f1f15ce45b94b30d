"""Distributed histogram gradient-boosted trees (binary, multiclass, regression).

Each rank holds its own rows. The fit:

1. **Bin edges**, identical on every rank and independent of the rank count: a sample of at
   most ``bin_sample_rows`` GLOBAL row indices drawn from ``seed`` alone (all rows when there
   are fewer), whose values are allgathered in global row order; every rank then computes the
   same quantile edges (scikit-learn's rule) from the same sorted values.
2. **Binning** of this rank's rows to uint8 (``bin = #edges < x``, so ``x <= edge[b]`` is
   ``bin <= b``); CSR rows are densified block by block.
3. **Boosting rounds**: gradients and hessians of the loss at the current raw predictions,
   rounded to integers by :func:`quantize` so that histogram sums are exact, then the trees of
   the round grown level by level with one allreduce of histograms per level
   (:mod:`mpiml.hgbt_tree`). One tree per round (binary: logistic loss; regression: squared
   error) or one per class (multiclass: softmax).

Because every reduced quantity is an exact integer sum, the trees are bit-identical at any rank
count, and a run resumed from an ``on_tree`` state equals the uninterrupted run.

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
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, log_softmax, softmax

from . import collectives
from .hgbt_tree import GrowthParams, grow_round
from .kmeans import RowLayout
from .models.base import _check_positive_int, class_indices

TASKS = ("binary", "regression", "multiclass")
#: Rows sampled to place the bin edges (scikit-learn's ``subsample`` for binning).
BIN_SAMPLE_ROWS = 200_000
#: Rows densified or binned at a time.
_BLOCK_ROWS = 1 << 14
_NODE_KEYS = ("feature", "threshold_bin", "threshold", "left", "right", "value")


@dataclass
class HGBTResult:
    """What :func:`fit_hgbt` produced, identical on every rank: the model arrays, the number of
    boosting rounds in it, and the mean training loss of the final model."""

    model: dict
    n_rounds: int
    train_loss: float


# -- exact sums ---------------------------------------------------------------------------------


def quantize(values: np.ndarray, n_total: int, comm, allreduce_options: dict):
    """Round each row of ``values`` (m, n) to integers: ``q = rint(v * s)``. Collective.

    With the power of two ``s = 2^(52 - ceil(log2 N) - e)``, where ``max|v| < 2^e`` (max over
    all ranks, one MAX allreduce), every ``|q| <= 2^52 / N``, so any sum of at most N of them is
    an integer below 2^53 and float64 addition of them is exact in any order; dividing by ``s``
    is exact too. The rounding error is at most ``max|v| * N / 2^52`` relative to a single value
    (about 2e-10 for a million rows). A row whose largest magnitude is below 2^-960 (no finite
    scale fits it) counts as zero. Returns ``(q, s)``.
    """
    largest = np.abs(values).max(axis=1, initial=0.0)
    collectives.allreduce(largest, comm, op="max", **allreduce_options)
    bits = 52 - math.ceil(math.log2(max(n_total, 2)))
    usable = largest > 2.0**-960
    _, exponent = np.frexp(np.where(usable, largest, 1.0))
    scale = np.where(usable, np.ldexp(1.0, bits - exponent), 1.0)
    return np.where(usable[:, None], np.rint(values * scale[:, None]), 0.0), scale


def _exact_column_sums(values: np.ndarray, n_total: int, comm, allreduce_options) -> np.ndarray:
    """Sums over all rows of every row of ``values`` (m, n), the same bits at any rank count."""
    quantized, scale = quantize(values, n_total, comm, allreduce_options)
    sums = quantized.sum(axis=1)
    collectives.allreduce(sums, comm, **allreduce_options)
    return sums / scale


# -- binning ------------------------------------------------------------------------------------


def _dense_block(X, lo: int, hi: int) -> np.ndarray:
    block = X[lo:hi]
    return np.asarray(block.toarray() if sp.issparse(block) else block, dtype=np.float64)


def feature_edges(column: np.ndarray, max_bins: int) -> np.ndarray:
    """Bin edges of one feature from sample values (scikit-learn's ``_find_binning_thresholds``).

    At most ``max_bins`` distinct values: the midpoints between consecutive ones. More: the
    ``max_bins - 1`` inner percentiles (method ``averaged_inverted_cdf``), duplicates removed.
    """
    column = np.sort(column)
    distinct = np.unique(column)
    if len(distinct) <= max_bins:
        return (distinct[:-1] + distinct[1:]) * 0.5
    percentiles = np.linspace(0, 100, num=max_bins + 1)[1:-1]
    return np.unique(np.percentile(column, percentiles, method="averaged_inverted_cdf"))


def bin_edges(X, layout: RowLayout, max_bins: int, seed: int, comm,
              sample_rows: int = BIN_SAMPLE_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Edges of every feature, identical on all ranks: ``(edges, offsets)``. Collective.

    The sampled global rows (at most ``sample_rows``) depend only on ``(n_total, seed)``; each
    rank contributes the sampled rows it owns and the allgather returns them in rank order =
    global row order.
    """
    n_total = layout.n_total
    if n_total <= sample_rows:
        sample = np.arange(n_total)
    else:
        sample = np.sort(np.random.default_rng(seed).choice(n_total, sample_rows,
                                                           replace=False))
    lo, hi = np.searchsorted(sample, (layout.start, layout.start + layout.n_local))
    mine = sample[lo:hi] - layout.start
    rows = X[mine]
    values = np.asarray(rows.toarray() if sp.issparse(rows) else rows, dtype=np.float64)
    gathered = np.concatenate(collectives.allgather_object(values, comm))
    per_feature = [feature_edges(gathered[:, j], max_bins) for j in range(X.shape[1])]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in per_feature])]).astype(np.int64)
    return np.concatenate(per_feature).astype(np.float64), offsets


def bin_features(X, edges: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """uint8 bins of X (dense or CSR): ``bin = #edges < x``, block by block of rows.

    Column-major, so that each feature's bins are contiguous for the histogram bincounts.
    """
    n, d = X.shape
    binned = np.empty((n, d), dtype=np.uint8, order="F")
    for lo in range(0, n, _BLOCK_ROWS):
        block = _dense_block(X, lo, min(n, lo + _BLOCK_ROWS))
        for j in range(d):
            binned[lo : lo + len(block), j] = np.searchsorted(
                edges[offsets[j] : offsets[j + 1]], block[:, j], side="left")
    return binned


# -- losses -------------------------------------------------------------------------------------


def _targets(y, task: str, n_classes: int) -> np.ndarray:
    """Labels as float64 (binary 0/1, regression values) or int class indices (multiclass)."""
    y = np.asarray(y)
    if task == "regression":
        y = y.astype(np.float64)
        if not np.isfinite(y).all():
            raise ValueError(f"regression targets must be finite; got "
                             f"{y[~np.isfinite(y)][0]!r}")
        return y
    return class_indices(y, n_classes if task == "multiclass" else 2)


def _target_columns(targets: np.ndarray, task: str, n_outputs: int) -> np.ndarray:
    """(n_outputs, n) values whose means give the baseline: y, or one-hot classes."""
    if task == "multiclass":
        return (targets[None, :] == np.arange(n_outputs)[:, None]).astype(np.float64)
    return targets[None, :].astype(np.float64)


def _baseline(means: np.ndarray, task: str) -> np.ndarray:
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


def _gradients(raw: np.ndarray, targets: np.ndarray, task: str) -> np.ndarray:
    """Gradients and hessians of the loss at the raw predictions, as ``(2T, n)``: T gradient
    rows then T hessian rows.

    * binary, logistic loss: ``p = expit(f)``, ``g = p - y``, ``h = p (1 - p)``;
    * regression, ``0.5 (f - y)^2``: ``g = f - y``, ``h = 1``;
    * multiclass, softmax cross-entropy: ``p = softmax(f)``, ``g_k = p_k - [y = k]``,
      ``h_k = p_k (1 - p_k)`` (the diagonal of the Hessian, as scikit-learn).
    """
    if task == "regression":
        return np.stack([raw[:, 0] - targets, np.ones(len(targets))])
    if task == "binary":
        probability = expit(raw[:, 0])
        return np.stack([probability - targets, probability * (1.0 - probability)])
    probability = softmax(raw, axis=1).T
    gradient = probability.copy()
    gradient[targets, np.arange(len(targets))] -= 1.0
    return np.concatenate([gradient, probability * (1.0 - probability)])


def _loss_sum(raw: np.ndarray, targets: np.ndarray, task: str) -> float:
    if task == "regression":
        return 0.5 * float(np.square(raw[:, 0] - targets).sum())
    if task == "binary":
        return float((np.logaddexp(0.0, raw[:, 0]) - targets * raw[:, 0]).sum())
    return float(-log_softmax(raw, axis=1)[np.arange(len(targets)), targets].sum())


# -- the model as arrays ------------------------------------------------------------------------


def task_of(model: dict) -> str:
    """The task stored in a model dict (bytes as saved, or str)."""
    task = model["task"]
    task = task.item() if isinstance(task, np.ndarray) else task
    return task.decode() if isinstance(task, bytes) else str(task)


def _model_arrays(task: str, baseline, edges, edge_offsets, trees: list) -> dict:
    """Flat model dict (see the module docstring) from ``[(output, node arrays), ...]``."""
    sizes = [len(tree["feature"]) for _, tree in trees]
    model = {"task": np.array(task.encode()), "baseline": baseline.copy(),
             "bin_edges": edges.copy(), "edge_offsets": edge_offsets.copy(),
             "tree_offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
             "tree_output": np.array([output for output, _ in trees], dtype=np.int32)}
    empty = {"feature": np.int32, "threshold_bin": np.uint8, "threshold": np.float64,
             "left": np.int32, "right": np.int32, "value": np.float64}
    for key in _NODE_KEYS:
        model[key] = (np.concatenate([tree[key] for _, tree in trees]) if trees
                      else np.empty(0, dtype=empty[key]))
    return model


def _trees_of(model: dict) -> list:
    """``[(output, node arrays), ...]`` of a model dict, in training order."""
    offsets = np.asarray(model["tree_offsets"])
    return [(int(model["tree_output"][i]),
             {key: np.asarray(model[key][offsets[i] : offsets[i + 1]]) for key in _NODE_KEYS})
            for i in range(len(offsets) - 1)]


def _leaves(tree: dict, binned: np.ndarray) -> np.ndarray:
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


def _add_trees(raw: np.ndarray, trees: list, binned: np.ndarray) -> None:
    """``raw[:, output] += leaf value`` for every tree in order (the order training used, so a
    resumed fit rebuilds the same bits)."""
    for output, tree in trees:
        raw[:, output] += tree["value"][_leaves(tree, binned)]


def predict_raw(model: dict, X) -> np.ndarray:
    """Raw scores ``(n, n_outputs)``: baseline plus the leaf values of every tree."""
    binned = bin_features(X, np.asarray(model["bin_edges"]), np.asarray(model["edge_offsets"]))
    raw = np.tile(np.asarray(model["baseline"], dtype=np.float64), (X.shape[0], 1))
    _add_trees(raw, _trees_of(model), binned)
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


# -- the fit ------------------------------------------------------------------------------------


def _check_arguments(X, task, n_classes, n_estimators, learning_rate, max_depth,
                     min_samples_leaf, l2, max_bins, bin_sample_rows) -> None:
    if not (sp.issparse(X) or isinstance(X, np.ndarray)) or X.ndim != 2:
        raise ValueError(f"X must be a 2-D numpy array or a CSR matrix; got {type(X).__name__}")
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}; got {task!r}")
    for name, value in (("n_estimators", n_estimators), ("max_depth", max_depth),
                        ("min_samples_leaf", min_samples_leaf), ("max_bins", max_bins),
                        ("n_classes", n_classes), ("bin_sample_rows", bin_sample_rows)):
        _check_positive_int(name, value)
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


def _check_local_data(X, y, task: str, n_classes: int) -> np.ndarray:
    """This rank's targets; raises on non-finite features or bad labels."""
    if np.shape(y) != (X.shape[0],):
        raise ValueError(f"y must be 1-D with {X.shape[0]} entries (rows of X); "
                         f"got shape {np.shape(y)}")
    values = X.data if sp.issparse(X) else X
    if not np.isfinite(values).all():
        raise ValueError("X holds NaN or infinite values (missing values are not supported)")
    return _targets(y, task, n_classes)


def fit_hgbt(X, y, comm=None, *, task: str = "binary", n_classes: int = 2,
             n_estimators: int = 100, learning_rate: float = 0.1, max_depth: int = 6,
             min_samples_leaf: int = 20, l2: float = 1.0, max_bins: int = 255,
             row_offset: int | None = None, n_total: int | None = None, seed: int = 0,
             bin_sample_rows: int = BIN_SAMPLE_ROWS, start: dict | None = None, on_tree=None,
             algorithm: str = "auto",
             ring_threshold: int = collectives.DEFAULT_RING_THRESHOLD) -> HGBTResult:
    """Boost ``n_estimators`` rounds of depth-wise trees on the rows of all ranks. Collective.

    ``X`` (dense or CSR, finite) and ``y`` are this rank's rows, in rank order (``row_offset``
    and ``n_total`` are checked when given). ``y``: 0/1 (binary), 0..K-1 (multiclass with
    ``n_classes = K``), values (regression). Trees stop at ``max_depth`` or where no split
    leaves ``min_samples_leaf`` rows on both sides with a positive gain; leaf values are
    ``-learning_rate * G / (H + l2)``. A single decision tree is ``n_estimators=1,
    learning_rate=1``. ``seed`` picks the rows that place the bin edges when there are more
    than ``BIN_SAMPLE_ROWS``.

    ``on_tree(state)`` is called after every round (one tree, or K for multiclass) with the
    complete resumable state: the model dict so far. ``start=state`` resumes from it (bin
    edges and baseline included) and equals the uninterrupted fit bit for bit.
    """
    _check_arguments(X, task, n_classes, n_estimators, learning_rate, max_depth,
                     min_samples_leaf, l2, max_bins, bin_sample_rows)
    comm = collectives.world(comm)
    layout = RowLayout(X, comm, row_offset, n_total, "fit_hgbt")
    targets, error = None, None
    try:
        targets = _check_local_data(X, y, task, n_classes)
    except ValueError as exc:
        error = exc
    collectives.raise_together(error, comm)
    options = dict(algorithm=algorithm, ring_threshold=ring_threshold, validate=False)
    n_outputs = n_classes if task == "multiclass" else 1
    if start is None:
        edges, edge_offsets = bin_edges(X, layout, max_bins, seed, comm, bin_sample_rows)
        means = _exact_column_sums(_target_columns(targets, task, n_outputs), layout.n_total,
                                   comm, options) / layout.n_total
        baseline, trees = _baseline(means, task), []
    else:
        edges, edge_offsets = np.asarray(start["bin_edges"]), np.asarray(start["edge_offsets"])
        baseline, trees = np.asarray(start["baseline"], dtype=np.float64), _trees_of(start)
        if task_of(start) != task or baseline.shape != (n_outputs,):
            raise ValueError(f"start is a {task_of(start)} model with {baseline.size} outputs; "
                             f"this fit is {task} with {n_outputs}")
    binned = bin_features(X, edges, edge_offsets)
    n_bins = max(2, int(np.diff(edge_offsets).max(initial=0)) + 1)
    raw = np.tile(baseline, (layout.n_local, 1))
    _add_trees(raw, trees, binned)
    params = GrowthParams(max_depth, min_samples_leaf, float(l2), float(learning_rate))
    for _round in range(len(trees) // n_outputs, n_estimators):
        quantized, scale = quantize(_gradients(raw, targets, task), layout.n_total, comm, options)
        sums = quantized.sum(axis=1)
        collectives.allreduce(sums, comm, **options)
        totals = np.column_stack([sums[:n_outputs], sums[n_outputs:],
                                  np.full(n_outputs, float(layout.n_total))])
        grown, leaves = grow_round(binned, n_bins, quantized[:n_outputs], quantized[n_outputs:],
                                   totals, scale[:n_outputs], scale[n_outputs:], params, comm,
                                   options)
        for output, tree in enumerate(grown):
            split = tree["feature"] >= 0
            tree["threshold"] = np.zeros(len(split))
            tree["threshold"][split] = edges[edge_offsets[tree["feature"][split]]
                                             + tree["threshold_bin"][split]]
            raw[:, output] += tree["value"][leaves[output]]
            trees.append((output, tree))
        if on_tree is not None:
            on_tree(_model_arrays(task, baseline, edges, edge_offsets, trees))
    loss = collectives.allreduce(np.array([_loss_sum(raw, targets, task)]), comm, **options)
    return HGBTResult(_model_arrays(task, baseline, edges, edge_offsets, trees),
                      len(trees) // n_outputs, float(loss[0]) / layout.n_total)
