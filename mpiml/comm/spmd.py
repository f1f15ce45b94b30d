"""Run an SPMD entry point so that a failure on any rank ends the whole job instead of hanging it.

Under mpiexec a rank that dies from an uncaught exception leaves the others blocked in their next
collective forever (measured with MPICH and Open MPI). :func:`run_spmd` follows
``python -m mpi4py``: ``SystemExit`` keeps its code, ``KeyboardInterrupt`` becomes 130, any other
exception prints one message naming the rank and becomes 1; a non-zero code calls ``comm.Abort``,
which tears down every rank. Library functions only raise; entry points call this.

An error that every rank raised together (:func:`mpiml.comm.raise_together` marks it) needs no
abort: no rank is left waiting in a collective. Rank 0 prints it once and every rank exits
normally with the code; aborting would let another rank kill rank 0 before its message is out.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

from .collectives import rank_and_size, world

EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    sys.stderr.write(f"{exc.code}\n")
    return EXIT_ERROR


def _report(exc: BaseException, rank: int, size: int) -> None:
    """One message per failure: errors every rank raised together are printed by rank 0 only.

    Those (bad config, bad data, a checkpoint that cannot be used...) and launch mistakes name
    what is wrong in their message, so they print without a traceback; any other exception is a
    bug or an unexpected failure and prints its traceback too."""
    together = getattr(exc, "raised_on_all_ranks", False)
    if together and rank != 0:
        return
    where = "" if size == 1 or together else f"rank {rank} of {size}: "
    expected = together or getattr(exc, "user_error", False)
    text = "" if expected else "".join(traceback.format_exception(exc))
    sys.stderr.write(f"{text}mpiml: error: {where}{type(exc).__name__}: {exc}\n")
    sys.stderr.flush()


def run_spmd(main: Callable[[], int | None], comm=None) -> int:
    """Call ``main()`` on every rank; return its exit code, or abort the job on failure.

    Returns 0 (or ``main``'s integer result) when ``main`` succeeds. On a non-zero exit the job is
    aborted through ``comm.Abort(code)`` when it has more than one rank, and the process exits with
    the code when it runs alone.
    """
    try:
        result = main()
        code = 0 if result is None else int(result)
    except SystemExit as exc:
        code = _exit_code(exc)
        if getattr(exc, "raised_on_all_ranks", False):
            sys.exit(code)  # every rank leaves with the same code: nobody waits, no abort
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    except BaseException as exc:  # noqa: BLE001 -- the point is to catch everything
        rank, size = rank_and_size(comm)
        _report(exc, rank, size)
        if getattr(exc, "raised_on_all_ranks", False):
            sys.exit(EXIT_ERROR)
        code = EXIT_ERROR
    if code == 0:
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    comm = world(comm)
    if comm.Get_size() > 1:
        comm.Abort(code)
    sys.exit(code)
