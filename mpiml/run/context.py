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

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..comm import Reducer, allgather_object, on_root, world
from ..comm.ulfm import fault_tolerant, ulfm_available
from ..config import Config
from ..files.atomic import stale_temporaries
from .checkpoints import Checkpoints
from .exits import EXIT_STOPPED, EXIT_STOPPED_UNSAVED, StoppedAfterCheckpoint
from .lock import RunLock
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
        self.locks: list[RunLock] = []
        #: Called once, at the first beat after a step (the CLI logs its start-up times there).
        self.on_first_step: list[Callable[[], object]] = []

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    # -- the points a loop calls ------------------------------------------------------------------

    def beat(self, step: int, in_collective: bool = False, phase: str = "") -> None:
        """Progress for the stall watchdog (``in_collective``: just before a collective;
        ``phase`` names a start-up phase in its message). The first beat after a step also runs
        :attr:`on_first_step`."""
        if self.on_first_step and step and not in_collective:
            callbacks, self.on_first_step = self.on_first_step, []
            for callback in callbacks:
                callback()
        if self.watchdog is not None:
            self.watchdog.beat(step, in_collective, phase)

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
        """End the run after the agreed stop of ``step``: exit 75 when its checkpoint has been
        written, 76 when checkpoints are disabled (nothing was saved)."""
        saved = self.checkpoints.enabled
        names = allgather_object(getattr(self.stop, "signal_name", "") or "", self.comm)
        self.log({"event": "stopped", "step": step,
                  "signal": next((name for name in names if name), ""),
                  "checkpoint": str(self.checkpoints.directory) if saved else None})
        raise StoppedAfterCheckpoint(EXIT_STOPPED if saved else EXIT_STOPPED_UNSAVED)

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
        for lock in self.locks:  # local (rank 0's files), on every exit path
            lock.release()
        if self.watchdog is None:
            return
        if exc_type is None and self.survival is None:
            self.watchdog.close()  # collective: frees the heartbeat communicator
        else:
            self.watchdog.stop()   # local: other ranks may be gone or elsewhere
        self.watchdog = None

    def _lock(self, directories: list[Path], cleaned: list[Path], break_lock: bool) -> None:
        """Rank 0 locks the run's ``directories`` and removes temporary files of dead writers
        from ``cleaned``, before anything is written or moved; a refusal is raised on every
        rank."""

        def take():
            notes = []
            for directory in directories:
                lock = RunLock(directory)
                note = lock.acquire(break_lock)
                self.locks.append(lock)
                if note:
                    notes.append({"event": "lock_taken_over", "directory": str(directory),
                                  "note": note})
            for directory in cleaned:
                stale = stale_temporaries(directory)
                for path in stale:
                    path.unlink(missing_ok=True)
                if stale:
                    notes.append({"event": "stale_temporaries_removed",
                                  "files": [str(p) for p in stale]})
            return notes

        try:
            notes = on_root(take, self.comm, share=False) or []
        except BaseException:
            for lock in self.locks:
                lock.release()
            raise
        for note in notes:
            self.log(note)


def open_run(config: Config, comm=None, *, log: Callable[[dict], None] = no_log, stop=None,
             fault=None, resume: str | None = None, watchdog: StallWatchdog | None = None,
             output_dir: bool = False, break_lock: bool = False) -> RunContext:
    """Build the context of one fit of ``config`` on ``comm`` (default COMM_WORLD). Collective.

    ``log``: where records go (:class:`mpiml.run.log.RunLog`; default none). ``stop``: the
    :class:`mpiml.run.signals.StopRequests` fed by SIGTERM/SIGUSR1. ``fault``: a
    :class:`mpiml.run.faults.FaultPlan` to inject. ``resume`` overrides ``checkpoint.resume``.

    Rank 0 first locks the run's directories -- ``output.dir`` when ``output_dir`` (the CLI),
    and the checkpoint directory when checkpoints are on -- so that two jobs never share one
    (:mod:`mpiml.run.lock`; ``break_lock`` takes over a lock held from another host).

    The stall watchdog runs when ``fault.stall_seconds`` is set (``watchdog``: one the caller
    started earlier, before any collective). With ``fault.mode: shrink`` the run uses a
    fault-tolerant duplicate of ``comm`` when the MPI library has ULFM (the watchdog then only
    aborts a rank that stops progressing, naming none), and says so and keeps the restart
    behaviour otherwise.
    """
    comm = world(comm)
    seconds = config.fault.stall_seconds
    if watchdog is not None and seconds is None:
        watchdog.stop()
        watchdog = None
    elif watchdog is None and seconds is not None:
        watchdog = StallWatchdog(seconds, comm)
    if watchdog is not None:
        watchdog.seconds = seconds
    shrinking = config.fault.mode == "shrink" and ulfm_available()
    run = RunContext(config, fault_tolerant(comm) if shrinking else comm, log, stop=stop,
                     fault=fault, resume=resume)
    run.watchdog = watchdog
    try:
        directories = [Path(config.output.dir)] if output_dir else []
        checkpoints = run.checkpoints.directory
        cleaned = list(directories)
        if run.checkpoints.enabled:
            cleaned.append(checkpoints)
            if not any(checkpoints.resolve().is_relative_to(d.resolve()) for d in directories):
                directories.append(checkpoints)
        run._lock(directories, cleaned, break_lock)
        if config.fault.mode == "shrink" and not shrinking:
            log({"event": "shrink_unavailable", "fallback": "restart",
                 "reason": "fault.mode shrink needs Open MPI started with "
                           "`mpirun --with-ft ulfm`"})
        if shrinking:
            run.survival = Survival(run)
        elif watchdog is not None:
            watchdog.attach_channel()
    except BaseException:
        run.__exit__(*sys.exc_info())
        raise
    return run
