"""Distributed K-Means: the best of ``n_init`` fits, each seeded (k-means++ or random rows) or
started from given centres, then Lloyd iterations or a mini-batch variant.

Each rank holds its own rows (dense or CSR, e.g. from ``mpiml.data.load_shard(path, comm,
y=None)``). A Lloyd iteration assigns this rank's rows to the nearest centre and produces the
sufficient statistics of the update (:func:`mpiml.models.kmeans.assign_with_statistics`) --
per-cluster sums and counts and the inertia -- packed into ONE flat buffer ``[sums (k*d) | counts
(k) | inertia (1)]`` and combined by ONE reduction; the new centres ``sums / counts`` are then
identical on every rank. Every decision that changes which collectives run next (convergence,
empty clusters, the end of an epoch, which initialisation is kept) is taken on reduced or
broadcast values only, so the ranks never disagree on the sequence of collectives.

Every reduction goes through the run's :class:`mpiml.comm.Reducer`; with ``comm=MPI.COMM_SELF``
the same code is the serial algorithm. The initial centres come from :mod:`.kmeans_init`.
:func:`run_kmeans` runs it from a config, with the run's checkpoints, stop requests and
``fault.mode: shrink`` (:mod:`mpiml.fit.rounds`).
"""

from __future__ import annotations

import hashlib
import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..comm import Reducer, mark_raised_together, raise_together
from ..data.batches import BatchPlan, BlockBatchPlan, order_block_rows
from ..data.run_rows import RunData
from ..data.stream import StreamedRows, chunk_sums, is_streamed, per_row
from ..data.weights import check_weights, weight_total
from ..models.base import check_positive_int, check_sample_weight, weighted_sum
from ..models.kmeans import assign, assign_with_statistics, row_norms, statistics_size
from ..run.context import RunContext
from .kmeans_init import (
    assigned,
    fetch_row,
    given_centers,
    kmeans_plusplus,
    random_rows,
    read_init_file,
)
from .layout import RowLayout
from .result import Fitted
from .rounds import Rounds, identity

#: The seedings ``init`` may name (besides an array of centres).
SEEDINGS = ("k-means++", "random")


@dataclass
class KMeansResult:
    """What :func:`fit_kmeans` produced. ``labels`` are this rank's rows; all else is identical
    on every rank. ``inertia`` is the sum of squared distances of all rows to their final centre;
    ``n_iter`` counts Lloyd iterations (mini-batch: batches); ``initialisation`` is the one of
    the ``n_init`` fits that was kept (seeded with ``seed + initialisation``)."""

    centers: np.ndarray
    inertia: float
    n_iter: int
    labels: np.ndarray | None
    converged: bool
    initialisation: int = 0


def _scaled_tolerance(X, layout: RowLayout, tol: float, reducer) -> float:
    """``tol * mean_j Var(X[:, j])`` over all rows (scikit-learn's tolerance), from one
    reduction of ``[sum x (d) | sum x^2 (d)]``: ``Var_j = sum x_j^2 / N - (sum x_j / N)^2``."""
    d = X.shape[1]

    def rows_moments(lo, hi):
        rows = X[lo:hi]
        moments = np.empty(2 * d)
        if sp.issparse(rows):
            moments[:d] = np.asarray(rows.sum(axis=0)).ravel()
            moments[d:] = np.asarray(rows.multiply(rows).sum(axis=0)).ravel()
        else:
            moments[:d] = rows.sum(axis=0, dtype=np.float64)
            moments[d:] = np.einsum("ij,ij->j", rows, rows, dtype=np.float64)
        return moments

    moments = reducer.sum_over_rows(chunk_sums(rows_moments, X), X.shape[0], layout.n_total)
    mean = moments[:d] / layout.n_total
    variance = np.maximum(moments[d:] / layout.n_total - mean * mean, 0.0)
    return float(tol * variance.mean())


def _farthest_row(distances: np.ndarray, layout: RowLayout, reducer) -> int:
    """Global index of the row farthest from its centre; ties go to the smallest global index.

    Two small reductions: MAX of the distance, then MIN of the global index among the rows
    that reach it, so every rank names the same row.
    """
    largest = reducer.max(np.array([distances.max(initial=-np.inf)]))
    index = np.array([layout.n_total], dtype=np.int64)
    reaching = np.flatnonzero(distances == largest[0])
    if reaching.size:
        index[0] = layout.start + reaching[0]
    return int(reducer.min(index)[0])


def _reseed_empty(centers, counts, X, distances, layout, reducer) -> None:
    """Move every empty cluster (in index order) onto the row currently farthest from its centre.

    ``counts`` are reduced values, so all ranks take this branch together; a chosen row is
    excluded from the next choice.
    """
    distances = distances.copy()
    for cluster in np.flatnonzero(counts == 0):
        row = _farthest_row(distances, layout, reducer)
        centers[cluster] = fetch_row(X, layout, row, reducer)
        if layout.owner(row) == layout.rank:
            distances[row - layout.start] = -np.inf


def _check_arguments(X, n_clusters, n_init, max_iter, tol, batch_size) -> None:
    if not (sp.issparse(X) or isinstance(X, (np.ndarray, StreamedRows))) or X.ndim != 2:
        raise ValueError(f"X must be a 2-D numpy array or a CSR matrix; got {type(X).__name__}")
    check_positive_int("n_clusters", n_clusters)
    check_positive_int("n_init", n_init)
    check_positive_int("max_iter", max_iter)
    if batch_size is not None:
        check_positive_int("batch_size (None for Lloyd)", batch_size)
    if not isinstance(tol, numbers.Real) or not 0.0 <= tol < np.inf:
        raise ValueError(f"tol must be a finite number >= 0; got {tol!r}")


def fit_kmeans(X, n_clusters: int, comm=None, *, init="k-means++", n_init: int = 1,
               max_iter: int = 300, tol: float = 1e-4, seed: int = 0,
               batch_size: int | None = None, start: dict | None = None, on_iteration=None,
               reducer: Reducer | None = None, row_offset: int | None = None,
               n_total: int | None = None, sample_weight: np.ndarray | None = None
               ) -> KMeansResult:
    """Cluster the rows of all ranks into ``n_clusters``. Collective: call on every rank.

    ``X`` is this rank's rows (dense or CSR), rows of rank r before those of rank r+1;
    ``row_offset`` (``shard.start``) and ``n_total`` are checked against that order when given.
    ``init`` is ``"k-means++"`` (distributed, see :func:`.kmeans_init.kmeans_plusplus`),
    ``"random"`` (``n_clusters`` distinct rows drawn uniformly from all ranks' rows) or initial
    centres ``(k, d)`` (identical on every rank; rank 0's are used). Either seeding gives the
    same centres on any number of ranks.

    ``n_init`` fits run one after the other, fit i seeded with ``seed + i`` (its initial
    centres and, for mini-batches, its batch order; so fit 0 is the ``n_init=1`` fit), and the
    one with the lowest final inertia is kept (the first on a tie; inertias are reduced values,
    so every rank keeps the same one). Given centres make one fit: ``n_init > 1`` then warns and
    runs one, as scikit-learn does.

    Lloyd (``batch_size=None``): at most ``max_iter`` iterations; converged when the total
    squared centre shift ``sum_c ||c_new - c_old||^2 <= tol * mean_j Var(X[:, j])`` (scikit-
    learn's rule; unchanged labels give a zero shift, so its "strict convergence" is included).
    An empty cluster is re-seeded on the row farthest from its centre (see
    :func:`_reseed_empty`). ``on_iteration(state)`` gets ``{"centers", "iteration" (done),
    "inertia" (of the assignment just made), "converged" (0/1)}`` after every iteration.

    Mini-batch (``batch_size=B``): ``max_iter`` epochs over the global batches of
    :class:`mpiml.data.BatchPlan` (the same at any rank count). Per batch, with ``m_c`` rows and
    row sum ``s_c`` assigned to centre c and ``v_c`` rows seen by c so far (Sculley's per-centre
    rate ``1/v``): ``c <- (v_c c + s_c) / (v_c + m_c)``. Converged when an epoch moves the
    centres by a total squared shift below the tolerance above. The state adds ``"counts"``
    (``v``) and ``"epoch_start_centers"``; ``"iteration"`` counts batches and ``"inertia"`` sums
    the batch inertias of the current epoch. Clusters that receive no rows keep their centre.

    With ``n_init > 1`` the state also holds ``"initialisation"`` (the fit running),
    ``"n_init"``, ``"max_iter"`` and, once a fit has finished, the best so far: ``"best_centers"``,
    ``"best_inertia"``, ``"best_n_iter"``, ``"best_converged"``, ``"best_initialisation"``.
    ``start`` (a state from ``on_iteration``) resumes; on the same rank count the result equals
    the uninterrupted run bit for bit. (A finished fit ran with ``max_iter``, so a resume that
    has finished fits behind it refuses another ``max_iter``.) ``reducer`` (default
    ``Reducer(comm)``) makes every reduction: its algorithm, and with ``block_rows > 1``
    (reproducible mode, Lloyd only; each rank's rows start on a block boundary) exact sums per
    block of global rows, so the result has the same bits on any number of ranks.

    ``sample_weight`` (this rank's rows; finite, >= 0, None: all 1) weighs every row as
    scikit-learn does: the seeding draws (:mod:`.kmeans_init`), the centres (weighted means),
    the counts (cluster weights; a cluster of weight 0 is empty) and the inertia. The
    tolerance stays scikit-learn's unweighted variance.
    """
    _check_arguments(X, n_clusters, n_init, max_iter, tol, batch_size)
    reducer = Reducer(comm) if reducer is None else reducer
    if reducer.reproducible and batch_size is not None:
        raise ValueError("reproducible K-Means supports Lloyd iterations only (batch_size=None)")
    layout = RowLayout(X, reducer.comm, row_offset, n_total, "fit_kmeans")
    sample_weight = _checked_weights(sample_weight, X.shape[0], layout.n_total, reducer)
    k, d = int(n_clusters), X.shape[1]
    if k > layout.n_total:
        raise mark_raised_together(ValueError(  # the global row count: known on every rank
            f"n_clusters={k} exceeds the {layout.n_total} rows"))
    given = None
    if isinstance(init, str):
        if init not in SEEDINGS:
            raise ValueError(f"init must be 'k-means++', 'random' or an array of shape "
                             f"({k}, {d}); got {init!r}")
    else:
        given = given_centers(init, k, d, reducer.comm)
        if n_init > 1:
            if layout.rank == 0:
                warnings.warn(f"initial centres given: one fit instead of n_init={n_init}",
                              RuntimeWarning, stacklevel=2)
            n_init = 1
    first, best = _resume_point(start, n_init, max_iter)
    x_norms = per_row(lambda rows, lo, hi: row_norms(rows), X)
    tol_abs = _scaled_tolerance(X, layout, tol, reducer)
    for initialisation in range(first, n_init):
        resumed = start if initialisation == first else None
        fit_seed = seed + initialisation
        if resumed is not None:
            centers = np.array(resumed["centers"], dtype=np.float64)
            if centers.shape != (k, d):
                raise ValueError(f"start['centers'] must have shape ({k}, {d}); "
                                 f"got {centers.shape}")
        elif given is not None:
            centers = given.copy()
        elif init == "random":
            centers = random_rows(X, layout, k, fit_seed, reducer, sample_weight)
        else:
            centers = kmeans_plusplus(X, x_norms, layout, k, fit_seed, reducer, sample_weight)
        report = on_iteration
        if on_iteration is not None and n_init > 1:
            report = _reporting_best(on_iteration, initialisation, n_init, max_iter, best)
        result = _fit_once(X, x_norms, centers, layout, max_iter, tol_abs, batch_size, fit_seed,
                           resumed, report, reducer, sample_weight)
        result.initialisation = initialisation
        if best is None or result.inertia < best.inertia:
            best = result
    if best.labels is None:  # the kept fit finished before this resume
        best.labels = assigned(X, best.centers, x_norms)[0]
    if not best.converged and layout.rank == 0:
        warnings.warn(f"K-Means did not converge in {max_iter} "
                      f"{'iterations' if batch_size is None else 'epochs'} (tol={tol})",
                      RuntimeWarning, stacklevel=2)
    return best


def _checked_weights(sample_weight, n_rows: int, n_total: int, reducer) -> np.ndarray | None:
    """This rank's sample weights as float64 after checks that raise the same error on every
    rank (shape, values, a positive total)."""
    error = None
    try:
        sample_weight = check_sample_weight(sample_weight, n_rows)
        if sample_weight is not None:
            check_weights(sample_weight, 0, "sample_weight", "row")
    except ValueError as exc:
        error = exc
    raise_together(error, reducer.comm)
    if sample_weight is not None and not weight_total(sample_weight, n_total, reducer) > 0:
        raise mark_raised_together(ValueError(
            "sample_weight: every sample weight is zero; at least one row needs a positive "
            "weight"))
    return sample_weight


def _resume_point(start, n_init, max_iter) -> tuple[int, KMeansResult | None]:
    """The fit a ``start`` state resumes (0 for a fresh start) and the best fit finished before
    it (None if none). ``start`` is identical on every rank, and so is any error raised."""
    if start is None:
        return 0, None
    saved_n_init = int(start.get("n_init", 1))
    if saved_n_init != n_init:
        raise mark_raised_together(ValueError(
            f"start was saved by a fit with n_init={saved_n_init}; this one has n_init={n_init}"))
    if "best_centers" not in start:
        return int(start.get("initialisation", 0)), None
    if int(start["max_iter"]) != max_iter:
        raise mark_raised_together(ValueError(
            f"max_iter={max_iter}, but the {int(start['initialisation'])} finished fit(s) of "
            f"this n_init={n_init} run used max_iter={int(start['max_iter'])}: resume with "
            f"max_iter={int(start['max_iter'])}, or start afresh"))
    best = KMeansResult(np.array(start["best_centers"], dtype=np.float64),
                        float(start["best_inertia"]), int(start["best_n_iter"]), None,
                        bool(start["best_converged"]), int(start["best_initialisation"]))
    return int(start["initialisation"]), best


def _reporting_best(on_iteration, initialisation, n_init, max_iter, best):
    """``on_iteration`` with the state of fit ``initialisation`` completed by the n_init
    bookkeeping, so that a saved state resumes the whole run."""
    def report(state: dict) -> None:
        state.update(initialisation=initialisation, n_init=n_init, max_iter=max_iter)
        if best is not None:
            state.update(best_centers=best.centers, best_inertia=best.inertia,
                         best_n_iter=best.n_iter, best_converged=int(best.converged),
                         best_initialisation=best.initialisation)
        on_iteration(state)

    return report


def _fit_once(X, x_norms, centers, layout, max_iter, tol_abs, batch_size, seed, start,
              on_iteration, reducer, sample_weight=None) -> KMeansResult:
    """One fit from ``centers`` (Lloyd or mini-batch), with its final labels and inertia."""
    if batch_size is None:
        centers, n_iter, converged = _lloyd(X, x_norms, centers, layout, max_iter, tol_abs, start,
                                            on_iteration, reducer, sample_weight)
    else:
        centers, n_iter, converged = _minibatch(X, x_norms, centers, layout, max_iter, tol_abs,
                                                batch_size, seed, start, on_iteration, reducer,
                                                sample_weight)
    labels, distances = assigned(X, centers, x_norms)
    inertia = reducer.sum_over_rows(
        lambda lo, hi: np.array([weighted_sum(distances[lo:hi], _rows(sample_weight, lo, hi))]),
        X.shape[0], layout.n_total)
    return KMeansResult(centers, float(inertia[0]), n_iter, labels, converged)


def _rows(values: np.ndarray | None, lo, hi) -> np.ndarray | None:
    return None if values is None else values[lo:hi]


def _lloyd(X, x_norms, centers, layout, max_iter, tol_abs, start, on_iteration, reducer,
           sample_weight=None):
    """Lloyd iterations from ``centers``; returns (centers, iterations done, converged)."""
    k, d = centers.shape
    done = 0 if start is None else int(start["iteration"])
    converged = start is not None and bool(start["converged"])
    while not converged and done < max_iter:
        distances = np.empty(X.shape[0])

        def statistics(lo, hi, centers=centers, distances=distances):
            part = np.empty(statistics_size(k, d))
            distances[lo:hi] = assign_with_statistics(part, X[lo:hi], centers, x_norms[lo:hi],
                                                      _rows(sample_weight, lo, hi))[1]
            return part

        totals = reducer.sum_over_rows(chunk_sums(statistics, X), X.shape[0], layout.n_total)
        counts = totals[k * d : k * d + k]
        updated = np.zeros((k, d))  # the centres of empty clusters are reseeded below
        np.divide(totals[: k * d].reshape(k, d), counts[:, None], out=updated,
                  where=counts[:, None] > 0)
        if not counts.all():
            _reseed_empty(updated, counts, X, distances, layout, reducer)
        shift = float(np.square(updated - centers).sum())
        centers, done, converged = updated, done + 1, shift <= tol_abs
        if on_iteration is not None:
            on_iteration({"centers": centers.copy(), "iteration": done,
                          "inertia": float(totals[-1]), "converged": int(converged)})
    return centers, done, converged


def _minibatch(X, x_norms, centers, layout, max_epochs, tol_abs, batch_size, seed, start,
               on_iteration, reducer, sample_weight=None):
    """Mini-batch K-Means over the global batch order; returns (centers, batches, converged)."""
    k, d = centers.shape
    if is_streamed(X):  # batches of a few contiguous runs (docs/data.md)
        row_bytes = d * X.dtype.itemsize
        plan = BlockBatchPlan(
            layout.n_total, batch_size, seed, layout.start, layout.start + layout.n_local,
            order_block_rows(batch_size, row_bytes))
    else:
        plan = BatchPlan(layout.n_total, batch_size, seed, layout.start,
                         layout.start + layout.n_local)
    per_epoch = plan.n_batches(0)
    buf = np.empty(statistics_size(k, d))
    if start is None:
        seen, done, converged = np.zeros(k), 0, False
        epoch_start, epoch_inertia = centers.copy(), 0.0
    else:
        seen, done = np.array(start["counts"], dtype=np.float64), int(start["iteration"])
        converged = bool(start["converged"])
        epoch_start = np.array(start["epoch_start_centers"], dtype=np.float64)
        epoch_inertia = float(start["inertia"])
    while not converged and done < max_epochs * per_epoch:
        epoch, t = divmod(done, per_epoch)
        if t == 0:
            epoch_start, epoch_inertia = centers.copy(), 0.0
        rows = plan.local_rows(epoch, t)
        batch = np.take(X, rows, axis=0) if isinstance(X, np.ndarray) else X[rows]
        assign_with_statistics(buf, batch, centers, x_norms[rows],
                               None if sample_weight is None else sample_weight[rows])
        reducer.sum(buf)
        batch_counts = buf[k * d : k * d + k]
        hit = batch_counts > 0
        total = seen[hit] + batch_counts[hit]
        centers[hit] = ((centers[hit] * seen[hit, None] + buf[: k * d].reshape(k, d)[hit])
                        / total[:, None])
        seen[hit] = total
        epoch_inertia += float(buf[-1])
        done += 1
        if t == per_epoch - 1:
            converged = float(np.square(centers - epoch_start).sum()) <= tol_abs
        if on_iteration is not None:
            on_iteration({"centers": centers.copy(), "counts": seen.copy(), "iteration": done,
                          "inertia": epoch_inertia, "epoch_start_centers": epoch_start.copy(),
                          "converged": int(converged)})
    return centers, done, converged


def run_kmeans(run: RunContext, rows: RunData, centers=None) -> Fitted:
    """K-Means on ``rows`` as ``config.kmeans`` says, checkpointing after iterations (and
    under ``fault.mode: shrink`` carrying on from the agreed iteration after a rank's death).

    The initial centres: ``centers`` when given (an estimator's ``init`` array), else those of
    ``kmeans.init_file``, else seeded by ``kmeans.init``. Given centres are part of the
    checkpoint's identity (by digest): a resume with other centres is refused.
    """
    config = run.config
    cfg = config.kmeans
    shard = rows.shard
    if cfg.n_clusters > shard.n_total:  # before the run starts: known on every rank
        raise mark_raised_together(ValueError(
            f"kmeans.n_clusters={cfg.n_clusters} exceeds the {shard.n_total} rows of "
            f"{config.data.train}"))
    if centers is not None:
        centers = given_centers(centers, cfg.n_clusters, shard.n_features, run.comm)
    elif cfg.init_file:
        centers = read_init_file(cfg.init_file, cfg.n_clusters, shard.n_features, run.comm)
    fits = 1 if centers is not None else cfg.n_init
    total = cfg.max_iter * fits
    if cfg.batch_size is not None:  # mini-batch: max_iter epochs of batches
        total *= -(-shard.n_total // cfg.batch_size)
    given = {} if centers is None else {"init_centers": hashlib.sha256(centers.tobytes())
                                        .hexdigest()}
    rounds = Rounds(run, rows, identity("kmeans", rows, **given), total, describe=_describe)

    def fit(start: dict | None) -> Fitted:  # again from a later state after a shrink
        shard = rows.shard
        result = fit_kmeans(shard.X, cfg.n_clusters,
                            init=cfg.init if centers is None else centers, n_init=cfg.n_init,
                            max_iter=cfg.max_iter, tol=cfg.tol, seed=config.train.seed,
                            batch_size=cfg.batch_size, start=start,
                            on_iteration=rounds.after, reducer=run.reducer,
                            row_offset=shard.start, n_total=shard.n_total,
                            sample_weight=shard.w)
        rounds.finish()
        final = {"inertia": result.inertia, "converged": bool(result.converged)}
        if rows.test is not None:
            test = rows.test
            distances = assign(test.X, result.centers)[1]
            final["test_inertia"] = float(run.reducer.sum_over_rows(
                lambda lo, hi: np.array([distances[lo:hi].sum()]), test.n_local,
                test.n_total)[0])
        record = {"step": rounds.step, "inertia": result.inertia,
                  "converged": bool(result.converged)}
        if fits > 1:
            record.update(initialisation=result.initialisation, n_iter=result.n_iter)
        run.log(record)
        return Fitted({"centers": result.centers}, {"n_clusters": cfg.n_clusters},
                      result.n_iter, metrics=final)

    return rounds.carry_on(fit)


def _describe(state: dict) -> dict:
    """What a round's log line says besides its pace: the inertia, and which of n_init fits."""
    record = {"inertia": float(state["inertia"])}
    if "initialisation" in state:
        record["initialisation"] = int(state["initialisation"])
    return record
