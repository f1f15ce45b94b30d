"""Launch-mistake detection (mpiml.run.launchcheck) against the environments real launchers give
ranks.

The environments are the variables measured on this machine's Slurm 22.05 with pip's MPICH
(scripts/ci/local-slurm.sh): `srun --mpi=pmi2 -n 2`, `srun --mpi=none -n 2`, hydra's `mpiexec -n 2`
inside an allocation, a batch script's own shell, and no Slurm at all.
"""

import pytest

from mpiml.run.launchcheck import LaunchError, check_launch, intended_size

ALLOCATION = {"SLURM_JOB_ID": "4", "SLURM_NTASKS": "2", "SLURM_NPROCS": "2", "SLURM_PROCID": "0",
              "SLURM_LOCALID": "0"}

SRUN_PMI2 = dict(ALLOCATION, SLURM_STEP_ID="0", SLURM_STEPID="0", SLURM_STEP_NUM_TASKS="2",
                 SLURM_STEP_TASKS_PER_NODE="2", SLURM_MPI_TYPE="pmi2", PMI_FD="11",
                 PMI_JOBID="1.0", PMI_RANK="0", PMI_SIZE="2")

SRUN_MPI_NONE = dict(ALLOCATION, SLURM_PROCID="1", SLURM_STEP_ID="0", SLURM_STEPID="0",
                     SLURM_STEP_NUM_TASKS="2", SLURM_STEP_TASKS_PER_NODE="2")

# hydra starts one proxy per node with srun: Slurm's counts are the proxies (1), PMI_SIZE the ranks
MPIEXEC_IN_ALLOCATION = dict(ALLOCATION, SLURM_NTASKS="1", SLURM_NPROCS="1", SLURM_STEP_ID="0",
                             SLURM_STEPID="0", SLURM_STEP_NUM_TASKS="1",
                             SLURM_STEP_TASKS_PER_NODE="1", PMI_FD="5", PMI_HOSTNAME="vm",
                             PMI_RANK="1", PMI_SIZE="2")

# the same on two nodes: one proxy per node, 4 ranks
MPIEXEC_TWO_NODES = dict(MPIEXEC_IN_ALLOCATION, SLURM_NTASKS="2", SLURM_STEP_NUM_TASKS="2",
                         PMI_SIZE="4")

BATCH_SHELL = dict(ALLOCATION)  # `python ...` straight in the batch script: not a step

PLAIN_MPIEXEC = {"PMI_FD": "5", "PMI_RANK": "0", "PMI_SIZE": "3", "PMI_HOSTNAME": "vm"}


@pytest.mark.parametrize("environ, size", [
    (SRUN_PMI2, 2),
    (MPIEXEC_IN_ALLOCATION, 2),
    (MPIEXEC_TWO_NODES, 4),
    (BATCH_SHELL, 1),
    ({}, 1),
    (PLAIN_MPIEXEC, 3),
    ({"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "0"}, 3),
    (dict(SRUN_PMI2, SLURM_STEP_NUM_TASKS="1", SLURM_NTASKS="1", PMI_SIZE="1"), 1),
    (dict(MPIEXEC_IN_ALLOCATION, PMI_SIZE="1"), 1),  # mpiexec -n 1 inside a 2-task allocation
])
def test_correct_launches_pass(environ, size):
    check_launch(size, environ)


def test_srun_without_an_mpi_plugin_is_refused_with_how_to_launch():
    with pytest.raises(LaunchError) as info:
        check_launch(1, SRUN_MPI_NONE)
    message = str(info.value)
    assert message.startswith("launch mistake: Slurm started 2 tasks (SLURM_STEP_NUM_TASKS=2) "
                              "but MPI sees 1 rank in each"), message
    assert "this is task 1" in message
    assert "srun --mpi=pmi2 -n 2 python -m mpiml.train" in message
    assert "mpiexec -n 2" in message


def test_slurm_ntasks_is_used_inside_a_step_without_the_step_count():
    environ = {k: v for k, v in SRUN_MPI_NONE.items() if k != "SLURM_STEP_NUM_TASKS"}
    environ["SLURM_NTASKS"] = "4"
    with pytest.raises(LaunchError, match=r"Slurm started 4 tasks \(SLURM_NTASKS=4\)"):
        check_launch(1, environ)


def test_mpi_library_that_ignores_the_launchers_pmi_is_refused():
    """Measured: Open MPI's mpi4py under hydra's mpiexec, or under `srun --mpi=pmi2`, runs as a
    singleton in each process while the launcher set PMI_SIZE=2."""
    for environ in (SRUN_PMI2, MPIEXEC_IN_ALLOCATION, PLAIN_MPIEXEC):
        with pytest.raises(LaunchError, match=r"the launcher started \d ranks \(PMI_SIZE=\d\) but "
                                              r"MPI sees 1 rank"):
            check_launch(1, environ)


def test_open_mpi_launcher_with_another_mpi_is_refused():
    with pytest.raises(LaunchError, match=r"OMPI_COMM_WORLD_SIZE=2"):
        check_launch(1, {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"})


def test_launcher_variables_win_over_slurms_task_count():
    assert intended_size(MPIEXEC_IN_ALLOCATION) == (2, "PMI_SIZE")
    assert intended_size(SRUN_MPI_NONE) == (2, "SLURM_STEP_NUM_TASKS")
    assert intended_size(BATCH_SHELL) is None
    assert intended_size({}) is None


@pytest.mark.parametrize("value", ["", "garbage", "0", "-3"])
def test_unreadable_counts_are_ignored(value):
    check_launch(1, dict(SRUN_MPI_NONE, SLURM_STEP_NUM_TASKS=value, SLURM_NTASKS=value))


def test_deliberate_single_rank_copies_can_opt_out():
    check_launch(1, dict(SRUN_MPI_NONE, MPIML_LAUNCHCHECK="0"))
