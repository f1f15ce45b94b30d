"""``fault.mode: shrink``: survive a rank's death (ULFM) by shrinking to the survivors.

The loop keeps a snapshot of its state before each step (:meth:`Survival.remember`; the last two
are kept, since a survivor can be at most one step ahead of another when a rank dies). On a
:class:`mpiml.comm.RankFailure` it calls :meth:`Survival.recover`: the survivors revoke and shrink
the communicator, agree on the step to redo -- the smallest one any survivor was working on, one
MIN allreduce on the healthy communicator -- and get that step's snapshot back, identical on every
survivor because every completed step applied identical reduced values everywhere. The loop then
re-reads its rows for the new rank count and carries on (:mod:`mpiml.fit.survive`; a step may be
an L-BFGS iteration, a K-Means iteration or a boosting round); the new rank 0 takes over logging
and saving.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from ..comm import allgather_object
from ..comm.ulfm import shrink


class Survival:
    """Snapshots of the loop state and the shrink of one run (see the module docstring)."""

    def __init__(self, run):
        self.run = run
        self.alive = set(range(run.comm.Get_size()))
        self._snapshots: dict[int, object] = {}

    def remember(self, step: int, state) -> None:
        """Keep a private copy of ``state``, the loop's state before ``step``."""
        self._snapshots[step] = copy.deepcopy(state)
        self._snapshots.pop(step - 2, None)

    def recover(self) -> tuple[object, bool]:
        """After a rank died: shrink, agree on the step to redo, and return (a copy of its
        snapshot, whether at least ``fault.min_ranks`` survive to carry on -- else the caller
        checkpoints that state and stops). Collective over the survivors."""
        started = time.perf_counter()
        run = self.run
        run.replace_comm(shrink(run.comm))
        working_on = np.array([max(self._snapshots)], dtype=np.int64)
        agreed = int(run.reducer.min(working_on)[0])
        for step in [s for s in self._snapshots if s > agreed]:
            del self._snapshots[step]
        survivors = set(allgather_object(run.start_rank, run.comm))
        dead, self.alive = sorted(self.alive - survivors), survivors
        enough = run.comm.Get_size() >= run.config.fault.min_ranks
        action = ("shrink" if enough else f"fewer than fault.min_ranks="
                  f"{run.config.fault.min_ranks} survive: checkpoint and exit")
        run.log({"event": "rank_failure", "dead_ranks": dead, "step": agreed,
                 "ranks_left": run.comm.Get_size(), "action": action,
                 "seconds": round(time.perf_counter() - started, 4)})
        return copy.deepcopy(self._snapshots[agreed]), enough
