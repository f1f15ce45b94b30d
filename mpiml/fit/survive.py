"""``fault.mode: shrink`` in the loops: what every loop does once the survivors have shrunk.

:class:`mpiml.run.shrink.Survival` keeps the loop's snapshots, shrinks the communicator and
returns the agreed snapshot. The loops then need their rows for the new rank count
(:func:`reread_rows`). L-BFGS, K-Means and boosting cannot pick up in the middle of a step (scipy's
line search, a fit's internal loop), but each can start again from a complete state, as a resume
from a checkpoint does: :func:`carry_on` calls such a fit again from the agreed snapshot, on the
survivors, without leaving the job. Every survivor restarts from the same state, so they call
the same collectives in the same order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import TypeVar

from ..comm import RankFailure
from ..data.run_rows import RunData, load_run_data
from ..run.context import RunContext

T = TypeVar("T")


def reread_rows(run: RunContext, rows: RunData) -> None:
    """This rank's rows for the survivors' rank count, read into ``rows`` in place (so that
    every holder of ``rows`` sees them), with the feature scaler kept. Collective."""
    fresh = load_run_data(run.config, run.reducer, rows.task, scaler=rows.scaler)
    for field in fields(RunData):
        setattr(rows, field.name, getattr(fresh, field.name))


def carry_on(run: RunContext, rows: RunData, attempt: Callable[[], T],
             restore: Callable[[object], int], save: Callable[[], None]) -> T:
    """``attempt()``; when a rank dies in it under ``fault.mode: shrink``, the survivors shrink,
    re-read ``rows``, ``restore(snapshot)`` the loop's state to the agreed snapshot (returning
    its step) and call ``attempt()`` again. With fewer than ``fault.min_ranks`` survivors they
    restore, ``save()`` that state as a checkpoint and stop (exit 75) instead, without reading
    rows. A rank that dies during the recovery starts it again. The loop remembers its
    snapshots itself (``run.survival.remember``), the first one before calling this."""
    recovering = False
    while True:
        try:
            if recovering:
                snapshot, enough = run.survival.recover()
                if enough:
                    reread_rows(run, rows)
                step = restore(snapshot)
                if not enough:
                    save()
                    run.stopped(step)
            return attempt()
        except RankFailure:
            if run.survival is None:
                raise
            recovering = True
