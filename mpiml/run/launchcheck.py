"""Detect a job started as N separate single-rank copies instead of one N-rank MPI job.

The classic silent failure: ``srun -n 4 python -m mpiml.train ...`` without ``--mpi=pmi2`` (or
with an MPI library that cannot read the launcher's PMI, or mpi4py built against a different MPI
than the ``mpiexec`` used) starts 4 processes that each see ``COMM_WORLD`` of size 1. Every copy
thinks it is rank 0, trains on all the data alone and overwrites the others' outputs. The
launcher's environment tells us how many ranks were meant:

- ``PMI_SIZE`` (MPICH's hydra, and ``srun --mpi=pmi2``) or ``OMPI_COMM_WORLD_SIZE`` (Open MPI's
  mpirun): set by an MPI launcher for its ranks; it is the intended world size.
- otherwise, inside a Slurm job step (``SLURM_STEP_ID`` set): ``SLURM_STEP_NUM_TASKS``, else
  ``SLURM_NTASKS``.

The MPI launcher's variables win over Slurm's because ``mpiexec`` inside an allocation starts
its own ranks through a Slurm step of one proxy per node (measured with hydra: the ranks see
``SLURM_STEP_NUM_TASKS=1``, ``SLURM_NTASKS=1`` and ``PMI_SIZE=2``), so Slurm's task count is the
number of proxies, not of ranks. A batch script's own shell is not a step (no ``SLURM_STEP_ID``),
so a single-process run inside an allocation is not flagged.

Deliberately independent single-rank copies (e.g. ``srun -n 4 bash -c '... task-$SLURM_PROCID'``)
can opt out with ``MPIML_LAUNCHCHECK=0``. Pure Python and no MPI import: the caller passes
``COMM_WORLD``'s size.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["OPT_OUT_VAR", "LaunchError", "check_launch", "intended_size"]

#: ``MPIML_LAUNCHCHECK=0`` turns the check off.
OPT_OUT_VAR = "MPIML_LAUNCHCHECK"


class LaunchError(RuntimeError):
    """The job was launched as several independent single-rank copies."""

    user_error = True  # printed without a traceback: the message says how to launch


def _positive_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def intended_size(environ: Mapping[str, str] = os.environ) -> tuple[int, str] | None:
    """The number of ranks the launcher meant to start, and the variable that says so; None when
    nothing in the environment says (a plain ``python`` run, or a batch script's own shell)."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        size = _positive_int(environ, name)
        if size is not None:
            return size, name
    if "SLURM_STEP_ID" not in environ and "SLURM_STEPID" not in environ:
        return None
    for name in ("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"):
        size = _positive_int(environ, name)
        if size is not None:
            return size, name
    return None


def check_launch(size: int, environ: Mapping[str, str] = os.environ) -> None:
    """Raise :class:`LaunchError` when the launcher started N > 1 tasks but MPI sees ``size`` 1.

    ``size``: ``COMM_WORLD.Get_size()``. Call it once per process, before any output is written.
    """
    if environ.get(OPT_OUT_VAR, "").strip() == "0":
        return
    intended = intended_size(environ)
    if size != 1 or intended is None or intended[0] <= 1:
        return
    n, name = intended
    task = environ.get("SLURM_PROCID", environ.get("PMI_RANK", "?"))
    if name.startswith("SLURM_"):
        cause = (f"Slurm started {n} tasks ({name}={n}) but MPI sees 1 rank in each, so every "
                 f"task is a separate job that thinks it is rank 0 (this is task {task}): they "
                 f"would each train on all the data and overwrite each other's output. srun "
                 f"started them without an MPI plugin (`srun --mpi=none`, or MpiDefault=none "
                 f"in slurm.conf)")
    else:
        cause = (f"the launcher started {n} ranks ({name}={n}) but MPI sees 1 rank, so every "
                 f"process is a separate job that thinks it is rank 0 (this is task {task}). "
                 f"The MPI library mpi4py uses did not connect to the launcher: mpi4py is built "
                 f"against a different MPI than this mpiexec/mpirun, or srun's --mpi plugin is "
                 f"one that MPI cannot use")
    raise LaunchError(
        f"launch mistake: {cause}. Launch the ranks as one MPI job: `srun --mpi=pmi2 -n {n} "
        f"python -m mpiml.train ...` (`srun --mpi=list` shows the plugins), or `mpiexec -n {n} "
        f"python -m mpiml.train ...` with the mpiexec of the MPI that mpi4py uses "
        f"(`python -c 'from mpi4py import MPI; print(MPI.Get_library_version())'`). See "
        f"docs/slurm.md.")
