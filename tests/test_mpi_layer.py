"""Run the MPI test layer (tests/mpi) under real launchers at several rank counts.

Each case starts ``mpiexec -n P python -m pytest --with-mpi --fail-on-skip tests/mpi`` with a
hard timeout, so a hang fails one case instead of freezing the suite, and a run in which the MPI
tests were skipped or none ran fails too. Odd rank counts are included on purpose; 3 and 4 ranks
oversubscribe a 2-core machine, which both launchers allow.
"""

import json

import pytest
from launch import ROOT, needs_openmpi, run_mpi, single_thread_env

INNER = ["-m", "pytest", "--with-mpi", "--fail-on-skip", "-q", "--color=no",
         "-p", "no:cacheprovider", "-o", "addopts=", str(ROOT / "tests" / "mpi")]

CASES = [("mpich", 1), ("mpich", 2), ("mpich", 3), ("mpich", 4), ("openmpi", 3)]
#: Under Open MPI the core of the layer runs (collectives, data, the trainer, estimators); the
#: algorithm-specific files repeat MPICH's coverage and would only add minutes. Open MPI's abort
#: behaviour is covered by tests/test_spmd.py, its CLI by test_train_cli.py and ULFM by test_ulfm.
OPENMPI_FILES = ["test_collectives_mpi.py", "test_data_mpi.py", "test_trainer_mpi.py",
                 "test_estimators_mpi.py"]


#: The bad-input matrix (95 cases, ~15 s a run) runs at 2 and 3 ranks, not again at 1 and 4.
SAMPLE_ONLY_AT = (1, 4)


@pytest.mark.parametrize(("mpi", "nprocs"), CASES, ids=[f"{m}-{n}" for m, n in CASES])
def test_mpi_layer(mpi, nprocs, tmp_path):
    needs_openmpi(mpi)
    env = single_thread_env(MPIML_TEST_REPORT_DIR=str(tmp_path))
    inner = INNER if mpi == "mpich" else INNER[:-1] + [str(ROOT / "tests" / "mpi" / name)
                                                       for name in OPENMPI_FILES]
    if mpi == "mpich" and nprocs in SAMPLE_ONLY_AT:  # 2 and 3 ranks run the whole matrix
        inner = inner + ["--ignore", str(ROOT / "tests" / "mpi" / "test_bad_input_mpi.py")]
    job = run_mpi(nprocs, inner, timeout=900, mpi=mpi, env=env)
    assert not job.timed_out, f"MPI test layer hung after {job.seconds:.0f}s:\n{job.output[-8000:]}"
    assert job.returncode == 0, job.output[-8000:]
    reports = {path.name: json.loads(path.read_text()) for path in tmp_path.glob("rank-*.json")}
    assert sorted(reports) == [f"rank-{r}.json" for r in range(nprocs)], job.output[-4000:]
    for name, counts in reports.items():
        assert counts["passed"] > 0 and counts["skipped"] == counts["failed"] == 0, (name, counts)


def test_collectives_at_five_ranks():
    """Five ranks: a non-power-of-two count above 4 exercises the tree fix-up more. (The ring's
    bit-for-bit order test, 12 cases of many sizes, runs at 1-4 ranks; 3 is odd already.)"""
    job = run_mpi(5, INNER[:-1] + [str(ROOT / "tests" / "mpi" / "test_collectives_mpi.py"),
                                   "-k", "not documented_order"], timeout=900)
    assert not job.timed_out and job.returncode == 0, job.output[-8000:]
