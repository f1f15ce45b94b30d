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

import faulthandler
import os
import sys
import traceback
from collections.abc import Callable

from .collectives import rank_and_size, world
from .ulfm import RankFailure, ulfm_available

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
    what is wrong in their message, so they print without a traceback (unless ``MPIML_DEBUG=1``);
    any other exception is a bug or an unexpected failure and prints its traceback too."""
    together = getattr(exc, "raised_on_all_ranks", False)
    if together and rank != 0:
        return
    where = "" if size == 1 or together else f"rank {rank} of {size}: "
    debug = os.environ.get("MPIML_DEBUG", "") not in ("", "0")
    expected = (together or getattr(exc, "user_error", False)) and not debug
    text = "" if expected else "".join(traceback.format_exception(exc))
    sys.stderr.write(f"{text}mpiml: error: {where}{type(exc).__name__}: {exc}\n")
    sys.stderr.flush()


def run_spmd(main: Callable[[], int | None], comm=None) -> int:
    """Call ``main()`` on every rank; return its exit code, or abort the job on failure.

    Returns 0 (or ``main``'s integer result) when ``main`` succeeds. On a non-zero exit the job is
    aborted through ``comm.Abort(code)`` when it has more than one rank, and the process exits with
    the code when it runs alone.
    """
    rank_died = False
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
        rank_died = isinstance(exc, RankFailure)
        if getattr(exc, "raised_on_all_ranks", False):
            sys.exit(EXIT_ERROR)
        code = EXIT_ERROR
    if code == 0:
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    comm = world(comm)
    if comm.Get_size() > 1:
        abort(comm, code, rank_died=rank_died)
    sys.exit(code)


#: Seconds a program mpiml owns waits in ``MPI_Finalize`` before it leaves by itself.
FINALIZE_SECONDS = 10.0


def run_program(main: Callable[[], int | None]) -> int:
    """:func:`run_spmd` for a program mpiml owns (its commands), which then ends MPI itself.

    MPICH's ``MPI_Finalize`` waits for every rank: a peer stopped or lost after the last
    collective would hold this rank, and the launcher, forever. The program leaves with exit
    status 1 (printing where it was) if finalising takes ``FINALIZE_SECONDS``; a library call
    never finalises its caller's MPI."""
    try:
        return run_spmd(main)
    finally:
        finalize_within(FINALIZE_SECONDS)


def finalize_within(seconds: float) -> None:
    """``MPI_Finalize``, left with exit status 1 if it has not returned after ``seconds`` (the
    timer is :mod:`faulthandler`'s: Finalize holds Python's interpreter lock)."""
    if "mpi4py.MPI" not in sys.modules:
        return
    from mpi4py import MPI

    if not MPI.Is_initialized() or MPI.Is_finalized():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        MPI.Finalize()
    finally:
        faulthandler.cancel_dump_traceback_later()


#: Seconds after which a process whose ``MPI_Abort`` has not ended it leaves by itself.
ABORT_GRACE_SECONDS = 10.0


def abort(comm, code: int, rank_died: bool = False) -> None:
    """End the job: ``comm.Abort(code)``; leave with exit status 1 if that has not ended this
    process ``ABORT_GRACE_SECONDS`` later, printing where its threads were (the timer is
    :mod:`faulthandler`'s, a C thread: it fires even while Abort holds Python's interpreter lock).

    ``rank_died`` (a rank of the job is or may be dead) under ULFM: leave with ``code`` at once
    instead. Open MPI's launcher, run with ``--with-ft ulfm``, was seen to hang for good after
    MPI_Abort when a process had died (1 run in 15, every rank gone); when every process exits
    with a code it ends the job and reports it (15 of 15)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if rank_died and ulfm_available():
        os._exit(code)
    faulthandler.dump_traceback_later(ABORT_GRACE_SECONDS, exit=True)
    comm.Abort(code)
