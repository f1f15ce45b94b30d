"""One run's context: everything a fit loop needs around its arithmetic, built once per fit.

The CLI and the estimators build a :class:`RunContext` with :func:`open_run` and hand it to the
loop the model kind needs (:func:`mpiml.fit.fit`). It holds the communicator and the run's one
:class:`mpiml.comm.Reducer`, the log, the checkpoint policy, stop requests, the stall watchdog,
fault injection and, with ``fault.mode: shrink`` under ULFM, the survival of a rank's death.
The loops call it at fixed points -- :meth:`RunContext.beat` every step, :meth:`RunContext.inject`
where a fault may fire, :meth:`RunContext.agree` to agree on "stop" and "checkpoint due" -- and
never test for a missing watchdog or fault plan themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from ..comm import Reducer, world
from ..comm.ulfm import fault_tolerant, ulfm_available
from ..config import Config
from .checkpoints import Checkpoints
from .exits import EXIT_STOPPED, StoppedAfterCheckpoint
from .log import no_log
from .shrink import Survival
from .watchdog import StallWatchdog


class RunContext:
    """The plumbing of one fit on ``comm`` (see the module docstring). Build it with
    :func:`open_run` and use it as a context manager: leaving it stops the watchdog."""

    def __init__(self, config: Config, comm, log: Callable[[dict], None], stop=None, fault=None,
                 resume: str | None = None):
        self.config, self.comm, self.log = config, comm, log
        self.stop, self.fault, self.resume = stop, fault, resume
        self.start_rank = comm.Get_rank()  # the rank faults name (ranks renumber after a shrink)
        self.reducer = Reducer(comm, config.comm.algorithm, config.comm.ring_threshold,
                               config.block_rows)
        self.checkpoints = Checkpoints(config, comm, log, fault)
        self.survival: Survival | None = None
        self.watchdog: StallWatchdog | None = None

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    # -- the points a loop calls ------------------------------------------------------------------

    def beat(self, step: int, in_collective: bool = False) -> None:
        """Progress for the stall watchdog (``in_collective``: just before a collective)."""
        if self.watchdog is not None:
            self.watchdog.beat(step, in_collective)

    @contextmanager
    def collective(self, step: int) -> Iterator[None]:
        """Around a reduction of ``step``: the watchdog knows this rank is waiting in it."""
        self.beat(step, in_collective=True)
        yield
        self.beat(step)

    def inject(self, point: str, step: int) -> str | None:
        """Fire the fault planned at ``point`` of ``step`` on this rank, if any; returns the
        action the caller applies ("nan", "diverge") or None (see :mod:`mpiml.run.faults`)."""
        if self.fault is not None and self.fault.due(point, step, self.start_rank):
            return self.fault.fire()
        return None

    def votes(self) -> np.ndarray:
        """This rank's ``[stop requested, time-based checkpoint due]``, to be summed in a
        reduction the loop makes anyway (or by :meth:`agree`)."""
        requested = float(self.stop is not None and self.stop.requested)
        return np.array([requested, self.checkpoints.time_vote()])

    def agree(self) -> np.ndarray:
        """The reduced :meth:`votes`, in one small allreduce (for loops whose own reductions
        carry no room for them)."""
        return self.reducer.sum(self.votes())

    def save_checkpoint(self, step: int, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Rank 0 writes a checkpoint of ``step`` (collective)."""
        self.beat(step)
        self.checkpoints.save(step, arrays, meta)
        self.inject("after_checkpoint", step)

    def stopped(self, step: int) -> None:
        """End the run after the agreed stop: a checkpoint of ``step`` has been written."""
        self.log({"event": "stopped", "step": step,
                  "signal": getattr(self.stop, "signal_name", ""),
                  "checkpoint": str(self.checkpoints.directory)})
        raise StoppedAfterCheckpoint(EXIT_STOPPED)

    def replace_comm(self, comm) -> None:
        """Carry on on ``comm`` (the survivors' communicator after a shrink)."""
        self.comm = comm
        self.reducer = self.reducer.on(comm)
        self.checkpoints.comm = comm
        if hasattr(self.log, "set_root"):
            self.log.set_root(comm.Get_rank() == 0)

    # -- lifetime ---------------------------------------------------------------------------------

    def __enter__(self) -> RunContext:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if self.watchdog is None:
            return
        if exc_type is None:
            self.watchdog.close()  # collective: frees the heartbeat communicator
        else:
            self.watchdog.stop()   # local: other ranks may be gone or elsewhere
        self.watchdog = None


def open_run(config: Config, comm=None, *, log: Callable[[dict], None] = no_log, stop=None,
             fault=None, resume: str | None = None) -> RunContext:
    """Build the context of one fit of ``config`` on ``comm`` (default COMM_WORLD). Collective.

    ``log``: where records go (:class:`mpiml.run.log.RunLog`; default none). ``stop``: the
    :class:`mpiml.run.signals.StopRequests` fed by SIGTERM/SIGUSR1. ``fault``: a
    :class:`mpiml.run.faults.FaultPlan` to inject. ``resume`` overrides ``checkpoint.resume``.
    With ``fault.mode: shrink`` the run uses a fault-tolerant duplicate of ``comm`` when the MPI
    library has ULFM, and says so and keeps the restart behaviour otherwise. The stall watchdog
    runs when ``fault.stall_seconds`` is set, except while ULFM survival handles dead ranks.
    """
    comm = world(comm)
    shrinking = config.fault.mode == "shrink"
    if shrinking and not ulfm_available():
        log({"event": "shrink_unavailable", "fallback": "restart",
             "reason": "fault.mode shrink needs Open MPI started with `mpirun --with-ft ulfm`"})
        shrinking = False
    run = RunContext(config, fault_tolerant(comm) if shrinking else comm, log, stop=stop,
                     fault=fault, resume=resume)
    if shrinking:
        run.survival = Survival(run)
    elif config.fault.stall_seconds is not None:
        run.watchdog = StallWatchdog(config.fault.stall_seconds, comm)
    return run
