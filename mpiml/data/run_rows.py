"""The rows a run trains and evaluates on: this rank's training and test rows, the class set,
and the optional global standardisation -- for every fit loop and the estimators alike.

:func:`load_run_data` reads them from the files of ``config.data``; :func:`from_arrays` takes
rows a caller already holds in memory (the estimator API). Both are collective.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..comm import allgather_object, mark_raised_together, raise_together, rank_and_size
from ..config import Config, ConfigError
from .fingerprint import file_fingerprint, rows_fingerprint
from .hdf5 import load_shard, open_shard
from .holdout import split_validation
from .rebalance import in_whole_blocks, rebalance_rows
from .scaling import fit_scaler
from .shard import DataError, Shard
from .stream import StreamedRows, check_no_validation_fraction, chunk_rows_for, scale_rows, streams
from .weights import check_weights, row_weights


@dataclass
class RunData:
    """This rank's rows of a run: ``task`` is regression | binary | multiclass | unsupervised;
    ``classes`` the original labels of the class indices in ``shard.y``; ``scaler`` = (mean,
    scale) already applied to ``shard``, ``test`` and ``validation``; ``fingerprint``
    identifies the training data (:mod:`mpiml.data.fingerprint`), so that a resume can tell
    other data from these. ``validation`` is what early stopping and ``train.restore_best``
    watch (a file, or rows held out of the training file); ``test`` is only reported."""

    task: str
    shard: Shard
    test: Shard | None
    classes: np.ndarray | None
    scaler: tuple[np.ndarray, np.ndarray] | None
    fingerprint: dict = field(default_factory=dict)
    validation: Shard | None = None

    @property
    def n_classes(self) -> int:
        return 2 if self.classes is None else len(self.classes)

    def scale(self, reducer, scaler=None) -> None:
        """Standardise every part in place by ``scaler`` = (mean, scale), or by one fitted to
        the training rows (collective)."""
        self.scaler = fit_scaler(self.shard.X, reducer, self.shard.n_total) \
            if scaler is None else scaler
        for part in (self.shard, self.test, self.validation):
            if part is not None:
                scale_rows(part.X, *self.scaler)


def load_run_data(config: Config, reducer, task: str, scaler=None, progress=None) -> RunData:
    """This rank's training (and test) rows for ``task``, on ``reducer``'s communicator;
    collective. ``scaler`` = (mean, scale) applies a scaler already fitted (e.g. after the rows
    were redistributed) instead of fitting one when ``data.standardize`` is set. ``progress()``
    is called as the reading goes on (:func:`mpiml.data.load_shard`)."""
    cfg, comm = config.data, reducer.comm
    if not cfg.train:  # the same config on every rank: raised together
        raise mark_raised_together(ConfigError(
            "data.train is not set: give the HDF5 file to train on (data: {train: file.h5})"))
    labelled = task != "unsupervised"
    shard = _training_rows(config, comm, labelled, task, progress)
    weights_name = f"{cfg.train}: data set '{cfg.weight}'" if cfg.weight else cfg.train
    shard.w = row_weights(shard.y, shard.w, shard.classes, config.model.class_weight,
                          shard.n_total, reducer, (weights_name, "model.class_weight"))[0]
    # the fingerprint identifies the whole training file, before any rows are held out
    fingerprint = file_fingerprint(cfg.train, cfg.x, cfg.y if labelled else None, comm)
    validation = None
    if cfg.validation_fraction:
        if isinstance(shard.X, StreamedRows):  # the same on every rank
            check_no_validation_fraction(cfg.validation_fraction, cfg.train)
        shard, validation = split_validation(shard, cfg.validation_fraction, config.train.seed,
                                             config.block_rows, comm, cfg.train)
    held = {}
    for name, path, x, y in (("validation", cfg.validation, cfg.validation_x, cfg.validation_y),
                             ("test", cfg.test, cfg.test_x, cfg.test_y)):
        if path:
            held[name] = load_shard(path, comm, x=x, y=y if labelled else None,
                                    dtype=cfg.dtype, task="regression" if labelled else None,
                                    block_rows=config.block_rows, progress=progress)
            _check_held_out(held[name], shard, name, path, x, cfg, comm)
    rows = RunData(task, shard, held.get("test"), shard.classes, None, fingerprint,
                   held.get("validation", validation))
    if cfg.standardize:
        rows.scale(reducer, scaler)
    return rows


def _training_rows(config: Config, comm, labelled: bool, task: str, progress) -> Shard:
    """This rank's training rows: in memory, or X streamed from the file when
    ``data.memory_budget`` is set and the largest rank's X exceeds it (y and w in memory)."""
    cfg = config.data
    lazy = open_shard(cfg.train, comm, x=cfg.x, y=cfg.y if labelled else None, dtype=cfg.dtype,
                      task=task if labelled else None, block_rows=config.block_rows,
                      progress=progress, w=cfg.weight, memory_budget=cfg.memory_budget)
    try:
        if not streams(lazy, cfg.memory_budget, comm.Get_size()):
            with lazy:
                return lazy.load()
        rows = chunk_rows_for(cfg.memory_budget, lazy.n_features, lazy.dtype.itemsize,
                              config.block_rows)
        return lazy.load(lambda opened: StreamedRows(opened, rows))  # the file stays open
    except BaseException:
        lazy.close()
        raise


def _check_held_out(part: Shard, shard: Shard, name: str, path: str, x: str, cfg, comm) -> None:
    """A test or validation file must have the training features; its labels become training
    class indices (a label unseen in training is an error on every rank)."""
    if part.n_features != shard.n_features:  # both known on every rank
        raise mark_raised_together(DataError(
            f"{name} set {path}:{x} has {part.n_features} features; the training set "
            f"{cfg.train}:{cfg.x} has {shard.n_features}"))
    if shard.classes is not None:
        part.y = _map_labels(part.y, shard.classes, f"{name} set {path}", comm)


def from_arrays(X, y, reducer, task: str, standardize: bool = False,
                classes: np.ndarray | None = None, validation_fraction: float = 0.0,
                seed: int = 0, sample_weight=None) -> RunData:
    """A run over the rows each rank holds in memory (rank r's rows come after rank r-1's in
    the global order), on ``reducer``'s communicator. Collective: the row offsets and the class
    set are agreed across ranks. The caller's arrays are never modified.

    ``task``: regression | binary | multiclass | unsupervised. Class labels may be any sortable
    values; they are mapped to 0..K-1 in sorted order, identically on every rank -- or, when
    ``classes`` (sorted, the same on every rank) is given, ``y`` already holds those indices.
    ``validation_fraction`` holds rows out as the validation set, chosen by global row and
    ``seed`` (:mod:`mpiml.data.holdout`). ``sample_weight`` weighs this rank's rows (finite,
    >= 0, not all 0 over the ranks; None: every row weighs 1).
    In reproducible mode (the reducer's ``block_rows > 1``) rows split anywhere but between
    blocks are first moved to :func:`row_range`'s split (:mod:`mpiml.data.rebalance`).
    """
    comm, block_rows = reducer.comm, reducer.block_rows
    error = None
    try:
        if sp.issparse(X):
            dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
            X = sp.csr_matrix(X, dtype=dtype)
        else:
            X = np.asarray(X)
            if X.dtype not in (np.float32, np.float64):
                X = X.astype(np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (rows x features); got shape {X.shape}")
        if y is not None and len(y) != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but y has {len(y)}")
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64)
            if sample_weight.shape != (X.shape[0],):
                raise ValueError(f"sample_weight must have shape ({X.shape[0]},) (rows of X); "
                                 f"got {sample_weight.shape}")
            check_weights(sample_weight, 0, f"sample_weight on rank {comm.Get_rank()}", "row")
    except (TypeError, ValueError) as exc:
        error = exc
    raise_together(error, comm)
    reports = allgather_object((X.shape[0], X.shape[1], sample_weight is not None), comm)
    counts = [(n, width) for n, width, _ in reports]
    if sample_weight is None and any(weighted for *_, weighted in reports):
        sample_weight = np.ones(X.shape[0])  # weights on other ranks: these rows weigh 1
    rank = rank_and_size(comm)[0]
    widths = {width for _, width in counts}
    if len(widths) != 1:
        error = ValueError(f"ranks hold different feature counts: {sorted(widths)}")
    raise_together(error, comm)
    start = sum(n for n, _ in counts[:rank])
    n_total = sum(n for n, _ in counts)
    labels = None
    if task in ("binary", "multiclass"):
        if classes is None:
            local = None
            try:
                local = distinct_labels(y)
            except TypeError as exc:
                error = exc
            raise_together(error, comm)
            classes = merge_classes(allgather_object(local, comm))
            labels = np.searchsorted(classes, np.asarray(y)).astype(np.int64)
        else:
            labels = np.asarray(y, dtype=np.int64)
        wanted = "exactly 2" if task == "binary" else "at least 2"
        if len(classes) < 2 or (task == "binary" and len(classes) != 2):
            error = ValueError(f"task {task} needs {wanted} classes; the labels hold "
                               f"{len(classes)}")
        raise_together(error, comm)
    elif task == "regression":
        labels = np.asarray(y, dtype=np.float64)
    row_counts = [n for n, _ in counts]
    if in_whole_blocks(row_counts, block_rows):  # agreed: the counts are gathered
        X = X.copy()  # a private, writeable copy (scaling works in place)
        sample_weight = None if sample_weight is None else sample_weight.copy()
    else:
        X, labels, sample_weight, start, _ = rebalance_rows(X, labels, sample_weight,
                                                            row_counts, block_rows, comm)
    shard = Shard(X, labels, start, start + X.shape[0], n_total, X.shape[1], classes,
                  None if task == "unsupervised" else task, sample_weight)
    if sample_weight is not None:
        row_weights(labels if classes is not None else None, sample_weight, classes, None,
                    n_total, reducer, ("sample_weight", "class_weight"))
    fingerprint = rows_fingerprint(X, labels, start, n_total, comm)
    validation = None
    if validation_fraction:
        shard, validation = split_validation(shard, validation_fraction, seed, block_rows, comm,
                                             "the rows passed to fit")
    rows = RunData(task, shard, None, classes, None, fingerprint, validation)
    if standardize:
        rows.scale(reducer)
    return rows


def distinct_labels(y) -> np.ndarray:
    """This rank's sorted distinct labels; as in scikit-learn, a TypeError if they do not sort
    together (text and numbers)."""
    try:
        return np.unique(np.asarray(y))
    except TypeError as exc:
        raise TypeError(f"Mix of label input types (string and number) in y: {exc}") from exc


def merge_classes(labels_by_rank: list[np.ndarray]) -> np.ndarray:
    """The sorted class set from every rank's distinct labels (a rank without rows adds nothing,
    not even a dtype).

    Computed by every rank from the same gathered list, so the ValueError raised when some ranks
    hold text labels and others numbers (scikit-learn refuses a mix of label types) is raised
    identically on every rank; it names the ranks and their label types.
    """
    present = {rank: labels for rank, labels in enumerate(labels_by_rank) if len(labels)}
    if not present:
        return np.zeros(0)
    text = {rank: labels.dtype.kind in "US" or isinstance(labels[0], (str, bytes))
            for rank, labels in present.items()}
    if len(set(text.values())) > 1:
        ranks_of: dict[str, list[int]] = {}
        for rank, labels in present.items():
            kind = type(labels[0]).__name__ if labels.dtype == object else str(labels.dtype)
            ranks_of.setdefault(kind, []).append(rank)
        found = "; ".join(f"{kind} labels on rank{'s' if len(ranks) > 1 else ''} "
                          f"{', '.join(map(str, ranks))}" for kind, ranks in ranks_of.items())
        raise mark_raised_together(ValueError(
            f"Mix of label input types (string and number) across ranks: {found}. Pass labels "
            "of one type on every rank"))
    return np.unique(np.concatenate(list(present.values())))


def _map_labels(raw: np.ndarray, classes: np.ndarray, path, comm) -> np.ndarray:
    """Labels -> training class indices; a label unseen in training is an error everywhere."""
    index = np.clip(np.searchsorted(classes, raw), 0, len(classes) - 1)
    unknown = classes[index] != raw
    error = None
    if unknown.any():
        shown = ", ".join(str(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
        error = DataError(f"{path}: label {raw[unknown][0]} does not occur in the training "
                          f"labels ({shown})")
    raise_together(error, comm)
    return index
