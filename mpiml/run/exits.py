"""Exit codes of a run that stops early, and the exception that carries them.

0 success, 1 error (:data:`mpiml.comm.spmd.EXIT_ERROR`), 75 stopped on a signal after writing
a checkpoint of the current state (:data:`EXIT_STOPPED`, ``EX_TEMPFAIL`` of sysexits.h: "try
again later"; a batch script requeues on it), 76 stopped on a signal with checkpoints disabled,
so nothing was saved (:data:`EXIT_STOPPED_UNSAVED`; never requeued: a rerun starts from zero),
130 interrupted.
"""

from __future__ import annotations

EXIT_STOPPED = 75
EXIT_STOPPED_UNSAVED = 76


class StoppedAfterCheckpoint(SystemExit):
    """A stop signal was agreed and every rank exits with ``code``: 75 when a checkpoint of
    the current state was written, 76 when checkpoints are disabled."""

    raised_on_all_ranks = True
