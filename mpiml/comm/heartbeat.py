"""Liveness messages for the stall watchdog (:mod:`mpiml.run.watchdog`), on their own
communicator so that they never match the training's messages."""

from __future__ import annotations

from .collectives import world
from .ulfm import mpi


class HeartbeatChannel:
    """Every rank sends its small status to rank 0 now and then; rank 0 collects them without
    blocking. Creating and :meth:`close` are collective (a ``Dup`` and a ``Free``)."""

    _TAG = 19

    def __init__(self, comm=None):
        self.comm = world(comm).Dup()
        self.usable = mpi().Query_thread() >= mpi().THREAD_MULTIPLE

    def send(self, report) -> None:
        """Tell rank 0 this rank's small status object (non-blocking; never waited for)."""
        if self.usable and self.comm.Get_rank() != 0:
            self.comm.isend(report, dest=0, tag=self._TAG).Free()

    def receive(self) -> dict:
        """On rank 0: the newest report from each rank heard from since the last call."""
        heard: dict = {}
        if not self.usable or self.comm.Get_rank() != 0:
            return heard
        status = mpi().Status()
        while self.comm.iprobe(source=mpi().ANY_SOURCE, tag=self._TAG, status=status):
            heard[status.Get_source()] = self.comm.recv(source=status.Get_source(),
                                                        tag=self._TAG)
        return heard

    def abort(self, code: int) -> None:
        self.comm.Abort(code)

    def close(self) -> None:
        self.comm.Free()
