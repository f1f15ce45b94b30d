"""How the stall watchdog ends a stalled job: it aborts the run's communicator -- COMM_WORLD for
``python -m mpiml.train``, the abort MPICH reports to hydra's mpiexec -- and does so once
(docs/multi-node.md, "When a host fails")."""

import threading

from mpiml.run import watchdog as watchdog_module
from mpiml.run.watchdog import StallWatchdog


class FakeComm:
    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 2


class SilentChannel:
    """A heartbeat channel on its own communicator, from which nobody is heard."""

    hosts = ["n1", "n2"]

    def __init__(self):
        self.comm = FakeComm()

    def send(self, report) -> None:
        pass

    def receive(self) -> dict:
        return {}


def test_a_stall_aborts_the_runs_communicator_once_even_when_the_abort_returns(monkeypatch,
                                                                               capsys):
    calls, called = [], threading.Event()

    def returning_abort(comm, code, rank_died=False):  # as MPICH 5.0's MPI_Abort does
        calls.append((comm, code))
        called.set()

    monkeypatch.setattr(watchdog_module, "abort", returning_abort)
    comm = FakeComm()
    watchdog = StallWatchdog(0.2, comm)  # watches every 0.05 s
    watchdog.channel = SilentChannel()
    try:
        assert called.wait(5), "the watchdog never aborted"
        threading.Event().wait(0.5)  # ten more rounds of the watch
    finally:
        watchdog.stop()
    assert calls == [(comm, 1)]
    assert capsys.readouterr().err.count("aborting the job") == 1
