"""A parameter-vector model (linear models, MLPs) on one run's rows: what the first-order loops
and L-BFGS share.

One step's local work fills ONE buffer ``[grad_sum | loss_sum | n_rows | stop_votes |
checkpoint_votes]`` (:meth:`GradientProblem.local_sums`); one reduction sums it over the ranks;
:meth:`GradientProblem.objective_from_sums` divides by the GLOBAL row count and adds the penalty
once. The two vote slots carry "a stop signal arrived here" and "my clock says a checkpoint is
due", so those decisions are agreed without any extra collective. In reproducible mode the sums
are exact block sums (:meth:`mpiml.comm.Reducer.exact_sum`) instead, the same bits on any rank
count. Also here: the model and its starting point, held-out evaluation, the non-finite and
replica guards, and what a checkpoint holds.
"""

from __future__ import annotations

import hashlib
import math
import time

import numpy as np

from ..comm import allgather_object, mark_raised_together, on_root
from ..config import Config
from ..data.batches import BatchPlan, BlockBatchPlan, order_block_rows
from ..data.run_rows import RunData
from ..data.stream import chunks, is_streamed
from ..files.model import load_model
from ..models.base import TILE_BYTES
from ..models.kinds import KINDS, make_model
from ..optim import make_optimizer, make_schedule
from ..run.context import RunContext
from .evaluate import evaluate
from .progress import Progress
from .result import Fitted

CONTROL_SLOTS = 4  # loss_sum, n_rows, stop votes, checkpoint votes


def quiet_overflow():
    """The numpy error state of the gradient loops, entered once around a whole loop (a
    per-step ``errstate`` costs microseconds on tiny models): overflow in the model's arithmetic
    shows up as a non-finite loss or gradient, which :meth:`GradientProblem.check_finite`
    reports once for all ranks; numpy's per-rank warnings would only repeat it."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def validation_score(metrics: dict[str, float]) -> float:
    """What early stopping minimises on the validation set: the log-loss (probabilistic
    classifiers), the RMSE (regression), else the error rate (1 - accuracy)."""
    for key in ("log_loss", "rmse"):
        if key in metrics:
            return metrics[key]
    return 1.0 - metrics["accuracy"]


class NonFiniteError(FloatingPointError):
    """The loss, the gradient or the parameters stopped being finite (raised on every rank)."""


class ReplicaDivergenceError(RuntimeError):
    """Ranks hold different parameters although they must be identical."""


def build_model(config: Config, rows: RunData):
    """The model ``config.model`` describes, sized for ``rows``."""
    kind = KINDS[config.model.kind]
    options = {key: getattr(config.model, key) for key in kind.options}
    return make_model(kind.name, rows.shard.n_features, n_classes=rows.n_classes, **options)


class GradientProblem:
    """The model, its parameters and its rows in one run (see the module docstring)."""

    def __init__(self, run: RunContext, rows: RunData):
        self.run = run
        self.model = build_model(run.config, rows)
        self.n = self.model.n_params
        self.params = self.model.init_params(run.config.train.seed)
        if run.config.model.init_from:
            self.params = self._warm_start(run.config.model.init_from, rows)
        self.set_rows(rows)
        # the parameters of the best validation score so far (train.restore_best)
        self.best_params = self.params.copy() if rows.validation is not None else None
        self.last_objective, self.last_lr = math.nan, 0.0
        self._started = time.perf_counter()
        self._first_step = 0  # the step this process started from (a resume's)

    def set_rows(self, rows: RunData) -> None:
        """Train on ``rows`` from now on (after a shrink: this rank's rows on fewer ranks)."""
        self.rows = rows
        self.plan = self._make_plan()

    def _warm_start(self, path, rows: RunData) -> np.ndarray:
        """Parameters of a saved model (rank 0 reads, all receive) after checking that it is the
        same kind of model on the same features and classes."""

        def read() -> np.ndarray:
            saved = load_model(path)
            problems = []
            if saved.kind != self.model.kind:
                problems.append(f"kind {saved.kind} (config: {self.model.kind})")
            if saved.n_features != self.model.n_features:
                problems.append(f"{saved.n_features} features (data: {self.model.n_features})")
            if rows.classes is not None and (saved.classes is None or not np.array_equal(
                    saved.classes, rows.classes)):
                problems.append(f"classes {saved.classes} (data: {rows.classes})")
            if not problems and saved.params.shape != self.params.shape:
                problems.append(f"{saved.params.size} parameters (config: "
                                f"{self.params.size}; options {saved.options})")
            if problems:
                raise ValueError(f"model.init_from {path} does not match this run: "
                                 + "; ".join(problems))
            return saved.params

        return on_root(read, self.run.comm)

    def _make_plan(self) -> BatchPlan:
        """The global batch order for this rank's rows (of whole blocks in reproducible mode)."""
        cfg, shard, block = self.run.config.train, self.rows.shard, self.run.config.block_rows
        if block > 1:
            n_blocks = -(-shard.n_total // block)
            per_batch = cfg.batch_size // block if cfg.batch_size else n_blocks
            return BatchPlan(n_blocks, per_batch, cfg.seed, shard.start // block,
                             -(-shard.stop // block))
        if cfg.batch_size and is_streamed(shard.X):  # batches of a few contiguous runs
            row_bytes = shard.n_features * shard.X.dtype.itemsize
            return BlockBatchPlan(shard.n_total, cfg.batch_size, cfg.seed, shard.start,
                                  shard.stop, order_block_rows(cfg.batch_size, row_bytes))
        return BatchPlan(shard.n_total, cfg.batch_size or shard.n_total, cfg.seed, shard.start,
                         shard.stop)

    @property
    def total_steps(self) -> int:
        cfg = self.run.config.train
        per_epoch = self.plan.n_batches(0) if cfg.batch_size else 1
        steps = per_epoch * cfg.epochs
        return min(steps, cfg.max_steps) if cfg.max_steps else steps

    def optimizer(self):
        """The configured first-order optimizer with its learning-rate schedule."""
        cfg = self.run.config.optimizer
        schedule = make_schedule(cfg.schedule, lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                 step_size=cfg.step_size, gamma=cfg.gamma,
                                 total_steps=self.total_steps, power=cfg.power, min_lr=cfg.min_lr)
        options = {}
        if cfg.name in ("momentum", "nesterov"):
            options["momentum"] = cfg.momentum
        elif cfg.name == "adam":
            options.update(beta1=cfg.beta1, beta2=cfg.beta2)
        return make_optimizer(cfg.name, schedule, **options)

    # -- the sums of a step --------------------------------------------------------------------

    def _inject(self, step: int, grad_view: np.ndarray) -> None:
        """A planned fault of ``step``: "nan" poisons this rank's gradient, "diverge" its
        replica (the guards must catch both)."""
        action = self.run.inject("before_allreduce", step)
        if action == "nan":
            grad_view[...] = np.nan
        elif action == "diverge":
            self.params[0] += 1.0

    def local_sums(self, params, batch, out: np.ndarray, step: int) -> None:
        """Fill ``out`` = [grad_sum | loss_sum | n_rows | stop | checkpoint] for this rank's rows
        ``batch`` of the current global batch (None = all its rows). With sample weights the
        sums are weighted and ``n_rows`` is the rows' weight."""
        n, shard = self.n, self.rows.shard
        X, y, w = (shard.X, shard.y, shard.w) if batch is None else shard.batch(batch)
        if is_streamed(X):
            out[n] = self._streamed_loss_grad(params, out[:n])
        else:
            out[n] = self.model.loss_grad_sum(params, X, y, out[:n], w)
        out[n + 1] = X.shape[0] if w is None else w.sum()
        out[n + 2:] = self.run.votes()
        self._inject(step, out[:n])

    def _streamed_loss_grad(self, params, grad_out: np.ndarray) -> float:
        """The loss and gradient sums over all of this rank's streamed rows, a chunk at a time,
        in the tiles the model uses in memory (chunks hold whole tiles; the tile sums are
        added in the same order), so the sums have the same bits as in memory."""
        shard, part = self.rows.shard, np.empty(self.n)
        tile = max(1, TILE_BYTES // (shard.n_features * shard.X.dtype.itemsize))
        loss, grad_out[...] = 0.0, 0.0
        for lo, hi, rows in chunks(shard.X):
            for a in range(0, hi - lo, tile):
                b = min(hi - lo, a + tile)
                w = None if shard.w is None else shard.w[lo + a : lo + b]
                loss += self.model.loss_grad_sum(params, rows[a:b], shard.y[lo + a : lo + b],
                                                 part, w)
                if lo + a == 0:
                    grad_out[...] = part
                else:
                    grad_out += part
        return float(loss)

    def reduced_sums(self, params, batch, out: np.ndarray, step: int, batch_index: int) -> None:
        """``out`` = the step's [grad_sum | loss_sum | n_rows | votes] over all ranks: one fused
        reduction, or in reproducible mode exact block sums (``batch`` holds block indices)."""
        run = self.run
        if run.config.block_rows == 1:
            self.local_sums(params, batch, out, step)
            with run.collective(step):
                run.reducer.sum(out)
            return
        n, shard, block = self.n, self.rows.shard, run.config.block_rows
        if batch is None:
            batch = np.arange(self.plan.stop - self.plan.start)
            n_blocks = self.plan.n_total
        else:
            n_blocks = self.plan.batch_rows(batch_index)
        vectors = []
        for index in batch:
            lo = index * block
            hi = min(lo + block, shard.n_local)
            vector = np.empty(n + 2)
            w = None if shard.w is None else shard.w[lo:hi]
            vector[n] = self.model.loss_grad_sum(params, shard.X[lo:hi], shard.y[lo:hi],
                                                 vector[:n], w)
            vector[n + 1] = hi - lo if w is None else w.sum()
            vectors.append(vector)
        self._inject(step, vectors[0][:n] if vectors else np.empty(0))
        with run.collective(step):
            out[:n + 2], out[n + 2:] = run.reducer.exact_sum(vectors, n + 2, n_blocks,
                                                             run.votes())

    def objective_from_sums(self, sums: np.ndarray, params, grad_out: np.ndarray) -> float:
        """Mean loss + penalty from reduced sums; the full gradient into ``grad_out``. A batch
        whose rows all weigh 0 contributes no loss and no gradient."""
        n = self.n
        count = float(sums[n + 1])
        if count > 0:
            np.divide(sums[:n], count, out=grad_out)
        else:
            grad_out[...] = 0.0
        penalty = self.model.add_penalty(params, grad_out)
        mean_loss = float(sums[n]) / count if count > 0 else 0.0
        return mean_loss + penalty + self.model.l1_penalty(params)

    def objective(self, params, step: int = 0) -> tuple[float, np.ndarray, np.ndarray]:
        """The full-batch objective at ``params``, its gradient and the reduced [stop,
        checkpoint] votes: one fused reduction over every rank's rows. Collective."""
        sums = np.empty(self.n + CONTROL_SLOTS)
        self.reduced_sums(params, None, sums, step, 0)
        grad = np.empty(self.n)
        return self.objective_from_sums(sums, params, grad), grad, sums[self.n + 2:].copy()

    def apply(self, sums, grad, optimizer, state, step: int) -> None:
        """One update from reduced sums; remembers the batch objective and lr for the log.

        One pass over an array checks the step: every optimizer turns a non-finite gradient
        entry into a non-finite parameter, so the gradient is looked at only to name the
        culprit once the parameters are not finite (the same error as checking it first)."""
        self.last_objective = self.objective_from_sums(sums, self.params, grad)
        if not math.isfinite(self.last_objective):
            self.check_finite(self.last_objective, step)
        self.last_lr = optimizer.update(grad, state, self.params)
        self.model.prox(self.params, self.last_lr)
        if not np.isfinite(self.params).all():
            self.check_finite(self.last_objective, step, grad)

    # -- evaluation ----------------------------------------------------------------------------

    @np.errstate(over="ignore", invalid="ignore", divide="ignore")
    def evaluate(self, params=None, part: str = "test") -> dict[str, float]:
        """Metrics on the test (or validation) rows (collective; identical on every rank)."""
        params = self.params if params is None else params
        model = self.model
        return evaluate(self.rows, lambda X: model.predict(params, X),
                        lambda X: model.class_scores(params, X), self.run.reducer,
                        probabilistic=model.probabilistic, part=part)

    def end_epoch(self, progress: Progress) -> None:
        """Evaluate, decide early stopping (on reduced values only), remember the best
        parameters on the validation set, move to the next epoch."""
        cfg = self.run.config.train
        loss_sum, weight = progress.epoch_loss
        train_objective = float(loss_sum / weight) if weight > 0 else 0.0
        record = {"step": progress.step, "of": self.total_steps, "epoch": progress.epoch + 1,
                  "epochs": cfg.epochs, "train_loss": train_objective, "test": self.evaluate()}
        score = train_objective
        if self.rows.validation is not None:
            record["validation"] = self.evaluate(part="validation")
            score = validation_score(record["validation"])
        self.run.log({**record, **self.clock_record()})
        if score < progress.best - cfg.min_delta:
            progress.best, progress.bad_evals = score, 0
            if self.best_params is not None:
                self.best_params[:] = self.params
        else:
            progress.bad_evals += 1
        progress.epoch += 1
        progress.batch = 0
        progress.epoch_loss[:] = 0.0
        if cfg.patience and progress.bad_evals >= cfg.patience:
            progress.stopped_early = progress.finished = True
        if progress.epoch >= cfg.epochs:
            progress.finished = True

    def final_params(self) -> np.ndarray:
        """The parameters the fit ends with: the best on the validation set when there is one
        and ``train.restore_best`` is on (the checkpoints keep the last, so that a longer run
        continues from where this one stopped), else the last."""
        if self.best_params is not None and self.run.config.train.restore_best:
            return self.best_params
        return self.params

    def result(self, progress: Progress) -> Fitted:
        """What the loop returns: the final parameters and their test and validation
        metrics."""
        params = self.final_params()
        validation = ({} if self.rows.validation is None
                      else self.evaluate(params, part="validation"))
        return Fitted({"params": params}, self.model.options(), progress.step, progress.epoch,
                      self.evaluate(params), progress.stopped_early, validation)

    def pace(self, step: int) -> dict:
        """Where the run is and how fast it goes, for the log: the step of the total, rows per
        second over this process's steps, and the estimated seconds left."""
        total = self.total_steps
        done = step - self._first_step
        elapsed = time.perf_counter() - self._started
        record = {"of": total}
        if done > 0 and elapsed > 0:
            cfg = self.run.config.train
            rows = cfg.batch_size if cfg.batch_size else self.rows.shard.n_total
            record["rows_per_s"] = round(min(rows, self.rows.shard.n_total) * done / elapsed)
            record["eta_s"] = round(max(total - step, 0) * elapsed / done, 1)
        return record

    def clock_record(self) -> dict:
        """Seconds computing and communicating so far, and bytes reduced (for the log)."""
        reducer = self.run.reducer
        elapsed = time.perf_counter() - self._started
        return {"compute_s": round(elapsed - reducer.seconds, 6),
                "comm_s": round(reducer.seconds, 6), "bytes_reduced": reducer.bytes}

    # -- guards --------------------------------------------------------------------------------

    def check_finite(self, objective: float, step: int, grad=None) -> None:
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
        raise mark_raised_together(NonFiniteError(
            f"non-finite {what} at step {step} (loss {objective}); the checkpoints in "
            f"{self.run.checkpoints.directory}, if any, are from before it. Lower "
            "optimizer.lr, add model.alpha, or check the data (features too large?)."))

    def check_replicas(self, step: int) -> None:
        """Every ``fault.check_every`` steps: compare a hash of the parameters across ranks."""
        every = self.run.config.fault.check_every
        if every is None or step % every:
            return
        digest = hashlib.blake2b(self.params.tobytes(), digest_size=16).hexdigest()
        digests = allgather_object(digest, self.run.comm)
        if len(set(digests)) > 1:
            diverged = [r for r, d in enumerate(digests) if d != digests[0]]
            raise mark_raised_together(ReplicaDivergenceError(
                f"parameters differ across ranks at step {step}: ranks {diverged} differ from "
                "rank 0 (a hardware fault, or code that made ranks take different paths)"))

    # -- checkpoints ---------------------------------------------------------------------------

    def identity(self) -> dict:
        """What a checkpoint must agree with to be resumed into this model."""
        classes = [] if self.rows.classes is None else np.asarray(self.rows.classes).tolist()
        return {"model_kind": self.model.kind, "n_params": int(self.n),
                "n_features": int(self.model.n_features), "classes": classes}

    def checkpoint(self, progress: Progress, state: dict, pending_sums=None) -> None:
        """Save parameters, optimizer state, position (and overlap mode's reduction in
        flight) as the checkpoint of ``progress.step``."""
        arrays = {"params": self.params, **progress.to_arrays()}
        if self.best_params is not None:
            arrays["best_params"] = self.best_params
        arrays.update({f"opt/{name}": np.asarray(value) for name, value in state.items()})
        if pending_sums is not None:
            arrays["pending"] = pending_sums
        self.run.save_checkpoint(progress.step, arrays, dict(progress.to_meta(),
                                                             **self.identity()))

    def restore(self, state: dict) -> tuple[Progress, np.ndarray | None]:
        """Resume from a checkpoint if there is one: parameters and optimizer ``state`` (filled
        in place), the loop position, and overlap mode's reduction in flight."""
        checkpoints = self.run.checkpoints
        self.run.beat(0, phase="reading the checkpoint")
        found = checkpoints.resume(self.run.resume, expected=self.identity(),
                                   data=self.rows.fingerprint)
        if found is None:
            return Progress(), None
        self._first_step = found.step
        self.params = np.array(found.arrays["params"], dtype=np.float64)
        if self.best_params is not None and "best_params" in found.arrays:
            self.best_params = np.array(found.arrays["best_params"], dtype=np.float64)
        for name in state:
            state[name] = np.array(found.arrays[f"opt/{name}"])
        checkpoints.last_step = found.step
        progress, pending = Progress.restore(found), found.arrays.get("pending")
        if checkpoints.data_changed:  # other rows: the saved position in the epoch means nothing
            progress.batch, pending = 0, None
            progress.epoch_loss[:] = 0.0
        return progress, pending
