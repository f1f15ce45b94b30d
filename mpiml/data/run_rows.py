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
from ..models.scaling import apply_scaler
from .fingerprint import file_fingerprint, rows_fingerprint
from .hdf5 import load_shard
from .scaling import fit_scaler
from .shard import DataError, Shard


@dataclass
class RunData:
    """This rank's rows of a run: ``task`` is regression | binary | multiclass | unsupervised;
    ``classes`` the original labels of the class indices in ``shard.y``; ``scaler`` = (mean,
    scale) already applied to ``shard`` and ``test``; ``fingerprint`` identifies the training
    data (:mod:`mpiml.data.fingerprint`), so that a resume can tell other data from these."""

    task: str
    shard: Shard
    test: Shard | None
    classes: np.ndarray | None
    scaler: tuple[np.ndarray, np.ndarray] | None
    fingerprint: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return 2 if self.classes is None else len(self.classes)


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
    shard = load_shard(cfg.train, comm, x=cfg.x, y=cfg.y if labelled else None, dtype=cfg.dtype,
                       task=task if labelled else None, block_rows=config.block_rows,
                       progress=progress)
    test = None
    if cfg.test:
        test = load_shard(cfg.test, comm, x=cfg.test_x, y=cfg.test_y if labelled else None,
                          dtype=cfg.dtype, task="regression" if labelled else None,
                          block_rows=config.block_rows, progress=progress)
        if test.n_features != shard.n_features:  # both known on every rank
            raise mark_raised_together(DataError(
                f"test set {cfg.test}:{cfg.test_x} has {test.n_features} features; the "
                f"training set {cfg.train}:{cfg.x} has {shard.n_features}"))
        if shard.classes is not None:
            test.y = _map_labels(test.y, shard.classes, cfg.test, comm)
    if cfg.standardize and scaler is None:
        scaler = fit_scaler(shard.X, reducer, shard.n_total)
    if cfg.standardize:
        for part in (shard, test):
            if part is not None:
                apply_scaler(part.X, *scaler)
    fingerprint = file_fingerprint(cfg.train, cfg.x, cfg.y if labelled else None, comm)
    return RunData(task, shard, test, shard.classes, scaler, fingerprint)


def from_arrays(X, y, reducer, task: str, standardize: bool = False,
                classes: np.ndarray | None = None) -> RunData:
    """A run over the rows each rank holds in memory (rank r's rows come after rank r-1's in
    the global order), on ``reducer``'s communicator. Collective: the row offsets and the class
    set are agreed across ranks. The caller's arrays are never modified.

    ``task``: regression | binary | multiclass | unsupervised. Class labels may be any sortable
    values; they are mapped to 0..K-1 in sorted order, identically on every rank -- or, when
    ``classes`` (sorted, the same on every rank) is given, ``y`` already holds those indices.
    In reproducible mode (the reducer's ``block_rows > 1``) every rank but the last must hold a
    multiple of the block.
    """
    comm, block_rows = reducer.comm, reducer.block_rows
    error = None
    try:
        if sp.issparse(X):
            dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
            X = sp.csr_matrix(X, dtype=dtype, copy=True)  # scaling works in place
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
    raise_together(error, comm)
    counts = allgather_object((X.shape[0], X.shape[1]), comm)
    rank = rank_and_size(comm)[0]
    widths = {width for _, width in counts}
    if len(widths) != 1:
        error = ValueError(f"ranks hold different feature counts: {sorted(widths)}")
    raise_together(error, comm)
    start = sum(n for n, _ in counts[:rank])
    n_total = sum(n for n, _ in counts)
    misaligned = [r for r, (n, _) in enumerate(counts[:-1]) if n % block_rows]
    if misaligned:
        error = ValueError(f"reproducible mode splits rows in blocks of {block_rows}: every rank "
                           f"but the last must hold a multiple of {block_rows} rows; ranks "
                           f"{misaligned} hold {[counts[r][0] for r in misaligned]} (use "
                           "mpiml.row_range(n, rank, size, block_rows) to split)")
    raise_together(error, comm)
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
    shard = Shard(X, labels, start, start + X.shape[0], n_total, X.shape[1], classes,
                  None if task == "unsupervised" else task)
    fingerprint = rows_fingerprint(X, labels, start, n_total, comm)
    scaler = None
    if standardize:
        scaler = fit_scaler(shard.X, reducer, n_total)
        apply_scaler(shard.X, *scaler)
    return RunData(task, shard, None, classes, scaler, fingerprint)


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
        error = DataError(f"test set {path}: label {raw[unknown][0]} does not occur in the "
                          f"training labels ({shown})")
    raise_together(error, comm)
    return index
