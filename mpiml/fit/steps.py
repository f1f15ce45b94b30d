"""One step of each communication mode (``comm.mode``), as small objects the first-order loop
drives the same way.

* :class:`SyncStep` -- this step's fused sums, one reduction, one update: p ranks compute what
  one rank would (up to summation order).
* :class:`OverlapStep` -- the reduction of step t runs while step t+1's gradient is computed, and
  the update at step t+1 applies the gradient of step t: every update is one step stale (the
  allreduce counterpart of asynchronous parameter-server SGD, with bounded staleness 1).
* :class:`LocalSGDStep` -- each rank updates its own replica from its rows of each global batch
  (mean over its rows) for ``comm.local_steps`` steps; then replicas and optimizer states are
  averaged, weighted by shard size (with sample weights: by the shard's weight). Checkpoints
  are taken at those averages, where replicas agree.

Each ``__call__`` returns the reduced [stop, checkpoint] votes seen at this step, or None when
this step reduced nothing (then no checkpoint or stop can be decided at it).
"""

from __future__ import annotations

import numpy as np

from ..comm import PendingAllreduce
from .gradient import CONTROL_SLOTS, GradientProblem
from .progress import Progress


class SyncStep:
    """``comm.mode: sync``."""

    def __init__(self, problem: GradientProblem, optimizer, state: dict):
        self.problem, self.optimizer, self.state = problem, optimizer, state
        self.sums = np.zeros(problem.n + CONTROL_SLOTS)
        self.grad = np.empty(problem.n)

    def __call__(self, batch, progress: Progress) -> np.ndarray | None:
        n = self.problem.n
        self.problem.reduced_sums(self.problem.params, batch, self.sums, progress.step,
                                  progress.batch)
        progress.epoch_loss += self.sums[n:n + 2]
        self.problem.apply(self.sums, self.grad, self.optimizer, self.state, progress.step)
        return self.sums[n + 2:]

    def drain(self, progress: Progress) -> None:
        """Apply any reduction still in flight (before another collective, or the end)."""

    def settle(self) -> np.ndarray | None:
        """Before a checkpoint of an unfinished run: the reduced sums not yet applied, which the
        checkpoint keeps (None: nothing is pending; drain instead)."""
        return None

    def end_epoch(self, progress: Progress, votes):
        """What the end of an epoch adds to this step's votes."""
        return votes

    def replicas_agree(self, votes) -> bool:
        """Whether every rank holds the same parameters after this step."""
        return True


class OverlapStep(SyncStep):
    """``comm.mode: overlap``; ``pending_sums`` is the reduction a checkpoint kept in flight."""

    def __init__(self, problem, optimizer, state, pending_sums: np.ndarray | None = None):
        super().__init__(problem, optimizer, state)
        self.in_flight = np.zeros(problem.n + CONTROL_SLOTS)
        self.pending: PendingAllreduce | None = None
        self._step = 0
        if pending_sums is not None:  # the reduction that was in flight, completed
            self.sums[:] = pending_sums
            self.pending = PendingAllreduce(self.sums)

    def __call__(self, batch, progress: Progress) -> np.ndarray | None:
        problem, n = self.problem, self.problem.n
        problem.local_sums(problem.params, batch, self.in_flight, progress.step)
        votes = None
        if self.pending is not None:
            self._apply_pending(progress)
            votes = self.sums[n + 2:].copy()
        self.sums, self.in_flight = self.in_flight, self.sums
        self._step = progress.step
        self.pending = problem.run.reducer.start_sum(self.sums)
        return votes

    def _wait(self) -> None:
        with self.problem.run.collective(self._step):
            self.pending.wait()

    def _apply_pending(self, progress: Progress) -> None:
        n = self.problem.n
        self._wait()
        progress.epoch_loss += self.sums[n:n + 2]
        self.problem.apply(self.sums, self.grad, self.optimizer, self.state, progress.step)

    def drain(self, progress: Progress) -> None:
        if self.pending is not None:
            self._apply_pending(progress)
            self.pending = None

    def settle(self) -> np.ndarray | None:
        if self.pending is None:
            return None
        self._wait()  # stays pending: the next step applies it, as an uninterrupted run does
        return self.sums


class LocalSGDStep(SyncStep):
    """``comm.mode: local_sgd``."""

    def __init__(self, problem, optimizer, state):
        super().__init__(problem, optimizer, state)
        self.local_loss, self.local_votes = np.zeros(2), np.zeros(2)
        self.every = problem.run.config.comm.local_steps

    def __call__(self, batch, progress: Progress) -> np.ndarray | None:
        problem, n = self.problem, self.problem.n
        problem.local_sums(problem.params, batch, self.sums, progress.step)
        self.local_loss += self.sums[n:n + 2]
        self.local_votes = np.maximum(self.local_votes, self.sums[n + 2:])
        if self.sums[n + 1] > 0:
            problem.last_objective = problem.objective_from_sums(self.sums, problem.params,
                                                                 self.grad)
            problem.last_lr = self.optimizer.update(self.grad, self.state, problem.params)
            problem.model.prox(problem.params, problem.last_lr)
        if (progress.step + 1) % self.every == 0:
            return self._average(progress)
        return None

    def end_epoch(self, progress: Progress, votes):
        if progress.step % self.every:  # not averaged at this step yet
            return self._average(progress)
        return votes

    def replicas_agree(self, votes) -> bool:
        return votes is not None  # replicas differ between averages

    def _average(self, progress: Progress) -> np.ndarray:
        """Replace every replica and optimizer state by their shard-size-weighted means, in one
        reduction of [params | state | loss since last average | votes | weight]. Returns the
        reduced [stop, checkpoint] votes."""
        problem, n, state = self.problem, self.problem.n, self.state
        weight = problem.rows.shard.local_weight
        names = [name for name in sorted(state) if name != "step"]
        parts = [problem.params * weight] + [state[name].reshape(-1) * weight for name in names]
        buf = np.concatenate(parts + [self.local_loss, self.local_votes, [weight]])
        with problem.run.collective(progress.step):
            problem.run.reducer.sum(buf)
        total = buf[-1]
        np.divide(buf[:n], total, out=problem.params)
        offset = n
        for name in names:
            size = state[name].size
            state[name][...] = (buf[offset:offset + size] / total).reshape(state[name].shape)
            offset += size
        progress.epoch_loss += buf[offset:offset + 2]
        self.local_loss[:] = 0.0
        self.local_votes[:] = 0.0
        problem.check_finite(float(buf[offset] / max(buf[offset + 1], 1.0)), progress.step)
        return buf[offset + 2:offset + 4].copy()


def make_step(problem: GradientProblem, optimizer, state: dict,
              pending_sums: np.ndarray | None = None) -> SyncStep:
    """The step of ``comm.mode`` for this run."""
    mode = problem.run.config.comm.mode
    if mode == "overlap":
        return OverlapStep(problem, optimizer, state, pending_sums)
    if mode == "local_sgd":
        return LocalSGDStep(problem, optimizer, state)
    return SyncStep(problem, optimizer, state)
