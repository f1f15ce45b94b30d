"""Distributed histogram gradient-boosted trees (binary, multiclass, regression).

Each rank holds its own rows. The fit:

1. **Bin edges**, identical on every rank and independent of the rank count: a sample of at
   most ``bin_sample_rows`` GLOBAL row indices drawn from ``seed`` alone (all rows when there
   are fewer), whose values are allgathered in global row order; every rank then computes the
   same quantile edges (scikit-learn's rule) from the same sorted values.
2. **Binning** of this rank's rows to uint8 (:func:`mpiml.models.trees.bin_features`).
3. **Boosting rounds**: gradients and hessians of the loss at the current raw predictions,
   rounded onto an agreed grid (:meth:`mpiml.comm.Reducer.quantize_rows`) so that histogram
   sums are exact, then the trees of the round grown best-first (or depth-wise) with one
   reduction of histograms per step (:func:`mpiml.models.tree_growth.grow_round`). One tree
   per round (binary: logistic loss; regression: squared error) or one per class (multiclass:
   softmax).

Because every reduced quantity is an exact integer sum, the trees are bit-identical at any rank
count and with any allreduce algorithm, and a run resumed from an ``on_tree`` state equals the
uninterrupted run. The model is a dict of arrays (:mod:`mpiml.models.trees`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..comm import Reducer, allgather_object, exchange_bytes, mark_raised_together, raise_together
from ..data.run_rows import RunData
from ..data.stream import chunks, is_streamed
from ..data.weights import check_weights
from ..models import trees
from ..models.base import check_sample_weight
from ..models.tree_growth import GrowthParams, grow_round
from ..run.context import RunContext
from .boosting_watch import BoostingWatch
from .evaluate import evaluate
from .layout import RowLayout
from .result import Fitted
from .rounds import Rounds, identity

#: Rows sampled to place the bin edges (scikit-learn's ``subsample`` for binning) ...
BIN_SAMPLE_ROWS = 200_000
#: ... and at most this many bytes of them (float64), which every rank receives: wide data
#: (d = 2,000 would be 3.2 GB per rank) gets fewer sampled rows instead.
BIN_SAMPLE_BYTES = 128 << 20
#: Sampled rows transposed at a time into the columns each rank receives.
TRANSPOSE_ROWS = 2048


@dataclass
class HGBTResult:
    """What :func:`fit_hgbt` produced, identical on every rank: the model arrays, the number of
    boosting rounds in it, and the mean training loss of the final model."""

    model: dict
    n_rounds: int
    train_loss: float


def bin_edges(X, layout: RowLayout, max_bins: int, seed: int, comm,
              sample_rows: int = BIN_SAMPLE_ROWS, sample_weight: np.ndarray | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """Edges of every feature, identical on all ranks: ``(edges, offsets)``. Collective.

    The sampled global rows (at most ``sample_rows``, and at most ``BIN_SAMPLE_BYTES`` of them)
    depend only on ``(n_total, n_features, seed)``. Each rank owns a contiguous block of the
    features: one all-to-all sends every owner the sampled values of its features (with their
    ``sample_weight``, for weighted percentiles), in rank order = global row order, so each
    rank receives and sorts 1/p of the sample; an allgather of the edges follows.
    """
    n_total, d = layout.n_total, X.shape[1]
    sample_rows = max(1, min(sample_rows, BIN_SAMPLE_BYTES // (8 * max(d, 1))))
    if n_total <= sample_rows:
        sample = np.arange(n_total)
    else:
        sample = np.sort(np.random.default_rng(seed).choice(n_total, sample_rows,
                                                           replace=False))
    lo, hi = np.searchsorted(sample, (layout.start, layout.start + layout.n_local))
    rows = X[sample[lo:hi] - layout.start]
    values = rows.toarray() if sp.issparse(rows) else rows
    weights = None if sample_weight is None else sample_weight[sample[lo:hi] - layout.start]
    size = len(layout.offsets) - 1
    owners = np.linspace(0, d, size + 1).round().astype(np.int64)  # each rank's features
    send, counts, at = np.empty(values.size + size * len(values)), [], 0
    for r in range(size):  # to rank r: its features' columns (float64), then the weights
        columns = send[at : at + values.shape[0] * (owners[r + 1] - owners[r])].reshape(
            owners[r + 1] - owners[r], values.shape[0])
        for top in range(0, values.shape[0], TRANSPOSE_ROWS):  # a tile at a time: 10x faster
            columns[:, top : top + TRANSPOSE_ROWS] = (
                values[top : top + TRANSPOSE_ROWS, owners[r] : owners[r + 1]].T)
        at += columns.size
        if weights is not None:
            send[at : at + len(weights)] = weights
            at += len(weights)
        counts.append(8 * at - sum(counts))
    received, received_counts = exchange_bytes(send[:at].view(np.uint8), counts, comm)
    mine = int(owners[layout.rank + 1] - owners[layout.rank])
    per_rank = np.diff(np.searchsorted(sample, layout.offsets))  # sampled rows of each rank
    blocks = np.split(received.view(np.float64), np.cumsum(received_counts // 8)[:-1])
    gathered_weights = (None if weights is None else np.concatenate(
        [block[n * mine :] for block, n in zip(blocks, per_rank, strict=True)]))
    my_edges = [trees.feature_edges(np.concatenate([block[j * n : (j + 1) * n] for block, n
                                                    in zip(blocks, per_rank, strict=True)]),
                                    max_bins, gathered_weights)
                for j in range(mine)]
    per_feature = [e for edges in allgather_object(my_edges, comm) for e in edges]
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in per_feature])]).astype(np.int64)
    return np.concatenate(per_feature).astype(np.float64), offsets


def bin_rows(X, edges: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The uint8 bins of this rank's rows (:func:`mpiml.models.trees.bin_features`), a chunk
    at a time into one array when they stream: the bins stay in memory (1 byte a value)."""
    if not is_streamed(X):
        return trees.bin_features(X, edges, offsets)
    binned = np.empty(X.shape, dtype=np.uint8, order="F")
    for lo, hi, rows in chunks(X):
        binned[lo:hi] = trees.bin_features(rows, edges, offsets)
    return binned


def _exact_column_sums(values: np.ndarray, n_total: int, reducer) -> np.ndarray:
    """Sums over all rows of every row of ``values`` (m, n), the same bits at any rank count."""
    quantized, scale = reducer.quantize_rows(values, n_total)
    return reducer.sum(quantized.sum(axis=1)) / scale


def fit_hgbt(X, y, comm=None, *, task: str = "binary", n_classes: int = 2,
             n_estimators: int = 100, learning_rate: float = 0.1, max_depth: int | None = None,
             max_leaf_nodes: int | None = 31, min_samples_leaf: int = 20, l2: float = 0.0,
             max_bins: int = 255,
             row_offset: int | None = None, n_total: int | None = None, seed: int = 0,
             bin_sample_rows: int = BIN_SAMPLE_ROWS, start: dict | None = None, on_tree=None,
             reducer: Reducer | None = None, watch: BoostingWatch | None = None,
             restore_best: bool = True, sample_weight: np.ndarray | None = None
             ) -> HGBTResult:
    """Boost ``n_estimators`` rounds of trees on the rows of all ranks. Collective.

    ``X`` (dense or CSR, finite) and ``y`` are this rank's rows, in rank order (``row_offset``
    and ``n_total`` are checked when given). ``y``: 0/1 (binary), 0..K-1 (multiclass with
    ``n_classes = K``), values (regression). Trees grow best-first to ``max_leaf_nodes``
    leaves (None: depth-wise), stop at ``max_depth`` (None: no limit) and where no split
    leaves ``min_samples_leaf`` rows on both sides with a positive gain; leaf values are
    ``-learning_rate * G / (H + l2)``. A single decision tree is ``n_estimators=1,
    learning_rate=1``. ``seed`` picks the rows that place the bin edges when there are more
    than ``BIN_SAMPLE_ROWS``. ``reducer`` (default ``Reducer(comm)``) makes every reduction.

    ``on_tree(state)`` is called after every round (one tree, or K for multiclass) with the
    complete resumable state: the model dict so far. ``start=state`` resumes from it (bin
    edges and baseline included) and equals the uninterrupted fit bit for bit.

    ``sample_weight`` (this rank's rows; finite, >= 0, None: all 1) weighs the baseline (a
    weighted mean), the gradients and hessians, the bin percentiles and the loss, as
    scikit-learn does; ``min_samples_leaf`` still counts rows.

    ``watch`` scores validation rows after every round (:mod:`mpiml.fit.boosting_watch`): the
    rounds stop when it says so, and with ``restore_best`` the model keeps the trees of its
    best round.
    """
    streamed = is_streamed(X)  # its rows were checked finite as they were read
    trees.check_arguments(X[:0] if streamed else X, task, n_classes, n_estimators,
                          learning_rate, max_depth, max_leaf_nodes, min_samples_leaf, l2,
                          max_bins, bin_sample_rows)
    reducer = Reducer(comm) if reducer is None else reducer
    layout = RowLayout(X, reducer.comm, row_offset, n_total, "fit_hgbt")
    targets, error = None, None
    try:
        targets = (trees.encode_targets(y, task, n_classes) if streamed
                   else trees.check_local_data(X, y, task, n_classes))
        sample_weight = check_sample_weight(sample_weight, X.shape[0])
        if sample_weight is not None:
            check_weights(sample_weight, 0, "sample_weight", "row")
    except ValueError as exc:
        error = exc
    raise_together(error, reducer.comm)
    n_outputs = n_classes if task == "multiclass" else 1
    weight = float(layout.n_total)
    if sample_weight is not None:
        weight = float(_exact_column_sums(sample_weight[None, :], layout.n_total, reducer)[0])
        if not weight > 0:
            raise mark_raised_together(ValueError(
                "sample_weight: every sample weight is zero; at least one row needs a positive "
                "weight"))
    if start is None:
        edges, edge_offsets = bin_edges(X, layout, max_bins, seed, reducer.comm,
                                        bin_sample_rows, sample_weight)
        columns = trees.target_columns(targets, task, n_outputs)
        if sample_weight is not None:
            columns *= sample_weight
        means = _exact_column_sums(columns, layout.n_total, reducer) / weight
        baseline, grown_trees = trees.baseline_scores(means, task), []
    else:
        edges, edge_offsets = np.asarray(start["bin_edges"]), np.asarray(start["edge_offsets"])
        baseline = np.asarray(start["baseline"], dtype=np.float64)
        grown_trees = trees.trees_of(start)
        if trees.task_of(start) != task or baseline.shape != (n_outputs,):
            raise ValueError(f"start is a {trees.task_of(start)} model with {baseline.size} "
                             f"outputs; this fit is {task} with {n_outputs}")
    binned = bin_rows(X, edges, edge_offsets)
    n_bins = max(2, int(np.diff(edge_offsets).max(initial=0)) + 1)
    raw = np.tile(baseline, (layout.n_local, 1))
    trees.add_trees(raw, grown_trees, binned)
    params = GrowthParams(max_depth, max_leaf_nodes, min_samples_leaf, float(l2),
                          float(learning_rate))
    if watch is not None:
        watch.start(baseline, edges, edge_offsets, grown_trees, start)
    for _round in range(len(grown_trees) // n_outputs, n_estimators):
        if watch is not None and watch.converged:
            break
        quantized, scale = reducer.quantize_rows(
            trees.gradients(raw, targets, task, sample_weight), layout.n_total)
        sums = reducer.sum(quantized.sum(axis=1))
        totals = np.column_stack([sums[:n_outputs], sums[n_outputs:],
                                  np.full(n_outputs, float(layout.n_total))])
        grown, leaves = grow_round(binned, n_bins, quantized[:n_outputs], quantized[n_outputs:],
                                   totals, scale[:n_outputs], scale[n_outputs:], params,
                                   reducer.sum)
        for output, tree in enumerate(grown):
            split = tree["feature"] >= 0
            tree["threshold"] = np.zeros(len(split))
            tree["threshold"][split] = edges[edge_offsets[tree["feature"][split]]
                                             + tree["threshold_bin"][split]]
            raw[:, output] += tree["value"][leaves[output]]
            grown_trees.append((output, tree))
        state = {}
        if watch is not None:
            watch.after_round(len(grown_trees) // n_outputs, grown_trees[-n_outputs:])
            state = watch.state()
        if on_tree is not None:
            on_tree({**trees.model_arrays(task, baseline, edges, edge_offsets, grown_trees),
                     **state})
    if watch is not None and restore_best and watch.best_rounds * n_outputs < len(grown_trees):
        grown_trees = grown_trees[:watch.best_rounds * n_outputs]
        raw = np.tile(baseline, (layout.n_local, 1))
        trees.add_trees(raw, grown_trees, binned)
    loss = reducer.sum_over_rows(
        lambda lo, hi: np.array([trees.loss_sum(
            raw[lo:hi], targets[lo:hi], task,
            None if sample_weight is None else sample_weight[lo:hi])]),
        layout.n_local, layout.n_total)
    return HGBTResult(trees.model_arrays(task, baseline, edges, edge_offsets, grown_trees),
                      len(grown_trees) // n_outputs, float(loss[0]) / weight)


def run_boosting(run: RunContext, rows: RunData) -> Fitted:
    """Boosted trees on ``rows`` as ``config.hgbt`` says, checkpointing after rounds (and under
    ``fault.mode: shrink`` carrying on from the agreed round after a rank's death); with a
    validation set, early stopping (``train.patience``) and the best round
    (``train.restore_best``)."""
    config = run.config
    kind, cfg = config.model.kind, config.hgbt
    task = "regression" if rows.task == "regression" else (
        "binary" if rows.n_classes == 2 else "multiclass")
    rounds = Rounds(run, rows, identity(kind, rows), cfg.n_estimators,
                    describe=lambda state: {key: state[key] for key in ("validation_loss",)
                                            if key in state})

    def fit(start: dict | None) -> Fitted:  # again from a later round after a shrink
        watch = None
        if rows.validation is not None:
            watch = BoostingWatch(rows.validation, task, rows.n_classes, run.reducer,
                                  config.train.patience, config.train.min_delta)
        result = fit_hgbt(rows.shard.X, rows.shard.y, task=task, n_classes=rows.n_classes,
                          n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
                          max_depth=cfg.max_depth, max_leaf_nodes=cfg.max_leaf_nodes,
                          min_samples_leaf=cfg.min_samples_leaf,
                          l2=cfg.l2, max_bins=cfg.max_bins, row_offset=rows.shard.start,
                          n_total=rows.shard.n_total, seed=config.train.seed,
                          start=start, on_tree=rounds.after, reducer=run.reducer,
                          watch=watch, restore_best=config.train.restore_best,
                          sample_weight=rows.shard.w)
        rounds.finish()
        return _fitted(run, rows, task, result, watch)

    return rounds.carry_on(fit)


def _fitted(run: RunContext, rows: RunData, task: str, result: HGBTResult,
            watch: BoostingWatch | None) -> Fitted:
    """The fit's test and validation metrics (collective), logged, with its model."""
    model = result.model
    scores = (None if task == "regression"
              else (lambda X: trees.predict_proba(model, X)))

    def metrics_on(part: str) -> dict:
        return evaluate(rows, lambda X: trees.predict(model, X), scores, run.reducer,
                        part=part)

    final = metrics_on("test")
    final["train_loss"] = result.train_loss
    validation = metrics_on("validation")
    record = {"step": result.n_rounds, "train_loss": result.train_loss, "test": final}
    if validation:
        record["validation"] = validation
    run.log(record)
    return Fitted(model, {}, result.n_rounds, metrics=final,
                  stopped_early=bool(watch is not None and watch.converged),
                  validation=validation)
