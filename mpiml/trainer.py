"""The gradient training loop for the linear models: sync, overlap and local-SGD modes, and L-BFGS.

One step: this rank's rows of global batch t -> ``model.loss_grad_sum`` into one fused buffer
``[grad_sum | loss_sum | n_rows | stop_votes | checkpoint_votes]`` -> one allreduce -> divide by
the GLOBAL row count, add the penalty once -> ``optimizer.update``, identical on every rank. The
two vote slots carry "a stop signal arrived here" and "my clock says a checkpoint is due", so those
decisions are agreed without any extra collective. Every branch that decides whether a collective
is called (steps per epoch, evaluation, checkpoints, early stopping, stop) depends only on the
configuration or on reduced values, so ranks never disagree on how many collectives they call.

Communication modes (``comm.mode``):

* ``sync``: the step above; p ranks compute what one rank would (up to summation order).
* ``overlap``: the allreduce of step t's gradient runs while step t+1's gradient is computed, and
  the update at step t+1 applies the gradient of step t: every update is one step stale (the
  allreduce counterpart of asynchronous parameter-server SGD, with bounded staleness 1).
* ``local_sgd``: each rank updates its own replica from its rows of each global batch (mean over
  its rows) for ``comm.local_steps`` steps; then replicas and optimizer states are averaged,
  weighted by shard size. Checkpoints are taken at those averages, where replicas agree.

The loop position (step, epoch, next batch, early-stopping state, epoch loss from reduced values)
is plain data, saved with the parameters and optimizer state; resuming restores all of it, so a
resumed run in sync mode ends bit-identical to one never interrupted (same rank count).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from . import collectives, data
from .checkpoint import Checkpoint
from .config import Config, block_rows
from .exactsum import exact_sum
from .models import make_model
from .optim import lbfgs, make_optimizer, make_schedule
from .recovery import Recovery
from .rundata import evaluate, load_run_data

TASKS = {"linear": "regression", "logistic": "binary", "svm": "binary", "softmax": "multiclass",
         "mlp_classifier": "multiclass", "mlp_regressor": "regression"}
DEFAULT_LBFGS_ITERATIONS = 500
CONTROL_SLOTS = 4  # loss_sum, n_rows, stop votes, checkpoint votes


class NonFiniteError(FloatingPointError):
    """The loss or the parameters stopped being finite; raised on every rank together."""


class ReplicaDivergenceError(RuntimeError):
    """Ranks hold different parameters although they must be identical."""


class StoppedAfterCheckpoint(SystemExit):
    """A stop signal was agreed; a checkpoint was written; every rank exits with ``code``."""

    raised_on_all_ranks = True


@dataclass
class Progress:
    """Where the loop is: saved in every checkpoint, identical on every rank."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best: float = math.inf
    bad_evals: int = 0
    epoch_loss: np.ndarray = field(default_factory=lambda: np.zeros(2))  # reduced [sum, rows]
    finished: bool = False
    stopped_early: bool = False

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"progress/epoch_loss": self.epoch_loss.copy(),
                "progress/best": np.array(self.best)}

    def to_meta(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "bad_evals": self.bad_evals,
                "finished": self.finished, "stopped_early": self.stopped_early}

    @classmethod
    def restore(cls, found: Checkpoint) -> Progress:
        meta, arrays = found.meta, found.arrays
        return cls(step=found.step, epoch=int(meta["epoch"]), batch=int(meta["batch"]),
                   best=float(arrays["progress/best"]), bad_evals=int(meta["bad_evals"]),
                   epoch_loss=np.array(arrays["progress/epoch_loss"], dtype=np.float64),
                   finished=bool(meta["finished"]), stopped_early=bool(meta["stopped_early"]))


@dataclass
class TrainResult:
    """What a training run produced; identical on every rank."""

    model: object
    params: np.ndarray
    classes: np.ndarray | None
    steps: int
    epochs_done: int
    stopped_early: bool
    final_metrics: dict = field(default_factory=dict)
    scaler: tuple | None = None


class _Clock:
    """Seconds spent computing vs communicating, and bytes reduced (for metrics.jsonl)."""

    def __init__(self):
        self.compute = self.communicate = 0.0
        self.bytes_reduced = 0
        self._mark = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self._mark = now - self._mark, now
        return elapsed


class Trainer:
    """Trains one linear model from a checked :class:`Config` on the ranks of ``comm``.

    ``log`` receives one dict per record (rank 0 writes them to metrics.jsonl). ``stop`` is an
    object with a boolean ``requested`` attribute (see :mod:`mpiml.signals`); ``fault`` a
    :class:`mpiml.faults.Fault` to inject; ``resume`` overrides ``checkpoint.resume``.
    """

    def __init__(self, config: Config, comm=None, log=None, stop=None, fault=None,
                 resume: str | None = None, watchdog=None, run_data=None):
        """``watchdog``: a :class:`mpiml.watchdog.StallWatchdog` to beat every step.
        ``run_data``: rows already in memory (:func:`mpiml.rundata.from_arrays`) instead of
        ``config.data``."""
        self._given_data = run_data
        self.config = config
        self.comm = collectives.world(comm)
        self.log = log or (lambda record: None)
        self.stop = stop
        self.fault = fault
        self.resume_spec = resume
        self.watchdog = watchdog
        self.rank = self.fault_rank = self.comm.Get_rank()  # fault_rank: the rank at start
        self._watch_step = 0
        self.block = block_rows(config)
        self.shrink = config.fault.mode == "shrink" and self._make_fault_tolerant()
        self._load_data()
        self._build_model()
        self.recovery = Recovery(config, self.comm, self.log, fault)

    # -- set-up ----------------------------------------------------------------------------

    def _make_fault_tolerant(self) -> bool:
        """fault.mode shrink: train on a communicator on which a dead rank raises RankFailure
        (ULFM). Without ULFM, say so and keep the restart behaviour."""
        if not collectives.ulfm_available():
            self.log({"event": "shrink_unavailable", "fallback": "restart",
                      "reason": "fault.mode shrink needs Open MPI started with "
                                "`mpirun --with-ft ulfm`"})
            return False
        self.comm = collectives.fault_tolerant(self.comm)
        self._alive = set(range(self.comm.Get_size()))
        self._snapshots: dict[int, tuple] = {}
        return True

    def _load_data(self) -> None:
        self.task = TASKS[self.config.model.kind]
        self.run_data = self._given_data or load_run_data(self.config, self.comm, self.task)
        self.shard, self.test = self.run_data.shard, self.run_data.test
        self.classes, self.scaler = self.run_data.classes, self.run_data.scaler

    def _build_model(self) -> None:
        cfg = self.config.model
        if cfg.kind.startswith("mlp_"):
            options = dict(hidden=cfg.hidden, activation=cfg.activation, alpha=cfg.alpha)
        else:
            options = dict(fit_intercept=cfg.fit_intercept, alpha=cfg.alpha,
                           l1_ratio=cfg.l1_ratio)
        if cfg.kind == "svm":
            options["loss"] = cfg.loss
        n_classes = len(self.classes) if self.classes is not None else 2
        self.model = make_model(cfg.kind, self.shard.n_features, n_classes=n_classes, **options)
        self.params = self.model.init_params(self.config.train.seed)
        if cfg.init_from:
            self.params = self._warm_start(cfg.init_from)

    def _warm_start(self, path) -> np.ndarray:
        """Parameters of a saved model (rank 0 reads, all receive) after checking that it is the
        same kind of model on the same features and classes."""
        from .modelio import load_model

        params, error = None, None
        if self.rank == 0:
            try:
                saved = load_model(path)
                problems = []
                if saved.kind != self.model.kind:
                    problems.append(f"kind {saved.kind} (config: {self.model.kind})")
                if saved.n_features != self.model.n_features:
                    problems.append(f"{saved.n_features} features "
                                    f"(data: {self.model.n_features})")
                if (self.classes is not None and (saved.classes is None or not np.array_equal(
                        saved.classes, self.classes))):
                    problems.append(f"classes {saved.classes} (data: {self.classes})")
                if not problems and saved.params.shape != self.params.shape:
                    problems.append(f"{saved.params.size} parameters (config: "
                                    f"{self.params.size}; options {saved.options})")
                if problems:
                    raise ValueError(f"model.init_from {path} does not match this run: "
                                     + "; ".join(problems))
                params = saved.params
            except (OSError, ValueError, KeyError) as exc:
                error = exc
        collectives.raise_together(error, self.comm)
        return collectives.broadcast_object(params, self.comm)

    def _optimizer(self):
        cfg = self.config.optimizer
        schedule = make_schedule(cfg.schedule, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                 step_size=cfg.step_size, gamma=cfg.gamma,
                                 total_steps=self.total_steps, power=cfg.power, min_lr=cfg.min_lr)
        options = {}
        if cfg.name in ("momentum", "nesterov"):
            options["momentum"] = cfg.momentum
        elif cfg.name == "adam":
            options.update(beta1=cfg.beta1, beta2=cfg.beta2)
        return make_optimizer(cfg.name, schedule, **options)

    # -- the pieces every mode shares ------------------------------------------------------

    def _allreduce(self, buf: np.ndarray) -> np.ndarray:
        if self.watchdog is not None:
            self.watchdog.beat(self._watch_step, in_collective=True)
        self._clock.compute += self._clock.lap()
        collectives.allreduce(buf, self.comm, algorithm=self.config.comm.algorithm,
                              ring_threshold=self.config.comm.ring_threshold, validate=False)
        self._clock.communicate += self._clock.lap()
        self._clock.bytes_reduced += buf.nbytes
        if self.watchdog is not None:
            self.watchdog.beat(self._watch_step)
        return buf

    def _local_sums(self, params, rows, out: np.ndarray, step: int) -> None:
        """Fill ``out`` = [grad_sum | loss_sum | n_rows | stop | checkpoint] for this rank's
        ``rows`` of the current batch (None = all its rows)."""
        n = self.model.n_params
        self._watch_step = step
        X, y = (self.shard.X, self.shard.y) if rows is None else self.shard.batch(rows)
        out[n] = self.model.loss_grad_sum(params, X, y, out[:n])
        out[n + 1] = X.shape[0]
        out[n + 2] = float(self.stop is not None and self.stop.requested)
        out[n + 3] = self.recovery.time_vote()
        if self.fault is not None and self.fault.due("before_allreduce", step, self.fault_rank):
            action = self.fault.fire()
            if action == "nan":
                out[:n] = np.nan
            elif action == "diverge":
                self.params[0] += 1.0

    def _reduced_sums(self, params, rows, out: np.ndarray, progress: Progress) -> None:
        """``out`` = the step's [grad_sum | loss_sum | n_rows | votes] over all ranks: one fused
        allreduce, or in reproducible mode exact block sums (``rows`` are then block indices)."""
        if self.block == 1:
            self._local_sums(params, rows, out, progress.step)
            self._allreduce(out)
            return
        n = self.model.n_params
        if rows is None:
            rows = np.arange(self.plan.stop - self.plan.start)
            n_blocks = self.plan.n_total
        else:
            n_blocks = self.plan.batch_rows(progress.batch)
        self._watch_step = progress.step
        vectors = []
        for block in rows:
            lo = block * self.block
            hi = min(lo + self.block, self.shard.n_local)
            vector = np.empty(n + 2)
            vector[n] = self.model.loss_grad_sum(params, self.shard.X[lo:hi],
                                                 self.shard.y[lo:hi], vector[:n])
            vector[n + 1] = hi - lo
            vectors.append(vector)
        votes = np.array([float(self.stop is not None and self.stop.requested),
                          self.recovery.time_vote()])
        if self.fault is not None and self.fault.due("before_allreduce", progress.step,
                                                     self.fault_rank):
            if self.fault.fire() == "nan" and vectors:
                vectors[0][:n] = np.nan
        if self.watchdog is not None:
            self.watchdog.beat(progress.step, in_collective=True)
        self._clock.compute += self._clock.lap()
        out[:n + 2], out[n + 2:] = exact_sum(vectors, n + 2, n_blocks, self.comm, votes,
                                             self.config.comm.algorithm,
                                             self.config.comm.ring_threshold)
        self._clock.communicate += self._clock.lap()
        self._clock.bytes_reduced += 2 * out.nbytes
        if self.watchdog is not None:
            self.watchdog.beat(progress.step)

    def _objective_from_sums(self, sums: np.ndarray, params, grad_out: np.ndarray) -> float:
        """Mean loss + penalty from reduced sums; the full gradient into ``grad_out``."""
        n = self.model.n_params
        count = sums[n + 1]
        penalty, penalty_grad = self.model.penalty(params)
        np.divide(sums[:n], count, out=grad_out)
        grad_out += penalty_grad
        return float(sums[n] / count + penalty + self.model.l1_penalty(params))

    def evaluate(self, params=None) -> dict[str, float]:
        """Metrics on the test set (collective; identical on every rank). Empty without one."""
        params = self.params if params is None else params
        if hasattr(self.model, "predict_proba"):
            def proba(X):
                return self.model.predict_proba(params, X)
        else:
            def proba(X):
                # linear SVM: no probabilities. A sigmoid of the margin ranks rows exactly as
                # the margin does (so ROC-AUC is right) and predicts the same class.
                positive = expit(self.model.decision_function(params, X))
                return np.column_stack([1.0 - positive, positive])
        result = evaluate(self.run_data, lambda X: self.model.predict(params, X), proba,
                          self._allreduce, block=self.block, comm=self.comm)
        if not hasattr(self.model, "predict_proba"):
            result.pop("log_loss", None)  # the sigmoid of a margin is no probability
        return result

    @staticmethod
    def _score(evaluation: dict[str, float], train_objective: float) -> float:
        """Lower is better: held-out log-loss or RMSE, else the training objective."""
        for key in ("log_loss", "rmse"):
            if key in evaluation:
                return evaluation[key]
        return train_objective

    # -- guards ------------------------------------------------------------------------------

    def _check_finite(self, objective: float, step: int, grad=None) -> None:
        """Stop on a non-finite loss, gradient or parameters (all identical on every rank, so
        every rank raises together); the last checkpoint, written before, stays the good one."""
        if not math.isfinite(objective):
            what = "loss"
        elif grad is not None and not np.isfinite(grad).all():
            what = "gradient"
        elif not np.isfinite(self.params).all():
            what = "parameters"
        else:
            return
        error = NonFiniteError(
            f"non-finite {what} at step {step} (loss {objective}); the last checkpoint in "
            f"{self.recovery.directory} is from before it. Lower optimizer.lr, add "
            "model.alpha, or check the data.")
        error.raised_on_all_ranks = True
        raise error

    def _check_replicas(self, step: int) -> None:
        """Every ``fault.check_every`` steps: compare a hash of the parameters across ranks
        (local_sgd: only at the steps where replicas were just averaged)."""
        every = self.config.fault.check_every
        if every is None or step % every:
            return
        digest = hashlib.blake2b(self.params.tobytes(), digest_size=16).hexdigest()
        digests = collectives.allgather_object(digest, self.comm)
        if len(set(digests)) > 1:
            diverged = [r for r, d in enumerate(digests) if d != digests[0]]
            error = ReplicaDivergenceError(
                f"parameters differ across ranks at step {step}: ranks {diverged} differ from "
                "rank 0 (a hardware fault, or code that made ranks take different paths)")
            error.raised_on_all_ranks = True
            raise error

    # -- checkpoints -------------------------------------------------------------------------

    def _checkpoint(self, progress: Progress, state: dict, pending_sums=None) -> None:
        arrays = {"params": self.params, **progress.to_arrays()}
        arrays.update({f"opt/{name}": np.asarray(value) for name, value in state.items()})
        if pending_sums is not None:
            arrays["pending"] = pending_sums
        meta = dict(progress.to_meta(), **self._identity())
        if self.watchdog is not None:
            self.watchdog.beat(progress.step)
        self.recovery.save(progress.step, arrays, meta)
        if self.fault is not None and self.fault.due("after_checkpoint", progress.step,
                                                     self.fault_rank):
            self.fault.fire()

    def _identity(self) -> dict:
        """What a checkpoint must agree with to be resumed into this model."""
        classes = [] if self.classes is None else np.asarray(self.classes).tolist()
        return {"model_kind": self.model.kind, "n_params": int(self.model.n_params),
                "n_features": int(self.model.n_features), "classes": classes}

    def _restore(self, state: dict) -> tuple[Progress, np.ndarray | None]:
        """Resume from a checkpoint if there is one: parameters and optimizer ``state`` (filled
        in place), the loop position, and overlap mode's reduction in flight."""
        found = self.recovery.resume(self.resume_spec, expected=self._identity())
        if found is None:
            return Progress(), None
        self.params = np.array(found.arrays["params"], dtype=np.float64)
        for name in state:
            state[name] = np.array(found.arrays[f"opt/{name}"])
        self.recovery.last_step = found.step
        return Progress.restore(found), found.arrays.get("pending")

    # -- the loops ---------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        cfg = self.config.train
        per_epoch = self.plan.n_batches(0) if cfg.batch_size else 1
        steps = per_epoch * cfg.epochs
        return min(steps, cfg.max_steps) if cfg.max_steps else steps

    def _make_plan(self) -> data.BatchPlan:
        """The global batch order for this rank's rows (of whole blocks in reproducible mode)."""
        cfg = self.config.train
        if self.block > 1:
            n_blocks = -(-self.shard.n_total // self.block)
            per_batch = cfg.batch_size // self.block if cfg.batch_size else n_blocks
            return data.BatchPlan(n_blocks, per_batch, cfg.seed, self.shard.start // self.block,
                                  -(-self.shard.stop // self.block))
        return data.BatchPlan(self.shard.n_total, cfg.batch_size or self.shard.n_total,
                              cfg.seed, self.shard.start, self.shard.stop)

    def fit(self) -> TrainResult:
        self.plan = self._make_plan()
        self._clock = _Clock()
        self._last_objective, self._last_lr = math.nan, 0.0
        if self.config.optimizer.name == "lbfgs":
            return self._fit_lbfgs()
        return self._fit_first_order()

    def _fit_first_order(self) -> TrainResult:
        cfg, mode = self.config.train, self.config.comm.mode
        optimizer = self._optimizer()
        state = optimizer.init(self.params)
        progress, pending_sums = self._restore(state)
        n = self.model.n_params
        sums = np.zeros(n + CONTROL_SLOTS)
        in_flight = np.zeros(n + CONTROL_SLOTS)
        grad = np.empty(n)
        pending = None
        if pending_sums is not None:  # overlap: the reduction that was in flight, completed
            sums[:] = pending_sums
            pending = collectives.PendingAllreduce(sums)
        self._local_loss, self._local_votes = np.zeros(2), np.zeros(2)
        while not progress.finished:
            if self.shrink:
                self._remember(progress, state)
            try:
                rows = None if cfg.batch_size is None else self.plan.local_rows(progress.epoch,
                                                                                progress.batch)
                votes = None  # reduced [stop, checkpoint] votes seen at this step
                if mode == "sync":
                    self._reduced_sums(self.params, rows, sums, progress)
                    progress.epoch_loss += sums[n:n + 2]
                    self._apply(sums, grad, optimizer, state, progress.step)
                    votes = sums[n + 2:]
                elif mode == "overlap":
                    self._local_sums(self.params, rows, in_flight, progress.step)
                    if pending is not None:
                        self._wait(pending)
                        progress.epoch_loss += sums[n:n + 2]
                        self._apply(sums, grad, optimizer, state, progress.step)
                        votes = sums[n + 2:].copy()
                    sums, in_flight = in_flight, sums
                    pending = collectives.start_allreduce(
                        sums, self.comm, algorithm=self.config.comm.algorithm,
                        ring_threshold=self.config.comm.ring_threshold)
                else:
                    self._local_step(rows, sums, grad, optimizer, state, progress)
                    if (progress.step + 1) % self.config.comm.local_steps == 0:
                        votes = self._average_replicas(state, progress)
                progress.step += 1
                progress.batch += 1
                if self.watchdog is not None:
                    self.watchdog.beat(progress.step)
                if progress.step % cfg.log_every == 0:
                    self.log({"step": progress.step, "epoch": progress.epoch,
                              "loss": self._last_objective, "lr": self._last_lr,
                              **self._clock_record()})
                if cfg.eval_every and progress.step % cfg.eval_every == 0 and self.test is not None:
                    pending = self._drain(pending, sums, grad, optimizer, state, progress)
                    self.log({"step": progress.step, "epoch": progress.epoch,
                              "test": self.evaluate()})
                if mode != "local_sgd" or votes is not None:  # local replicas differ in between
                    self._check_replicas(progress.step)
                if progress.batch == self.plan.n_batches(progress.epoch):
                    pending = self._drain(pending, sums, grad, optimizer, state, progress)
                    if mode == "local_sgd" and progress.step % self.config.comm.local_steps:
                        votes = self._average_replicas(state, progress)
                    self._end_epoch(progress)
                if cfg.max_steps and progress.step >= cfg.max_steps:
                    progress.finished = True
                if votes is None:
                    continue
                if votes[0] > 0 or self.recovery.due(progress.step, votes[1]) or (
                        progress.finished and self.config.checkpoint.at_end):
                    if mode == "overlap" and pending is not None and not progress.finished:
                        pending.wait()
                        self._checkpoint(progress, state, pending_sums=sums)
                    else:
                        pending = self._drain(pending, sums, grad, optimizer, state, progress)
                        self._checkpoint(progress, state)
                if votes[0] > 0 and not progress.finished:
                    self._stopped(progress)
            except collectives.RankFailure:
                if not self.shrink:
                    raise
                progress = self._survive(state)

        pending = self._drain(pending, sums, grad, optimizer, state, progress)
        if self.config.checkpoint.at_end and self.recovery.last_step != progress.step:
            self._checkpoint(progress, state)
        return TrainResult(self.model, self.params, self.classes, progress.step,
                           progress.epoch, progress.stopped_early, self.evaluate(), self.scaler)

    def _remember(self, progress: Progress, state: dict) -> None:
        """fault.mode shrink: the state before this step (the last two are kept: a survivor can
        be at most one step ahead of another when a rank dies)."""
        self._snapshots[progress.step] = (self.params.copy(),
                                          {k: np.array(v, copy=True) for k, v in state.items()},
                                          copy.deepcopy(progress))
        self._snapshots.pop(progress.step - 2, None)

    def _survive(self, state: dict) -> Progress:
        """A rank died: shrink to the survivors, agree on the step to redo, restore the state
        before it, take over the dead ranks' rows, and carry on. Returns the restored position.

        Every survivor holds snapshots of the last two steps' starting states; the agreed step
        is the smallest one any survivor was working on (an allreduce on the healthy, shrunk
        communicator), and its snapshot is identical everywhere, because every completed step
        applied identical reduced values on every rank.
        """
        started = time.perf_counter()
        self.comm = collectives.shrink(self.comm)
        self.rank = self.comm.Get_rank()
        self.recovery.comm = self.comm
        working_on = np.array([max(self._snapshots)], dtype=np.int64)
        agreed = int(collectives.allreduce(working_on, self.comm, op="min")[0])
        params, saved_state, saved_progress = self._snapshots[agreed]
        self.params[:] = params
        for name, value in saved_state.items():
            state[name][...] = value
        for step in [s for s in self._snapshots if s > agreed]:
            del self._snapshots[step]
        progress = copy.deepcopy(saved_progress)
        survivors = set(collectives.allgather_object(self.fault_rank, self.comm))
        dead, self._alive = sorted(self._alive - survivors), survivors
        if hasattr(self.log, "set_root"):
            self.log.set_root(self.rank == 0)
        event = {"event": "rank_failure", "dead_ranks": dead, "step": agreed,
                 "ranks_left": self.comm.Get_size()}
        if self.comm.Get_size() < self.config.fault.min_ranks:
            self.log(dict(event, action=f"fewer than fault.min_ranks="
                                        f"{self.config.fault.min_ranks} survive: checkpoint "
                                        "and exit"))
            self._checkpoint(progress, state)
            self._stopped(progress)
        self.run_data = load_run_data(self.config, self.comm, self.task, scaler=self.scaler)
        self.shard, self.test = self.run_data.shard, self.run_data.test
        self.plan = self._make_plan()
        self.log(dict(event, action="shrink", seconds=round(time.perf_counter() - started, 4)))
        return progress

    def _stopped(self, progress: Progress) -> None:
        from .spmd import EXIT_STOPPED

        self.log({"event": "stopped", "step": progress.step, "signal": getattr(
            self.stop, "signal_name", ""), "checkpoint": str(self.recovery.directory)})
        raise StoppedAfterCheckpoint(EXIT_STOPPED)

    def _end_epoch(self, progress: Progress) -> None:
        """Evaluate, decide early stopping (on reduced values only), move to the next epoch."""
        cfg = self.config.train
        train_objective = float(progress.epoch_loss[0] / max(progress.epoch_loss[1], 1.0))
        evaluation = self.evaluate()
        self.log({"step": progress.step, "epoch": progress.epoch + 1,
                  "train_loss": train_objective, "test": evaluation, **self._clock_record()})
        score = self._score(evaluation, train_objective)
        if score < progress.best - cfg.min_delta:
            progress.best, progress.bad_evals = score, 0
        else:
            progress.bad_evals += 1
        progress.epoch += 1
        progress.batch = 0
        progress.epoch_loss[:] = 0.0
        if cfg.patience and progress.bad_evals >= cfg.patience:
            progress.stopped_early = progress.finished = True
        if progress.epoch >= cfg.epochs:
            progress.finished = True

    def _apply(self, sums, grad, optimizer, state, step: int) -> None:
        """One update from reduced sums; remembers the batch objective and lr for the log."""
        self._last_objective = self._objective_from_sums(sums, self.params, grad)
        self._check_finite(self._last_objective, step, grad)
        self._last_lr = optimizer.update(grad, state, self.params)
        self.model.prox(self.params, self._last_lr)
        self._check_finite(self._last_objective, step)

    def _drain(self, pending, sums, grad, optimizer, state, progress):
        """Overlap mode: finish the reduction in flight and apply it before any other collective."""
        if pending is not None:
            self._wait(pending)
            progress.epoch_loss += sums[self.model.n_params:self.model.n_params + 2]
            self._apply(sums, grad, optimizer, state, progress.step)
        return None

    def _wait(self, pending) -> None:
        """Overlap mode: wait for the reduction in flight (the watchdog knows we are waiting)."""
        if self.watchdog is not None:
            self.watchdog.beat(self._watch_step, in_collective=True)
        pending.wait()
        if self.watchdog is not None:
            self.watchdog.beat(self._watch_step)

    def _local_step(self, rows, sums, grad, optimizer, state, progress) -> None:
        """local_sgd: update this rank's replica from the mean over its rows of the batch."""
        n = self.model.n_params
        self._local_sums(self.params, rows, sums, progress.step)
        self._local_loss += sums[n:n + 2]
        self._local_votes = np.maximum(self._local_votes, sums[n + 2:])
        if sums[n + 1] > 0:
            self._last_objective = self._objective_from_sums(sums, self.params, grad)
            self._last_lr = optimizer.update(grad, state, self.params)
            self.model.prox(self.params, self._last_lr)

    def _average_replicas(self, state: dict, progress: Progress) -> np.ndarray:
        """local_sgd: replace every replica and optimizer state by their shard-size-weighted
        means, in one allreduce of [params | state | loss since last average | votes | weight].
        Returns the reduced [stop, checkpoint] votes."""
        n = self.model.n_params
        weight = float(self.shard.stop - self.shard.start)
        names = [name for name in sorted(state) if name != "step"]
        parts = [self.params * weight] + [state[name].reshape(-1) * weight for name in names]
        buf = np.concatenate(parts + [self._local_loss, self._local_votes, [weight]])
        self._allreduce(buf)
        total = buf[-1]
        np.divide(buf[:n], total, out=self.params)
        offset = n
        for name in names:
            size = state[name].size
            state[name][...] = (buf[offset:offset + size] / total).reshape(state[name].shape)
            offset += size
        progress.epoch_loss += buf[offset:offset + 2]
        self._local_loss[:] = 0.0
        self._local_votes[:] = 0.0
        self._check_finite(float(buf[offset] / max(buf[offset + 1], 1.0)), progress.step)
        return buf[offset + 2:offset + 4].copy()

    def _fit_lbfgs(self) -> TrainResult:
        """L-BFGS on the full data: each evaluation is one fused allreduce, so every rank sees
        bit-identical (f, g) and scipy takes the identical path everywhere. A resumed L-BFGS
        run restarts scipy from the saved parameters (its curvature history is not saved), so it
        reaches the same optimum but not bit-identically."""
        n = self.model.n_params
        sums = np.empty(n + CONTROL_SLOTS)
        optimizer_state: dict = {}
        progress, _ = self._restore(optimizer_state)
        evaluations = []

        def objective(params):
            self._reduced_sums(params, None, sums, progress)
            grad = np.empty(n)
            value = self._objective_from_sums(sums, params, grad)
            evaluations.append((value, sums[n + 2:].copy()))
            return value, grad

        def on_iteration(params):
            progress.step += 1
            self.params[:] = params
            self._check_finite(evaluations[-1][0], progress.step)
            if self.watchdog is not None:
                self.watchdog.beat(progress.step)
            votes = evaluations[-1][1]
            if progress.step % self.config.train.log_every == 0:
                self.log({"step": progress.step, "loss": evaluations[-1][0],
                          **self._clock_record()})
            if votes[0] > 0 or self.recovery.due(progress.step, votes[1]):
                self._checkpoint(progress, optimizer_state)
            if votes[0] > 0:
                self._stopped(progress)

        iterations = (self.config.train.max_steps or DEFAULT_LBFGS_ITERATIONS) - progress.step
        if iterations > 0 and not progress.finished:
            result = lbfgs(objective, self.params.copy(), max_iter=iterations,
                           tol=self.config.optimizer.tol, history=self.config.optimizer.history,
                           callback=on_iteration)
            self.params = np.ascontiguousarray(result.x, dtype=np.float64)
            self.log({"step": progress.step, "loss": float(result.fun), "lbfgs": result.message,
                      "evaluations": int(result.nfev), **self._clock_record()})
        progress.finished = True
        if self.config.checkpoint.at_end:
            self._checkpoint(progress, optimizer_state)
        return TrainResult(self.model, self.params, self.classes, progress.step, 1, False,
                           self.evaluate(), self.scaler)

    def _clock_record(self) -> dict:
        self._clock.compute += self._clock.lap()
        return {"compute_s": round(self._clock.compute, 6),
                "comm_s": round(self._clock.communicate, 6),
                "bytes_reduced": self._clock.bytes_reduced}
