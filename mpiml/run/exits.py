"""Exit codes of a run that stops early, and the exception that carries them.

0 success, 1 error (:data:`mpiml.comm.spmd.EXIT_ERROR`), 75 stopped on a signal after writing
a checkpoint (:data:`EXIT_STOPPED`, ``EX_TEMPFAIL`` of sysexits.h: "try again later"; a batch
script requeues on it), 130 interrupted.
"""

from __future__ import annotations

EXIT_STOPPED = 75


class StoppedAfterCheckpoint(SystemExit):
    """A stop signal was agreed; a checkpoint was written; every rank exits with ``code``."""

    raised_on_all_ranks = True
