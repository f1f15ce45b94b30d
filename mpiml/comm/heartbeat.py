"""Liveness messages for the stall watchdog (:mod:`mpiml.run.watchdog`), on their own
communicator so that they never match the training's messages, and every rank's host, so that
a report about late ranks can say where they ran."""

from __future__ import annotations

import socket

from .collectives import world
from .ulfm import mpi


class HeartbeatChannel:
    """Every rank sends its small status to rank 0 now and then; rank 0 collects them without
    blocking. Creating (a ``Dup`` and an allgather of the hostnames, :attr:`hosts`) and
    :meth:`close` (a ``Free``) are collective."""

    _TAG = 19

    def __init__(self, comm=None):
        self.comm = world(comm).Dup()
        #: Every rank's hostname, by rank.
        self.hosts: list[str] = self.comm.allgather(socket.gethostname())
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
