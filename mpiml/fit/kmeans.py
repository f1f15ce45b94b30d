"""Distributed K-Means: k-means++ seeding, Lloyd iterations and a mini-batch variant.

Each rank holds its own rows (dense or CSR, e.g. from ``mpiml.data.load_shard(path, comm,
y=None)``). A Lloyd iteration assigns this rank's rows to the nearest centre and produces the
sufficient statistics of the update (:func:`mpiml.models.kmeans.cluster_statistics`) --
per-cluster sums and counts and the inertia -- packed into ONE flat buffer ``[sums (k*d) | counts
(k) | inertia (1)]`` and combined by ONE reduction; the new centres ``sums / counts`` are then
identical on every rank. Every decision that changes which collectives run next (convergence,
empty clusters, the end of an epoch) is taken on reduced or broadcast values only, so the ranks
never disagree on the sequence of collectives.

Every reduction goes through the run's :class:`mpiml.comm.Reducer`; with ``comm=MPI.COMM_SELF``
the same code is the serial algorithm. :func:`run_kmeans` runs it from a config, with the run's
checkpoints and stop requests (:mod:`mpiml.fit.rounds`).
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..comm import Reducer, allgather_object, broadcast, broadcast_object, mark_raised_together
from ..data.batches import BatchPlan
from ..data.run_rows import RunData
from ..models.base import check_positive_int
from ..models.kmeans import assign, cluster_statistics, row_norms, statistics_size
from ..run.context import RunContext
from .layout import RowLayout
from .result import Fitted
from .rounds import Rounds, identity

#: Integer weights of k-means++ sum to at most 2**62: exact int64 prefix sums at any rank count.
_WEIGHT_TOTAL = float(2**62)


@dataclass
class KMeansResult:
    """What :func:`fit_kmeans` produced. ``labels`` are this rank's rows; all else is identical
    on every rank. ``inertia`` is the sum of squared distances of all rows to their final centre;
    ``n_iter`` counts Lloyd iterations (mini-batch: batches)."""

    centers: np.ndarray
    inertia: float
    n_iter: int
    labels: np.ndarray
    converged: bool


def _dense_row(X, row: int) -> np.ndarray:
    return np.asarray(X[row].toarray()[0] if sp.issparse(X) else X[row], dtype=np.float64)


def _fetch_row(X, layout: RowLayout, global_row: int, reducer) -> np.ndarray:
    """Global row ``global_row`` as float64 on every rank, broadcast by the rank that owns it."""
    owner = layout.owner(global_row)
    row = np.empty(X.shape[1], dtype=np.float64)
    if owner == layout.rank:
        row[:] = _dense_row(X, global_row - layout.start)
    return broadcast(row, reducer.comm, root=owner)


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

    moments = reducer.sum_over_rows(rows_moments, X.shape[0], layout.n_total)
    mean = moments[:d] / layout.n_total
    variance = np.maximum(moments[d:] / layout.n_total - mean * mean, 0.0)
    return float(tol * variance.mean())


def _kmeans_plusplus(X, x_norms, layout: RowLayout, k: int, seed: int, reducer) -> np.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii), the same centres at any rank count.

    The first centre is a uniformly drawn global row; each next one is row i with probability
    ``D(x_i)^2 / sum_j D(x_j)^2`` (D = distance to the nearest centre chosen so far). To make the
    draw independent of the partition, every ``D^2`` is rounded down to an integer weight
    ``floor(D^2 * 2^62 / (N max D^2))``: the integer sums are exact in any order, so the global
    draw ``u`` (one RNG seeded identically on every rank) falls in the same row whether the
    prefix sums are split over 1 or p ranks. The owning rank is found from the allgathered
    per-rank sums (exclusive prefix in rank order); it picks its row from its local cumulative
    sum and broadcasts it. If every weight is 0 (fewer distinct rows than centres), the row is
    drawn uniformly.
    """
    rng = np.random.default_rng(seed)
    centers = np.empty((k, X.shape[1]), dtype=np.float64)
    centers[0] = _fetch_row(X, layout, int(rng.integers(layout.n_total)), reducer)
    closest = assign(X, centers[:1], x_norms)[1]
    largest = np.empty(1)
    for c in range(1, k):
        largest[0] = closest.max(initial=0.0)
        reducer.max(largest)
        scale = _WEIGHT_TOTAL / (layout.n_total * largest[0]) if largest[0] > 0 else 0.0
        weights = np.floor(closest * scale).astype(np.int64)
        cumulative = np.cumsum(weights)
        local_totals = allgather_object(int(cumulative[-1]) if len(weights) else 0,
                                        reducer.comm)
        total = sum(local_totals)
        if total == 0:
            chosen = int(rng.integers(layout.n_total))
        else:
            u = int(rng.integers(total))
            prefix = np.cumsum([0, *local_totals])
            owner = int(np.searchsorted(prefix, u, side="right") - 1)
            chosen = -1
            if owner == layout.rank:
                local = int(np.searchsorted(cumulative, u - prefix[owner], side="right"))
                chosen = layout.start + local
            chosen = int(broadcast_object(chosen, reducer.comm, root=owner))
        centers[c] = _fetch_row(X, layout, chosen, reducer)
        np.minimum(closest, assign(X, centers[c : c + 1], x_norms)[1], out=closest)
    return centers


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
        centers[cluster] = _fetch_row(X, layout, row, reducer)
        if layout.owner(row) == layout.rank:
            distances[row - layout.start] = -np.inf


def _initial_centers(init, X, x_norms, layout, k, seed, reducer) -> np.ndarray:
    if isinstance(init, str):
        if init != "k-means++":
            raise ValueError(f"init must be 'k-means++' or an array of shape (k, d); got {init!r}")
        return _kmeans_plusplus(X, x_norms, layout, k, seed, reducer)
    centers = np.array(init, dtype=np.float64)
    if centers.shape != (k, X.shape[1]):
        raise ValueError(f"init centres must have shape ({k}, {X.shape[1]}); "
                         f"got {centers.shape}")
    return centers


def _check_arguments(X, n_clusters, max_iter, tol, batch_size) -> None:
    if not (sp.issparse(X) or isinstance(X, np.ndarray)) or X.ndim != 2:
        raise ValueError(f"X must be a 2-D numpy array or a CSR matrix; got {type(X).__name__}")
    check_positive_int("n_clusters", n_clusters)
    check_positive_int("max_iter", max_iter)
    if batch_size is not None:
        check_positive_int("batch_size (None for Lloyd)", batch_size)
    if not isinstance(tol, numbers.Real) or not 0.0 <= tol < np.inf:
        raise ValueError(f"tol must be a finite number >= 0; got {tol!r}")


def fit_kmeans(X, n_clusters: int, comm=None, *, init="k-means++", max_iter: int = 300,
               tol: float = 1e-4, seed: int = 0, batch_size: int | None = None,
               start: dict | None = None, on_iteration=None, reducer: Reducer | None = None,
               row_offset: int | None = None, n_total: int | None = None) -> KMeansResult:
    """Cluster the rows of all ranks into ``n_clusters``. Collective: call on every rank.

    ``X`` is this rank's rows (dense or CSR), rows of rank r before those of rank r+1;
    ``row_offset`` (``shard.start``) and ``n_total`` are checked against that order when given.
    ``init`` is ``"k-means++"`` (distributed, see :func:`_kmeans_plusplus`) or initial centres
    ``(k, d)``.

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

    ``start`` (a state from ``on_iteration``) resumes; on the same rank count the result equals
    the uninterrupted run bit for bit. ``reducer`` (default ``Reducer(comm)``) makes every
    reduction: its algorithm, and with ``block_rows > 1`` (reproducible mode, Lloyd only; each
    rank's rows start on a block boundary) exact sums per block of global rows, so the result
    has the same bits on any number of ranks.
    """
    _check_arguments(X, n_clusters, max_iter, tol, batch_size)
    reducer = Reducer(comm) if reducer is None else reducer
    if reducer.reproducible and batch_size is not None:
        raise ValueError("reproducible K-Means supports Lloyd iterations only (batch_size=None)")
    layout = RowLayout(X, reducer.comm, row_offset, n_total, "fit_kmeans")
    k, d = int(n_clusters), X.shape[1]
    if k > layout.n_total:
        raise mark_raised_together(ValueError(  # the global row count: known on every rank
            f"n_clusters={k} exceeds the {layout.n_total} rows"))
    x_norms = row_norms(X)
    tol_abs = _scaled_tolerance(X, layout, tol, reducer)
    if start is None:
        centers = _initial_centers(init, X, x_norms, layout, k, seed, reducer)
    else:
        centers = np.array(start["centers"], dtype=np.float64)
        if centers.shape != (k, d):
            raise ValueError(f"start['centers'] must have shape ({k}, {d}); got {centers.shape}")
    if batch_size is None:
        centers, n_iter, converged = _lloyd(X, x_norms, centers, layout, max_iter, tol_abs, start,
                                            on_iteration, reducer)
    else:
        centers, n_iter, converged = _minibatch(X, x_norms, centers, layout, max_iter, tol_abs,
                                                batch_size, seed, start, on_iteration, reducer)
    labels, distances = assign(X, centers, x_norms)
    inertia = reducer.sum_over_rows(lambda lo, hi: np.array([distances[lo:hi].sum()]),
                                    X.shape[0], layout.n_total)
    if not converged and layout.rank == 0:
        warnings.warn(f"K-Means did not converge in {max_iter} "
                      f"{'iterations' if batch_size is None else 'epochs'} (tol={tol})",
                      RuntimeWarning, stacklevel=2)
    return KMeansResult(centers, float(inertia[0]), n_iter, labels, converged)


def _lloyd(X, x_norms, centers, layout, max_iter, tol_abs, start, on_iteration, reducer):
    """Lloyd iterations from ``centers``; returns (centers, iterations done, converged)."""
    k, d = centers.shape
    done = 0 if start is None else int(start["iteration"])
    converged = start is not None and bool(start["converged"])
    while not converged and done < max_iter:
        labels, distances = assign(X, centers, x_norms)

        def statistics(lo, hi, labels=labels, distances=distances):
            part = np.empty(statistics_size(k, d))
            cluster_statistics(part, X[lo:hi], labels[lo:hi], distances[lo:hi])
            return part

        totals = reducer.sum_over_rows(statistics, X.shape[0], layout.n_total)
        counts = totals[k * d : k * d + k]
        updated = totals[: k * d].reshape(k, d) / np.maximum(counts, 1.0)[:, None]
        if not counts.all():
            _reseed_empty(updated, counts, X, distances, layout, reducer)
        shift = float(np.square(updated - centers).sum())
        centers, done, converged = updated, done + 1, shift <= tol_abs
        if on_iteration is not None:
            on_iteration({"centers": centers.copy(), "iteration": done,
                          "inertia": float(totals[-1]), "converged": int(converged)})
    return centers, done, converged


def _minibatch(X, x_norms, centers, layout, max_epochs, tol_abs, batch_size, seed, start,
               on_iteration, reducer):
    """Mini-batch K-Means over the global batch order; returns (centers, batches, converged)."""
    k, d = centers.shape
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
        batch = X[rows] if sp.issparse(X) else np.take(X, rows, axis=0)
        labels, distances = assign(batch, centers, x_norms[rows])
        cluster_statistics(buf, batch, labels, distances)
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


def run_kmeans(run: RunContext, rows: RunData) -> Fitted:
    """K-Means on ``rows`` as ``config.kmeans`` says, checkpointing after iterations."""
    config = run.config
    cfg = config.kmeans
    if cfg.n_clusters > rows.shard.n_total:  # before the run starts: known on every rank
        raise mark_raised_together(ValueError(
            f"kmeans.n_clusters={cfg.n_clusters} exceeds the {rows.shard.n_total} rows of "
            f"{config.data.train}"))
    total = cfg.max_iter
    if cfg.batch_size is not None:  # mini-batch: max_iter epochs of batches
        total *= -(-rows.shard.n_total // cfg.batch_size)
    rounds = Rounds(run, rows, identity("kmeans", rows), total,
                    describe=lambda state: {"inertia": float(state["inertia"])})
    result = fit_kmeans(rows.shard.X, cfg.n_clusters, max_iter=cfg.max_iter, tol=cfg.tol,
                        seed=config.train.seed, batch_size=cfg.batch_size,
                        start=rounds.start_state(), on_iteration=rounds.after,
                        reducer=run.reducer, row_offset=rows.shard.start,
                        n_total=rows.shard.n_total)
    rounds.finish()
    final = {"inertia": result.inertia, "converged": bool(result.converged)}
    if rows.test is not None:
        test = rows.test
        distances = assign(test.X, result.centers)[1]
        final["test_inertia"] = float(run.reducer.sum_over_rows(
            lambda lo, hi: np.array([distances[lo:hi].sum()]), test.n_local, test.n_total)[0])
    run.log({"step": result.n_iter, "inertia": result.inertia,
             "converged": bool(result.converged)})
    return Fitted({"centers": result.centers}, {"n_clusters": cfg.n_clusters}, result.n_iter,
                  metrics=final)
