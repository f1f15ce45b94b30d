"""Run K-Means and boosted trees from a config, with the same data loading, checkpoints, signal
stops, evaluation and outputs as the gradient trainer. Their fit loops live in
:mod:`mpiml.kmeans` and :mod:`mpiml.hgbt`; this module connects them to a run.

Both loops call back after every iteration (K-Means) or boosting round (trees) with their complete
resumable state. The callback agrees, in one 2-value allreduce, whether a stop signal arrived on
any rank and whether a time-based checkpoint is due, then rank 0 writes the state as a checkpoint
(``state/*`` arrays); on a stop, every rank exits with the reserved code. A resumed run passes the
saved state back as the loop's ``start`` and continues bit-identically on the same rank count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import collectives
from .config import Config, block_rows
from .modelio import SavedModel
from .recovery import Recovery
from .rundata import RunData, evaluate, load_run_data
from .trainer import StoppedAfterCheckpoint

STATE = "state/"


@dataclass
class RunOutcome:
    """What a K-Means or boosted-tree run produced; identical on every rank."""

    saved: SavedModel
    steps: int
    final_metrics: dict = field(default_factory=dict)
    stopped_early: bool = False


class _Run:
    """Checkpoint/resume/stop plumbing around one iterative fit."""

    def __init__(self, config: Config, comm, log, stop, fault, resume, watchdog, identity):
        self.config, self.comm, self.log = config, comm, log
        self.stop, self.resume_spec, self.watchdog, self.fault = stop, resume, watchdog, fault
        self.identity = identity
        self.recovery = Recovery(config, comm, log, fault)
        self.step = 0
        self.state: dict | None = None

    def start_state(self) -> dict | None:
        """The saved state to resume from (0-d arrays back to Python numbers), or None."""
        found = self.recovery.resume(self.resume_spec, expected=self.identity)
        if found is None:
            return None
        self.step = self.recovery.last_step = found.step
        return {name[len(STATE):]: value.item() if value.ndim == 0 and name != STATE + "task"
                else value for name, value in found.arrays.items() if name.startswith(STATE)}

    def on_iteration(self, state: dict) -> None:
        self.step += 1
        self.state = state
        if self.watchdog is not None:
            self.watchdog.beat(self.step)
        if self.fault is not None and self.fault.due("before_allreduce", self.step,
                                                     self.comm.Get_rank()):
            self.fault.fire()
        stop = float(self.stop is not None and self.stop.requested)
        votes = collectives.allreduce(np.array([stop, self.recovery.time_vote()]), self.comm)
        if votes[0] > 0 or self.recovery.due(self.step, votes[1]):
            self.save()
        if votes[0] > 0:
            from .spmd import EXIT_STOPPED

            self.log({"event": "stopped", "step": self.step,
                      "signal": getattr(self.stop, "signal_name", ""),
                      "checkpoint": str(self.recovery.directory)})
            raise StoppedAfterCheckpoint(EXIT_STOPPED)

    def save(self) -> None:
        arrays = {STATE + name: np.asarray(value) for name, value in self.state.items()}
        self.recovery.save(self.step, arrays, dict(self.identity, epoch=0, batch=0))

    def finish(self) -> None:
        if (self.config.checkpoint.at_end and self.state is not None
                and self.recovery.last_step != self.step):
            self.save()


def _identity(kind: str, run: RunData) -> dict:
    classes = [] if run.classes is None else np.asarray(run.classes).tolist()
    return {"model_kind": kind, "n_features": int(run.shard.n_features), "classes": classes}


def run_kmeans(config: Config, comm=None, log=None, stop=None, fault=None, resume=None,
               watchdog=None, run_data: RunData | None = None) -> RunOutcome:
    """K-Means on ``data.train`` (or ``run_data``) as ``config.kmeans`` says; checkpoints
    every iteration when due."""
    from .kmeans import assign, fit_kmeans

    comm = collectives.world(comm)
    log = log or (lambda record: None)
    run = run_data or load_run_data(config, comm, "unsupervised")
    plumbing = _Run(config, comm, log, stop, fault, resume, watchdog,
                    _identity("kmeans", run))
    cfg = config.kmeans
    result = fit_kmeans(run.shard.X, cfg.n_clusters, comm, max_iter=cfg.max_iter, tol=cfg.tol,
                        seed=config.train.seed, batch_size=cfg.batch_size,
                        start=plumbing.start_state(), on_iteration=plumbing.on_iteration,
                        algorithm=config.comm.algorithm, ring_threshold=config.comm.ring_threshold,
                        row_offset=run.shard.start, n_total=run.shard.n_total,
                        block_rows=block_rows(config))
    plumbing.finish()
    final = {"inertia": result.inertia, "converged": bool(result.converged)}
    if run.test is not None:
        test_inertia = np.array([assign(run.test.X, result.centers)[1].sum()])
        final["test_inertia"] = float(collectives.allreduce(test_inertia, comm)[0])
    saved = SavedModel("kmeans", run.shard.n_features, {"centers": result.centers},
                       {"n_clusters": cfg.n_clusters}, scaler=run.scaler)
    log({"step": result.n_iter, "inertia": result.inertia, "converged": bool(result.converged)})
    return RunOutcome(saved, result.n_iter, final)


def run_hgbt(config: Config, comm=None, log=None, stop=None, fault=None, resume=None,
             watchdog=None, run_data: RunData | None = None) -> RunOutcome:
    """Boosted trees on ``data.train`` (or ``run_data``) as ``config.hgbt`` says; checkpoints
    after trees."""
    from . import hgbt

    comm = collectives.world(comm)
    log = log or (lambda record: None)
    kind = config.model.kind
    run = run_data or load_run_data(config, comm, "multiclass" if kind == "hgbt_classifier"
                                    else "regression")
    task = "regression" if kind == "hgbt_regressor" else (
        "binary" if run.n_classes == 2 else "multiclass")
    plumbing = _Run(config, comm, log, stop, fault, resume, watchdog, _identity(kind, run))
    cfg = config.hgbt
    result = hgbt.fit_hgbt(run.shard.X, run.shard.y, comm, task=task, n_classes=run.n_classes,
                           n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
                           max_depth=cfg.max_depth, min_samples_leaf=cfg.min_samples_leaf,
                           l2=cfg.l2, max_bins=cfg.max_bins, row_offset=run.shard.start,
                           n_total=run.shard.n_total, seed=config.train.seed,
                           start=plumbing.start_state(), on_tree=plumbing.on_iteration,
                           algorithm=config.comm.algorithm,
                           ring_threshold=config.comm.ring_threshold)
    plumbing.finish()

    def reduce(stats):
        return collectives.allreduce(stats, comm)

    final = evaluate(run, lambda X: hgbt.predict(result.model, X),
                     lambda X: hgbt.predict_proba(result.model, X), reduce)
    final["train_loss"] = result.train_loss
    saved = SavedModel(kind, run.shard.n_features, result.model, {}, n_classes=run.n_classes,
                       classes=run.classes, scaler=run.scaler)
    log({"step": result.n_rounds, "train_loss": result.train_loss, "test": final})
    return RunOutcome(saved, result.n_rounds, final)
