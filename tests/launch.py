"""Start real MPI jobs from tests: MPICH's mpiexec from this venv, or Open MPI's from another.

A job that outlives its timeout is killed with its whole process group, so a hang fails the test
instead of the suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OMPI_PYTHON_VAR = "MPIML_OMPI_PYTHON"


@dataclass
class Job:
    returncode: int
    output: str
    seconds: float
    timed_out: bool


def single_thread_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def needs_openmpi(mpi: str) -> None:
    """Skip (which `make test` turns into a failure) when no Open MPI environment is configured."""
    if mpi.startswith("openmpi") and not os.environ.get(OMPI_PYTHON_VAR):
        import pytest

        pytest.skip(f"{OMPI_PYTHON_VAR} is not set: no Open MPI environment (make test sets it)")


def launcher(nprocs: int, mpi: str = "mpich") -> list[str]:
    """The argv prefix that starts ``nprocs`` ranks of Python with the given MPI."""
    if mpi == "mpich":
        python = Path(sys.executable)
        return [str(python.parent / "mpiexec"), "-n", str(nprocs), str(python)]
    if mpi in ("openmpi", "openmpi-ulfm"):
        python = Path(os.environ[OMPI_PYTHON_VAR])
        ulfm = ["--with-ft", "ulfm"] if mpi == "openmpi-ulfm" else []
        return [str(python.parent / "mpirun"), *ulfm, "--oversubscribe", "-n", str(nprocs),
                str(python)]
    raise ValueError(f"unknown MPI {mpi!r}")


def run(argv: list[str], timeout: float, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> Job:
    """Run ``argv`` in its own process group; kill the group at ``timeout`` seconds."""
    env = single_thread_env() if env is None else env
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=cwd or ROOT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        timed_out = True
    return Job(proc.returncode, out, time.monotonic() - start, timed_out)


def run_mpi(nprocs: int, args: list[str], timeout: float = 120, mpi: str = "mpich",
            env: dict[str, str] | None = None, cwd: Path | None = None) -> Job:
    """``mpiexec -n nprocs python ARGS...`` with a hard timeout."""
    return run(launcher(nprocs, mpi) + args, timeout=timeout, env=env, cwd=cwd)
