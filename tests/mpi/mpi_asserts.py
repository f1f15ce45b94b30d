"""Collective assertions for tests that run on every rank.

If one rank failed alone, the others would go on into the next test's collectives with mismatched
partners and hang. ``assert_all`` makes every rank fail together and names the ranks that failed.
"""

from mpi4py import MPI


def assert_all(condition: bool, message: str = "", comm=None) -> None:
    """Fail on every rank if ``condition`` is false on any rank of ``comm``."""
    comm = MPI.COMM_WORLD if comm is None else comm
    verdicts = comm.allgather((bool(condition), message))
    failed = [(rank, msg) for rank, (ok, msg) in enumerate(verdicts) if not ok]
    assert not failed, "; ".join(f"rank {rank}: {msg}" for rank, msg in failed)
