"""Stall watchdog: abort the job, naming the late ranks, when training stops making progress.

A stalled rank (stopped by SIGSTOP, stuck in I/O, deadlocked) leaves every other rank blocked in
its next collective, forever. Each rank runs a thread that aborts the job if its own step counter
has not moved for ``seconds``. To say *which* ranks are late, every rank's thread sends its step
to rank 0 now and then (:class:`mpiml.comm.heartbeat.HeartbeatChannel`); rank 0's thread names the
ranks it stopped hearing from, that are behind the others' step, or that are still computing
while the others wait inside a collective. Other ranks wait a little longer before they abort
themselves, so that rank 0's message normally comes first (if rank 0 stalled, they abort).
"""

from __future__ import annotations

import sys
import threading
import time

from ..comm import rank_and_size
from ..comm.heartbeat import HeartbeatChannel


class StallWatchdog:
    """Call :meth:`beat` at every step (``in_collective=True`` just before a collective); the
    job is aborted if beats stop for ``seconds``. It arms itself at the first beat, so loading
    data or a checkpoint before the first step never counts as a stall."""

    def __init__(self, seconds: float, comm=None):
        self.seconds = float(seconds)
        self.channel = HeartbeatChannel(comm)
        self.rank, self.size = rank_and_size(comm)
        self._step, self._in_collective, self._armed = 0, False, False
        self._last_beat = time.monotonic()
        self._heard = {rank: (0, False, time.monotonic()) for rank in range(self.size)}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mpiml-watchdog", daemon=True)
        self._thread.start()

    def beat(self, step: int, in_collective: bool = False) -> None:
        self._step, self._in_collective, self._armed = step, in_collective, True
        self._last_beat = time.monotonic()

    def stop(self) -> None:
        """Stop the thread (local; safe on any exit path, and needed before MPI finalizes)."""
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        """Stop watching and free the heartbeat communicator (collective: the success path)."""
        self.stop()
        self.channel.close()

    def _watch(self) -> None:
        interval = max(min(self.seconds / 8, 5.0), 0.05)
        patience = self.seconds if self.rank == 0 else self.seconds * 1.25 + 2 * interval
        while not self._stop.wait(interval):
            self.channel.send((self._step, self._in_collective))
            now = time.monotonic()
            for rank, (step, waiting) in self.channel.receive().items():
                self._heard[rank] = (step, waiting, now)
            self._heard[self.rank] = (self._step, self._in_collective, self._last_beat)
            stalled_for = now - self._last_beat
            if self._armed and stalled_for >= patience:
                self._abort(stalled_for, now)

    def _late_ranks(self, now: float) -> str:
        """Which ranks hold the others up: silent ones, ones behind the newest step, and ones
        still computing while the rest wait inside the collective."""
        newest = max(step for step, _, _ in self._heard.values())
        someone_waits = any(waiting for _, waiting, _ in self._heard.values())
        late = sorted(rank for rank, (step, waiting, seen) in self._heard.items()
                      if step < newest or (rank != 0 and now - seen > self.seconds / 2)
                      or (someone_waits and not waiting))
        state = ", ".join(f"{rank}: step {step}{' waiting' if waiting else ''}"
                          for rank, (step, waiting, _) in sorted(self._heard.items()))
        if late:
            return f"late ranks: {late} (silent, behind, or not in the collective; {state})"
        return f"every rank is alive and waiting ({state})"

    def _abort(self, stalled_for: float, now: float) -> None:
        message = (f"mpiml: error: stall watchdog: rank {self.rank} made no progress for "
                   f"{stalled_for:.0f} s after step {self._step} (fault.stall_seconds="
                   f"{self.seconds:g})")
        if self.rank == 0 and self.size > 1:
            message += "; " + self._late_ranks(now)
        sys.stderr.write(message + "; aborting the job\n")
        sys.stderr.flush()
        self.channel.abort(1)
