"""Agreement among ranks: raise the same error everywhere, agree on a flag, do a step on rank 0.

Validation that each rank does on its own rows must end the same way on all ranks, or the ranks
that passed would wait forever in their next collective. Every helper here is collective: call it
on every rank of ``comm``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from .collectives import CollectiveError, broadcast_object, world
from .ulfm import mpi, translating_failures

T = TypeVar("T")


def mark_raised_together(error: BaseException) -> BaseException:
    """Mark ``error`` as raised identically on every rank (so :func:`mpiml.run_spmd` prints it
    once, from rank 0, and needs no abort: no rank is left waiting)."""
    error.raised_on_all_ranks = True
    return error


@translating_failures
def any_true(flag: bool, comm=None) -> bool:
    """True on every rank if ``flag`` is true on any rank (agreed stop/skip decisions)."""
    buf = np.array([1 if flag else 0], dtype=np.int32)
    world(comm).Allreduce(mpi().IN_PLACE, buf, op=mpi().MAX)
    return bool(buf[0])


@translating_failures
def raise_together(error: BaseException | None, comm=None, name_rank: bool = True) -> None:
    """If any rank passes an error, every rank raises one naming the first such rank (or, with
    ``name_rank=False``, for work only one rank does, not naming it).

    The error keeps its type when that type can be rebuilt from a message, else it becomes a
    CollectiveError. One allgather of a small object.
    """
    comm = world(comm)
    # one line: some libraries' messages (scikit-learn's) span several
    mine = None if error is None else (type(error), " ".join(
        line.strip() for line in str(error).splitlines() if line.strip()))
    reports = comm.allgather(mine)
    for rank, report in enumerate(reports):
        if report is None:
            continue
        cls, message = report
        text = message if comm.Get_size() == 1 or not name_rank else f"rank {rank}: {message}"
        exc = _rebuilt(cls, text)
        mark_raised_together(exc)
        if error is not None and rank == comm.Get_rank():
            raise exc from error
        raise exc


def _rebuilt(cls: type, text: str) -> BaseException:
    """``cls(text)``, or the nearest base class that can be built from a message (so that
    ``except ValueError`` still catches, e.g., a JSONDecodeError raised on another rank)."""
    for base in cls.__mro__:
        if base in (BaseException, object):
            break
        try:
            error = base(text if base is cls else f"{cls.__name__}: {text}")
        except Exception:  # noqa: BLE001, S112 -- needs other arguments: try its base
            continue
        if isinstance(error, Exception):
            return error
    return CollectiveError(f"{cls.__name__}: {text}")


def agree_on_error(error: BaseException | None, comm=None) -> None:
    """:func:`raise_together`, but one small allreduce of a flag when no rank failed (the
    common case in loops that check every block they read)."""
    if any_true(error is not None, comm):
        raise_together(error, comm)


def on_root(task: Callable[[], T], comm=None, root: int = 0, share: bool = True) -> T | None:
    """Run ``task()`` on rank ``root`` only; an exception in it is raised on every rank, so no
    rank is left waiting: the one pattern behind every "rank 0 reads or writes a file" step.

    Returns the result on every rank (broadcast as a small object), or with ``share=False`` on
    ``root`` only (None elsewhere: for results the caller sends its own way, e.g. large arrays).
    """
    comm = world(comm)
    result, payload, error = None, None, None
    if comm.Get_rank() == root:
        try:
            result = task()
            if share and comm.Get_size() > 1:  # a result that cannot be sent fails here too
                payload = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # noqa: BLE001 -- every rank must learn of any failure
            error = exc
    raise_together(error, comm, name_rank=False)
    if not share or comm.Get_size() == 1:
        return result
    payload = broadcast_object(payload, comm, root=root)
    return result if comm.Get_rank() == root else pickle.loads(payload)  # noqa: S301
