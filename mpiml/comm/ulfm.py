"""Surviving a rank's death with ULFM (User-Level Failure Mitigation, Open MPI ``--with-ft ulfm``).

On a communicator with ``MPI.ERRORS_RETURN`` (see :func:`fault_tolerant`) a collective whose peer
died fails with ``ERR_PROC_FAILED`` (or ``ERR_REVOKED`` once a survivor revoked it) instead of
ending the job. :func:`translating_failures` turns those errors into :class:`RankFailure`, which
the run layer catches to :func:`shrink` the communicator to the survivors and carry on.
Everywhere else a dead rank ends the job, as MPI does by default.
"""

from __future__ import annotations

import functools
import os


class RankFailure(RuntimeError):
    """A rank of the communicator died during a collective (ULFM: ERR_PROC_FAILED or the
    communicator was revoked by a rank that saw one). The survivors can :func:`shrink`."""

    user_error = True  # an expected failure: its message says what happened, no traceback


def mpi():
    """``mpi4py.MPI``, imported on first use so that ``import mpiml`` never initialises MPI."""
    from mpi4py import MPI

    return MPI


def _failure_classes() -> tuple[int, ...]:
    MPI = mpi()
    return tuple(getattr(MPI, name) for name in ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING",
                                                 "ERR_REVOKED") if hasattr(MPI, name))


def translating_failures(function):
    """Turn an MPI error that reports a dead rank into :class:`RankFailure` (other errors pass
    through). Only communicators with ERRORS_RETURN report them."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except Exception as exc:
            MPI = mpi()
            if isinstance(exc, MPI.Exception) and exc.Get_error_class() in _failure_classes():
                raise RankFailure(f"a rank of the job died (MPI error class "
                                  f"{exc.Get_error_class()} in {function.__name__})") from exc
            raise

    return wrapper


def ulfm_available() -> bool:
    """True when the MPI library runs with ULFM enabled (Open MPI started as ``mpirun --with-ft
    ulfm``): survivors can then shrink and carry on."""
    MPI = mpi()
    enabled = os.environ.get("OMPI_MCA_mpi_ft_enable", "").lower() in ("1", "true", "yes")
    return enabled and hasattr(MPI.Comm, "Shrink") and "Open MPI" in MPI.Get_library_version()


def fault_tolerant(comm):
    """A duplicate of ``comm`` on which a dead rank raises :class:`RankFailure` instead of
    aborting the job (call :func:`ulfm_available` first). Collective."""
    dup = comm.Dup()
    dup.Set_errhandler(mpi().ERRORS_RETURN)
    return dup


def shrink(comm):
    """The survivors' communicator after a :class:`RankFailure`: revoke ``comm`` (so every
    survivor's pending collective on it fails too) and shrink it. Collective over survivors."""
    MPI = mpi()
    try:
        comm.Revoke()
    except MPI.Exception:
        pass  # already revoked by another survivor
    survivors = comm.Shrink()
    survivors.Set_errhandler(MPI.ERRORS_RETURN)
    return survivors
