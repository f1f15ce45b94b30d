"""Checkpoints and stops for the loops that call back once per round (K-Means iterations,
boosting rounds) with their complete resumable state.

After every round :meth:`Rounds.after` beats the watchdog, fires a planned fault, agrees in one
2-value reduction whether a stop signal arrived on any rank and whether a time-based checkpoint
is due, and then rank 0 writes the state as a checkpoint (``state/*`` arrays); on a stop every
rank exits with the reserved code. A resumed run passes the saved state back as the loop's
``start`` and continues bit-identically on the same rank count. Under ``fault.mode: shrink``
each round's state is also kept in memory, and :meth:`Rounds.carry_on` runs the fit again from
the agreed round when a rank dies, on the survivors (:mod:`mpiml.fit.survive`).
"""

from __future__ import annotations

import time

import numpy as np

from ..data.run_rows import RunData
from ..run.context import RunContext
from .survive import carry_on

STATE = "state/"


def identity(kind: str, rows: RunData, **more) -> dict:
    """What a checkpoint must agree with to be resumed into this model."""
    classes = [] if rows.classes is None else np.asarray(rows.classes).tolist()
    return {"model_kind": kind, "n_features": int(rows.shard.n_features), "classes": classes,
            **more}


class Rounds:
    """The per-round plumbing of one K-Means or boosting fit (see the module docstring)."""

    def __init__(self, run: RunContext, rows: RunData, identity: dict, total: int,
                 describe=None):
        """``total``: the rounds the loop may run; ``describe(state)``: what the log says of a
        round besides its pace (K-Means: inertia)."""
        self.run, self.rows, self.identity = run, rows, identity
        self.total, self.describe = total, describe
        self.step = self._first_step = 0
        self.state: dict | None = None
        self._started = time.perf_counter()

    def start_state(self) -> dict | None:
        """The saved state to resume from (0-d arrays back to Python numbers), or None."""
        self.run.beat(0, phase="reading the checkpoint")
        found = self.run.checkpoints.resume(self.run.resume, expected=self.identity,
                                            data=self.rows.fingerprint)
        if found is None:
            return None
        self.step = self._first_step = self.run.checkpoints.last_step = found.step
        return {name[len(STATE):]: value.item() if value.ndim == 0 and name != STATE + "task"
                else value for name, value in found.arrays.items() if name.startswith(STATE)}

    def carry_on(self, fit):
        """``fit(start)`` from the saved state to resume (None: afresh); under ``fault.mode:
        shrink``, after a rank's death, ``fit(state)`` again on the survivors from the state
        of the agreed round. Returns what ``fit`` returns."""
        start = self.start_state()
        self._remember(start)

        def restore(snapshot) -> int:
            nonlocal start
            self.step, start = snapshot
            self.state = start
            return self.step

        def save() -> None:
            if self.state is not None:  # else no round was done: nothing to save
                self.save()

        return carry_on(self.run, self.rows, lambda: fit(start), restore, save)

    def _remember(self, state: dict | None) -> None:
        if self.run.survival is not None:
            self.run.survival.remember(self.step, (self.step, state))

    def after(self, state: dict) -> None:
        """Called by the loop after each round with its complete state."""
        run = self.run
        self.step += 1
        self.state = state
        self._remember(state)
        run.beat(self.step)
        if self.step % run.config.train.log_every == 0:
            run.log(self._pace(state))
        run.inject("before_allreduce", self.step)
        votes = run.agree()
        if votes[0] > 0 or run.checkpoints.due(self.step, votes[1]):
            self.save()
        if votes[0] > 0:
            run.stopped(self.step)

    def _pace(self, state: dict) -> dict:
        """The round of the total, seconds per round and the estimated seconds left."""
        per_round = (time.perf_counter() - self._started) / (self.step - self._first_step)
        record = {"step": self.step, "of": self.total, "seconds_per_round": round(per_round, 4),
                  "eta_s": round(max(self.total - self.step, 0) * per_round, 1)}
        return {**record, **(self.describe(state) if self.describe else {})}

    def save(self, finished: bool = False) -> None:
        arrays = {STATE + name: np.asarray(value) for name, value in self.state.items()}
        converged = bool(self.state.get("converged", False))
        self.run.save_checkpoint(self.step, arrays, dict(
            self.identity, epoch=0, batch=0, finished=finished,
            stopped_early=finished and converged))

    def finish(self) -> None:
        """The final checkpoint (``checkpoint.at_end``), marked finished, when rounds ran."""
        if self.run.config.checkpoint.at_end and self.state is not None:
            self.save(finished=True)
