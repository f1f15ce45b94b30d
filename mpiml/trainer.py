"""The gradient training loop for the linear models: sync, overlap and local-SGD modes, and L-BFGS.

One step: this rank's rows of global batch t -> ``model.loss_grad_sum`` into one fused buffer
``[grad_sum | loss_sum | n_rows]`` -> one allreduce -> divide by the GLOBAL row count, add the
penalty once -> ``optimizer.update``, identical on every rank. Every branch that decides whether a
collective is called (steps per epoch, evaluation, early stopping, stop) depends only on the
configuration or on reduced values, so ranks never disagree on how many collectives they call.

Communication modes (``comm.mode``):

* ``sync``: the step above; p ranks compute what one rank would (up to summation order).
* ``overlap``: the allreduce of step t's gradient runs while step t+1's gradient is computed, and
  the update at step t+1 applies the gradient of step t: every update is one step stale (the
  allreduce counterpart of asynchronous parameter-server SGD, with bounded staleness 1).
* ``local_sgd``: each rank updates its own replica from its rows of each global batch (mean over
  its rows) for ``comm.local_steps`` steps, then replicas are averaged, weighted by shard size.
  Optimizer state stays per rank between averages.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from . import collectives, data, metrics, scaling
from .config import Config, ConfigError
from .models import make_model
from .optim import lbfgs, make_optimizer, make_schedule

TASKS = {"linear": "regression", "logistic": "binary", "svm": "binary", "softmax": "multiclass"}
DEFAULT_LBFGS_ITERATIONS = 500


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

    ``log`` receives one dict per logged step or evaluation (rank 0 writes them to
    metrics.jsonl); it is called on every rank with identical content.
    """

    def __init__(self, config: Config, comm=None, log=None):
        self.config = config
        self.comm = collectives.world(comm)
        self.log = log or (lambda record: None)
        self._load_data()
        self._build_model()

    # -- set-up ----------------------------------------------------------------------------

    def _load_data(self) -> None:
        cfg = self.config.data
        if not cfg.train:
            raise ConfigError("data.train is empty: give the HDF5 file to train on")
        self.task = TASKS[self.config.model.kind]
        self.shard = data.load_shard(cfg.train, self.comm, x=cfg.x, y=cfg.y, dtype=cfg.dtype,
                                     task=self.task)
        self.classes = getattr(self.shard, "classes", None)
        self.test = None
        if cfg.test:
            test = data.load_shard(cfg.test, self.comm, x=cfg.test_x, y=cfg.test_y,
                                   dtype=cfg.dtype, task="regression")
            if test.n_features != self.shard.n_features:
                raise ConfigError(f"test set {cfg.test}:{cfg.test_x} has {test.n_features} "
                                  f"features; the training set has {self.shard.n_features}")
            if self.classes is not None:
                test.y = self._map_test_labels(test.y)
            self.test = test
        self.scaler = None
        if cfg.standardize:
            self.scaler = scaling.fit_scaler(self.shard.X, self.comm)
            for part in (self.shard, self.test):
                if part is not None:
                    scaling.apply_scaler(part.X, *self.scaler)

    def _map_test_labels(self, raw: np.ndarray) -> np.ndarray:
        """Test labels -> training class indices; a label unseen in training is an error."""
        index = np.searchsorted(self.classes, raw)
        index = np.clip(index, 0, len(self.classes) - 1)
        unknown = self.classes[index] != raw
        error = None
        if unknown.any():
            error = ValueError(f"test set {self.config.data.test}: label {raw[unknown][0]!r} "
                               f"does not occur in the training labels {list(self.classes)}")
        collectives.raise_together(error, self.comm)
        return index

    def _build_model(self) -> None:
        cfg = self.config.model
        options = dict(fit_intercept=cfg.fit_intercept, alpha=cfg.alpha, l1_ratio=cfg.l1_ratio)
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
        if self.comm.Get_rank() == 0:
            try:
                saved = load_model(path)
                problems = []
                if saved.model.kind != self.model.kind:
                    problems.append(f"kind {saved.model.kind} (config: {self.model.kind})")
                if saved.model.n_features != self.model.n_features:
                    problems.append(f"{saved.model.n_features} features "
                                    f"(data: {self.model.n_features})")
                if (self.classes is not None and (saved.classes is None or not np.array_equal(
                        saved.classes, self.classes))):
                    problems.append(f"classes {saved.classes} (data: {self.classes})")
                if saved.model.fit_intercept != self.model.fit_intercept:
                    problems.append(f"fit_intercept={saved.model.fit_intercept}")
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
        self._clock.compute += self._clock.lap()
        collectives.allreduce(buf, self.comm, algorithm=self.config.comm.algorithm,
                              ring_threshold=self.config.comm.ring_threshold, validate=False)
        self._clock.communicate += self._clock.lap()
        self._clock.bytes_reduced += buf.nbytes
        return buf

    def _local_sums(self, params, rows, out: np.ndarray) -> None:
        """Fill ``out`` = [grad_sum | loss_sum | n_rows] over this rank's ``rows`` (None = all)."""
        n = self.model.n_params
        X, y = (self.shard.X, self.shard.y) if rows is None else self.shard.batch(rows)
        out[n] = self.model.loss_grad_sum(params, X, y, out[:n])
        out[n + 1] = X.shape[0]

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
        if self.test is None:
            return {}
        params = self.params if params is None else params
        if self.task == "regression":
            stats = metrics.regression_stats(
                self.model.predict(params, self.test.X).astype(np.float64), self.test.y)
            return metrics.regression_metrics(self._allreduce(stats))
        if hasattr(self.model, "predict_proba"):
            proba = self.model.predict_proba(params, self.test.X)
        else:
            # linear SVM: no probabilities. A sigmoid of the margin ranks rows exactly as the
            # margin does (so ROC-AUC is right) and predicts the same class; log-loss of it would
            # mean nothing and is dropped.
            positive = expit(self.model.decision_function(params, self.test.X))
            proba = np.column_stack([1.0 - positive, positive])
        stats = metrics.classification_stats(proba, self.test.y)
        result = metrics.classification_metrics(self._allreduce(stats), len(self.classes))
        if not hasattr(self.model, "predict_proba"):
            result.pop("log_loss", None)
        return result

    @staticmethod
    def _score(evaluation: dict[str, float], train_objective: float) -> float:
        """Lower is better: held-out log-loss or RMSE, else the training objective."""
        for key in ("log_loss", "rmse"):
            if key in evaluation:
                return evaluation[key]
        return train_objective

    # -- the loops ---------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        cfg = self.config.train
        per_epoch = self.plan.n_batches(0) if cfg.batch_size else 1
        steps = per_epoch * cfg.epochs
        return min(steps, cfg.max_steps) if cfg.max_steps else steps

    def fit(self) -> TrainResult:
        cfg = self.config.train
        self.plan = data.BatchPlan(self.shard.n_total, cfg.batch_size or self.shard.n_total,
                                   cfg.seed, self.shard.start, self.shard.stop)
        self._clock = _Clock()
        self._last_objective, self._last_lr = math.nan, 0.0
        if self.config.optimizer.name == "lbfgs":
            return self._fit_lbfgs()
        return self._fit_first_order()

    def _fit_first_order(self) -> TrainResult:
        cfg, mode = self.config.train, self.config.comm.mode
        optimizer = self._optimizer()
        state = optimizer.init(self.params)
        n = self.model.n_params
        sums = np.zeros(n + 2)
        in_flight = np.zeros(n + 2)  # overlap: the buffer being reduced
        grad = np.empty(n)
        full_batch = cfg.batch_size is None
        step, best, bad_evals, stopped_early = 0, math.inf, 0, False
        pending = None
        epoch_loss = np.zeros(2)  # [loss_sum, n_rows] since the epoch started (reduced lazily)
        eval_every = cfg.eval_every
        epoch = 0
        for epoch in range(cfg.epochs):
            epoch_loss[:] = 0.0
            for t in range(self.plan.n_batches(epoch)):
                rows = None if full_batch else self.plan.local_rows(epoch, t)
                if mode == "local_sgd":
                    self._local_step(rows, sums, grad, optimizer, state)
                    epoch_loss += sums[n:]
                    if (step + 1) % self.config.comm.local_steps == 0:
                        self._average_replicas()
                elif mode == "overlap":
                    self._local_sums(self.params, rows, in_flight)
                    epoch_loss += in_flight[n:]
                    if pending is not None:
                        pending.wait()
                        self._apply(sums, grad, optimizer, state)
                    sums, in_flight = in_flight, sums
                    pending = collectives.start_allreduce(
                        sums, self.comm, algorithm=self.config.comm.algorithm,
                        ring_threshold=self.config.comm.ring_threshold)
                else:
                    self._local_sums(self.params, rows, sums)
                    epoch_loss += sums[n:]
                    self._allreduce(sums)
                    self._apply(sums, grad, optimizer, state)
                step += 1
                if step % cfg.log_every == 0:
                    self.log({"step": step, "epoch": epoch, "loss": self._last_objective,
                              "lr": self._last_lr, **self._clock_record()})
                if eval_every and step % eval_every == 0 and self.test is not None:
                    pending = self._drain(pending, sums, grad, optimizer, state)
                    self.log({"step": step, "epoch": epoch, "test": self.evaluate()})
                if cfg.max_steps and step >= cfg.max_steps:
                    break
            pending = self._drain(pending, sums, grad, optimizer, state)
            if mode == "local_sgd":
                self._average_replicas()
            train_loss = self._allreduce(epoch_loss.copy())
            train_objective = float(train_loss[0] / max(train_loss[1], 1))
            evaluation = self.evaluate()
            self.log({"step": step, "epoch": epoch + 1, "train_loss": train_objective,
                      "test": evaluation, **self._clock_record()})
            score = self._score(evaluation, train_objective)
            if score < best - cfg.min_delta:
                best, bad_evals = score, 0
            else:
                bad_evals += 1
            if cfg.patience and bad_evals >= cfg.patience:
                stopped_early = True
                break
            if cfg.max_steps and step >= cfg.max_steps:
                break
        return TrainResult(self.model, self.params, self.classes, step, epoch + 1,
                           stopped_early, self.evaluate(), self.scaler)

    def _apply(self, sums, grad, optimizer, state) -> None:
        """One update from reduced sums; remembers the batch objective and lr for the log."""
        self._last_objective = self._objective_from_sums(sums, self.params, grad)
        self._last_lr = optimizer.update(grad, state, self.params)
        self.model.prox(self.params, self._last_lr)

    def _drain(self, pending, sums, grad, optimizer, state):
        """Overlap mode: finish the reduction in flight and apply it before any other collective."""
        if pending is not None:
            pending.wait()
            self._apply(sums, grad, optimizer, state)
        return None

    def _local_step(self, rows, sums, grad, optimizer, state) -> None:
        """local_sgd: update this rank's replica from the mean over its rows of the batch."""
        self._local_sums(self.params, rows, sums)
        if sums[self.model.n_params + 1] > 0:
            self._apply(sums, grad, optimizer, state)

    def _average_replicas(self) -> None:
        """Replace every replica by the shard-size-weighted mean of all replicas."""
        n = self.model.n_params
        weight = float(self.shard.stop - self.shard.start)
        buf = np.empty(n + 1)
        np.multiply(self.params, weight, out=buf[:n])
        buf[n] = weight
        self._allreduce(buf)
        np.divide(buf[:n], buf[n], out=self.params)

    def _fit_lbfgs(self) -> TrainResult:
        """L-BFGS on the full data: each evaluation is one fused allreduce, so every rank sees
        bit-identical (f, g) and scipy takes the identical path everywhere."""
        n = self.model.n_params
        sums = np.empty(n + 2)
        evaluations = []

        def objective(params):
            self._local_sums(params, None, sums)
            self._allreduce(sums)
            grad = np.empty(n)
            value = self._objective_from_sums(sums, params, grad)
            evaluations.append(value)
            return value, grad

        iterations = self.config.train.max_steps or DEFAULT_LBFGS_ITERATIONS

        def on_iteration(params):
            step = on_iteration.count = getattr(on_iteration, "count", 0) + 1
            if step % self.config.train.log_every == 0:
                self.log({"step": step, "loss": evaluations[-1], **self._clock_record()})

        result = lbfgs(objective, self.params, max_iter=iterations,
                       tol=self.config.optimizer.tol, history=self.config.optimizer.history,
                       callback=on_iteration)
        self.params = np.ascontiguousarray(result.x, dtype=np.float64)
        self.log({"step": int(result.nit), "loss": float(result.fun), "lbfgs": result.message,
                  "evaluations": int(result.nfev), **self._clock_record()})
        return TrainResult(self.model, self.params, self.classes, int(result.nit), 1, False,
                           self.evaluate(), self.scaler)

    def _clock_record(self) -> dict:
        self._clock.compute += self._clock.lap()
        return {"compute_s": round(self._clock.compute, 6),
                "comm_s": round(self._clock.communicate, 6),
                "bytes_reduced": self._clock.bytes_reduced}

