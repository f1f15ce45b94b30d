"""Stop requests from SIGTERM / SIGUSR1 (Slurm time limits, preemption) that work during MPI calls.

A Python signal handler only runs when the main thread returns to the interpreter, which it does
not do while blocked inside an MPI call (measured with MPICH and Open MPI). So the CLI blocks the
signals with ``pthread_sigmask`` before numpy or MPI start any thread (threads inherit the mask),
and one thread consumes them with ``sigwait``: it records the request, which the training loop
turns into an agreed stop at the next step boundary (the vote rides in the step's allreduce). If
the loop has not stopped ``grace_seconds`` later (a rank is stuck in MPI), the thread exits the
process with 128 + signal, which makes the launcher end the job instead of leaving it hanging.

This module imports nothing heavy: it must run before numpy is imported.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequests:
    """Whether a stop signal arrived (``requested``), and which one (``signal_name``)."""

    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self.grace_seconds: float | None = None
        self._finished = threading.Event()

    def block_and_listen(self, signals=STOP_SIGNALS) -> StopRequests:
        """Block ``signals`` in this thread (and so in threads started later) and start the
        listener thread. Call once, from the main thread, before importing numpy or mpi4py."""
        signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        thread = threading.Thread(target=self._listen, args=(set(signals),),
                                  name="mpiml-signals", daemon=True)
        thread.start()
        return self

    def _listen(self, signals) -> None:
        signum = signal.sigwait(signals)
        self.signal_name = signal.Signals(signum).name
        self.requested = True
        if self.grace_seconds is None:
            return
        if not self._finished.wait(self.grace_seconds):
            sys.stderr.write(f"mpiml: error: {self.signal_name} received but the job did not "
                             f"stop within {self.grace_seconds:g} s (a rank is stuck); "
                             f"exiting\n")
            sys.stderr.flush()
            os._exit(128 + signum)

    def finished(self) -> None:
        """The run is over: the grace timer must not fire any more."""
        self._finished.set()

    def request(self, name: str = "request") -> None:
        """Ask for a stop from code (library users; tests)."""
        self.signal_name, self.requested = name, True

