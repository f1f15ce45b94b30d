"""The rows a run trains and evaluates on, and how it evaluates: shared by every fit loop.

:func:`load_run_data` loads this rank's rows of the training and test sets, maps the test labels
onto the training classes (a label unseen in training is an error on every rank), and applies the
optional global standardisation. :func:`from_arrays` does the same for rows a caller already holds
in memory (the estimator API). :func:`evaluate` turns predictions of this rank's test rows into
metrics with one allreduce of sufficient statistics (identical on every rank).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import collectives, data, metrics, scaling
from .config import Config, ConfigError, block_rows
from .exactsum import exact_sum


@dataclass
class RunData:
    task: str  # regression | binary | multiclass | unsupervised
    shard: data.Shard
    test: data.Shard | None
    classes: np.ndarray | None
    scaler: tuple[np.ndarray, np.ndarray] | None

    @property
    def n_classes(self) -> int:
        return 2 if self.classes is None else len(self.classes)


def load_run_data(config: Config, comm, task: str, scaler=None) -> RunData:
    """This rank's training (and test) rows for ``task``; collective. ``scaler`` = (mean,
    scale) applies a scaler already fitted (e.g. after the rows were redistributed) instead
    of fitting one when ``data.standardize`` is set."""
    cfg = config.data
    if not cfg.train:
        raise ConfigError("data.train is empty: give the HDF5 file to train on")
    unsupervised = task == "unsupervised"
    align = block_rows(config)
    shard = data.load_shard(cfg.train, comm, x=cfg.x, y=None if unsupervised else cfg.y,
                            dtype=cfg.dtype, task=None if unsupervised else task, align=align)
    classes = getattr(shard, "classes", None)
    test = None
    if cfg.test:
        test = data.load_shard(cfg.test, comm, x=cfg.test_x,
                               y=None if unsupervised else cfg.test_y, dtype=cfg.dtype,
                               task=None if unsupervised else "regression", align=align)
        if test.n_features != shard.n_features:
            raise ConfigError(f"test set {cfg.test}:{cfg.test_x} has {test.n_features} "
                              f"features; the training set has {shard.n_features}")
        if classes is not None:
            test.y = _map_labels(test.y, classes, cfg.test, comm)
    if cfg.standardize and scaler is None:
        scaler = scaling.fit_scaler(shard.X, comm, block=align, n_total=shard.n_total)
    if cfg.standardize:
        for part in (shard, test):
            if part is not None:
                scaling.apply_scaler(part.X, *scaler)
    return RunData(task, shard, test, classes, scaler)


def from_arrays(X, y, comm, task: str, standardize: bool = False, align: int = 1) -> RunData:
    """A run over the rows each rank holds in memory (rank r's rows come after rank r-1's in
    the global order). Collective: the row offsets and the class set are agreed across ranks.

    ``task``: regression | binary | multiclass | unsupervised. Class labels may be any sortable
    values; they are mapped to 0..K-1 in sorted order, identically on every rank. ``align``
    (reproducible mode's block rows): every rank but the last must hold a multiple of it.
    """
    import scipy.sparse as sp

    error = None
    try:
        if sp.issparse(X):
            X = sp.csr_matrix(X, dtype=np.float64 if X.dtype not in (np.float32, np.float64)
                              else X.dtype)
        else:
            X = np.asarray(X)
            if X.dtype not in (np.float32, np.float64):
                X = X.astype(np.float64)
            X = np.array(X, order="C")  # a private, writeable copy (scaling works in place)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (rows x features); got shape {X.shape}")
        if y is not None and len(y) != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)}")
    except (TypeError, ValueError) as exc:
        error = exc
    collectives.raise_together(error, comm)
    counts = collectives.allgather_object((X.shape[0], X.shape[1]), comm)
    rank = collectives.rank_and_size(comm)[0]
    widths = {width for _, width in counts}
    if len(widths) != 1:
        error = ValueError(f"ranks hold different feature counts: {sorted(widths)}")
    collectives.raise_together(error, comm)
    start = sum(n for n, _ in counts[:rank])
    n_total = sum(n for n, _ in counts)
    misaligned = [r for r, (n, _) in enumerate(counts[:-1]) if n % align]
    if misaligned:
        error = ValueError(f"reproducible mode splits rows in blocks of {align}: every rank but "
                           f"the last must hold a multiple of {align} rows; ranks {misaligned} "
                           f"hold {[counts[r][0] for r in misaligned]} (use "
                           "mpiml.row_range(n, rank, size, align) to split)")
    collectives.raise_together(error, comm)
    classes, labels = None, None
    if task in ("binary", "multiclass"):
        local = np.unique(np.asarray(y))
        classes = np.unique(np.concatenate(collectives.allgather_object(local, comm)))
        needed = 2 if task == "binary" else 2
        if len(classes) < needed or (task == "binary" and len(classes) != 2):
            error = ValueError(f"task {task} needs {'exactly' if task == 'binary' else 'at least'}"
                               f" 2 classes; the labels hold {len(classes)}")
        collectives.raise_together(error, comm)
        labels = np.searchsorted(classes, np.asarray(y)).astype(np.int64)
    elif task == "regression":
        labels = np.asarray(y, dtype=np.float64)
    shard = data.Shard(X, labels, start, start + X.shape[0], n_total, X.shape[1], classes,
                       None if task == "unsupervised" else task)
    scaler = None
    if standardize:
        scaler = scaling.fit_scaler(shard.X, comm, block=align, n_total=n_total)
        scaling.apply_scaler(shard.X, *scaler)
    return RunData(task, shard, None, classes, scaler)


def _map_labels(raw: np.ndarray, classes: np.ndarray, path, comm) -> np.ndarray:
    """Labels -> training class indices; a label unseen in training is an error everywhere."""
    index = np.clip(np.searchsorted(classes, raw), 0, len(classes) - 1)
    unknown = classes[index] != raw
    error = None
    if unknown.any():
        error = ValueError(f"test set {path}: label {raw[unknown][0]!r} does not occur in the "
                           f"training labels {list(classes)}")
    collectives.raise_together(error, comm)
    return index


def evaluate(run: RunData, predict, predict_proba, reduce, block: int = 1,
             comm=None) -> dict[str, float]:
    """Test-set metrics from ``predict(X)`` (values) or ``predict_proba(X)`` (n, K); ``reduce``
    sums a vector over ranks in place. Empty without a test set or labels. With ``block > 1``
    (reproducible mode) the statistics are exact block sums instead, the same on any number of
    ranks (so early stopping decides identically)."""
    test = run.test
    if test is None or test.y is None:
        return {}

    def stats_of(lo, hi):
        X, y = test.X[lo:hi], test.y[lo:hi]
        if run.task == "regression":
            return metrics.regression_stats(np.asarray(predict(X), dtype=np.float64), y)
        return metrics.classification_stats(predict_proba(X), y)

    if block == 1:
        totals = reduce(stats_of(0, test.n_local))
    else:
        vectors = [stats_of(lo, min(lo + block, test.n_local))
                   for lo in range(0, test.n_local, block)]
        width = (5 if run.task == "regression"
                 else metrics.classification_stats_size(run.n_classes))
        totals, _ = exact_sum(vectors, width, -(-test.n_total // block), comm)
    if run.task == "regression":
        return metrics.regression_metrics(totals)
    return metrics.classification_metrics(totals, run.n_classes)
