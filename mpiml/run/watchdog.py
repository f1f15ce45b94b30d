"""Stall watchdog: abort the job, naming the late ranks, when the run stops making progress.

A stalled rank (stopped by SIGSTOP, stuck in I/O, deadlocked) leaves every other rank blocked in
its next collective, forever; so does, under ULFM, a rank that died before the survivors could
shrink. Each rank runs a thread that aborts the job if its own progress has not moved for
``seconds``. The thread starts before any collective of the run (it needs none), so the whole
run is covered, from reading the config to the final save; the loops beat it every step, the
start-up phases as they go.

To say *which* ranks are late, every rank's thread sends its step to rank 0 now and then over a
heartbeat channel (:class:`mpiml.comm.heartbeat.HeartbeatChannel`, attached once the run is set
up); rank 0's thread names the ranks it stopped hearing from, that are behind the others' step,
or that are still computing while the others wait inside a collective, and on which host they
run. Other ranks wait a little longer before they abort themselves, so that rank 0's message
normally comes first.

A host that dies gives no rank time to speak: the launchers end the job within a second, naming
only the host (docs/multi-node.md). So when the ranks span several hosts, rank 0 says once, as
the channel is attached, which ranks run where.
"""

from __future__ import annotations

import faulthandler
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from ..comm import rank_and_size, world
from ..comm.heartbeat import HeartbeatChannel
from ..comm.spmd import abort
from ..comm.ulfm import ulfm_available


@contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Leave this process with exit status 1, after printing where every thread was, if the
    block takes longer than ``seconds``.

    For ``MPI_Init``: it runs while importing ``mpi4py.MPI`` and holds Python's interpreter lock,
    so no watchdog thread can run; a rank waiting there for a peer that died never returns.
    :func:`faulthandler.dump_traceback_later` needs no interpreter lock. An exit status, unlike
    death by a signal, makes every launcher report the failure (Open MPI with ULFM ignores
    processes killed by signals)."""
    if seconds is None:
        yield
        return
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


class StallWatchdog:
    """Call :meth:`beat` as the run progresses (``in_collective=True`` just before a
    collective); the job is aborted if beats stop for ``seconds``. Local: creating it is not a
    collective (:meth:`attach_channel` is)."""

    def __init__(self, seconds: float, comm=None):
        self.seconds = float(seconds)
        self.comm = world(comm)
        self.channel: HeartbeatChannel | None = None
        self.rank, self.size = rank_and_size(self.comm)
        self._heard = {rank: (0, False, time.monotonic()) for rank in range(self.size)}
        self._step, self._in_collective, self._phase = 0, False, "start-up"
        self._last_beat = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mpiml-watchdog", daemon=True)
        self._thread.start()

    def attach_channel(self) -> None:
        """Start the heartbeats that let rank 0 name late ranks, and say where the ranks run
        when that is on several hosts. Collective (a ``Dup`` and an allgather)."""
        self.channel = HeartbeatChannel(self.comm)
        if self.rank == 0 and len(set(self.channel.hosts)) > 1:
            sys.stderr.write(f"mpiml: {placement(range(self.size), self.channel.hosts)}\n")
            sys.stderr.flush()

    def beat(self, step: int, in_collective: bool = False, phase: str = "") -> None:
        self._step, self._in_collective = step, in_collective
        self._phase = phase or f"step {step}"
        self._last_beat = time.monotonic()

    def stop(self) -> None:
        """Stop the thread (local; safe on any exit path, and needed before MPI finalizes)."""
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        """Finish: a last barrier, still watched, then stop watching and free the heartbeat
        communicator (collective when one is attached: the success path). Without the watched
        barrier a rank stopped while finishing its writes would leave the others' launcher
        waiting for it forever."""
        if self.channel is not None:
            self.beat(self._step, in_collective=True, phase="finishing")
            self.comm.Barrier()
        self.stop()
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def _watch(self) -> None:
        interval = max(min(self.seconds / 8, 5.0), 0.05)
        while not self._stop.wait(interval):
            now = time.monotonic()
            channel = self.channel
            if channel is not None:
                channel.send((self._step, self._in_collective))
                for rank, (step, waiting) in channel.receive().items():
                    self._heard[rank] = (step, waiting, now)
            self._heard[self.rank] = (self._step, self._in_collective, self._last_beat)
            patience = self.seconds
            if self.rank != 0 and channel is not None:
                patience = self.seconds * 1.25 + 2 * interval  # let rank 0 name the late ones
            stalled_for = now - self._last_beat
            if stalled_for >= patience:
                self._abort(stalled_for, now)
                return  # MPICH 5.0's MPI_Abort returns: never re-arm the abort's grace timer

    def _late_ranks(self, now: float, hosts: list[str] | None = None) -> str:
        """Which ranks hold the others up. Strongest evidence first: ranks gone silent or behind
        the newest step; only when there are none, ranks still computing while the others wait
        inside the collective. A silent rank's last report is stale, so it is never taken as
        "the others wait" (a rank stopped mid-collective would otherwise blame everyone else).
        ``hosts`` (by rank): say on which hosts the late ranks run, when there are several."""
        fresh = {rank: (step, waiting) for rank, (step, waiting, seen) in self._heard.items()
                 if rank == 0 or now - seen <= self.seconds / 2}
        newest = max(step for step, _, _ in self._heard.values())
        late = sorted(rank for rank, (step, _, _) in self._heard.items()
                      if rank not in fresh or step < newest)
        if not late and any(waiting for _, waiting in fresh.values()):
            late = sorted(rank for rank, (_, waiting) in fresh.items() if not waiting)
        state = ", ".join(f"{rank}: step {step}{' waiting' if waiting else ''}"
                          for rank, (step, waiting, _) in sorted(self._heard.items()))
        if late:
            where = f": {placement(late, hosts)}" if hosts and len(set(hosts)) > 1 else ""
            return f"late ranks: {late}{where} (silent, behind, or not in the collective; {state})"
        return f"every rank is alive and waiting ({state})"

    def _abort(self, stalled_for: float, now: float) -> None:
        message = (f"mpiml: error: stall watchdog: rank {self.rank} made no progress for "
                   f"{stalled_for:.0f} s in {self._phase} (fault.stall_seconds="
                   f"{self.seconds:g})")
        if self.rank == 0 and self.size > 1 and self.channel is not None:
            message += "; " + self._late_ranks(now, self.channel.hosts)
        sys.stderr.write(message + "; aborting the job\n")
        sys.stderr.flush()
        # An abort of COMM_WORLD has the launcher kill every process at once, and hydra may drop
        # what they wrote and it has not forwarded yet: give the message time to get out. (Under
        # ULFM the process leaves at once instead, with its exit status: no launcher kill.)
        if not ulfm_available():
            time.sleep(OUTPUT_SECONDS)
        # The run's communicator, not the heartbeats' duplicate: MPICH tells its launcher only
        # of an abort of COMM_WORLD; on any other communicator it messages that communicator's
        # ranks and exits, and hydra's mpiexec then waits for a partitioned host for good.
        # A stall may be a peer that died (ULFM does not always report one): leave accordingly.
        abort(self.comm, 1, rank_died=True)


#: Seconds between the watchdog's message and its abort (measured: without the wait, MPICH's
#: hydra lost the message in 1 job of ~50 under CI).
OUTPUT_SECONDS = 1.0


def placement(ranks, hosts: list[str]) -> str:
    """Where ``ranks`` run, host by host in order of first rank: "ranks 2, 3 on host n2"."""
    by_host: dict[str, list[int]] = {}
    for rank in ranks:
        by_host.setdefault(hosts[rank], []).append(rank)
    return "; ".join(f"rank{'s' if len(on) > 1 else ''} {', '.join(map(str, on))} on host {host}"
                     for host, on in by_host.items())
