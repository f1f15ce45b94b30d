"""run_spmd ends the whole job when one rank fails, under a real mpiexec (no hang)."""

from pathlib import Path

import pytest
from launch import needs_openmpi, run_mpi

MPIS = ["mpich", "openmpi"]
PROGRAM = str(Path(__file__).parent / "programs" / "spmd_scenarios.py")


def test_success_exits_zero():
    job = run_mpi(3, [PROGRAM, "success", "-1"], timeout=60)
    assert job.returncode == 0, job.output


@pytest.mark.parametrize("mpi", MPIS)
@pytest.mark.parametrize("failing_rank", [0, 1, 2])
def test_exception_on_one_rank_ends_job_quickly(failing_rank, mpi):
    needs_openmpi(mpi)
    job = run_mpi(3, [PROGRAM, "raise", str(failing_rank)], timeout=60, mpi=mpi)
    assert not job.timed_out, f"job hung:\n{job.output}"
    assert job.returncode != 0
    assert job.seconds < 20, f"took {job.seconds:.1f}s"
    assert f"rank {failing_rank} of 3: ValueError: scenario failure on purpose" in job.output
    assert job.output.count("mpiml: error:") == 1, "exactly one rank reports the failure"


def test_system_exit_code_is_kept_when_alone():
    job = run_mpi(1, [PROGRAM, "exit3", "0"], timeout=60)
    assert job.returncode == 3, job.output


@pytest.mark.parametrize("mpi", MPIS)
def test_system_exit_on_one_rank_ends_job_non_zero(mpi):
    needs_openmpi(mpi)
    job = run_mpi(3, [PROGRAM, "exit3", "1"], timeout=60, mpi=mpi)
    assert not job.timed_out and job.returncode != 0 and job.seconds < 20, job.output


def test_keyboard_interrupt_exits_130_when_alone():
    job = run_mpi(1, [PROGRAM, "interrupt", "0"], timeout=60)
    assert job.returncode == 130, job.output
