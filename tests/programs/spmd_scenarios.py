"""Small SPMD programs that end in a chosen way, for tests/test_spmd.py.

Usage: python spmd_scenarios.py SCENARIO FAILING_RANK
"""

import sys

import numpy as np

from mpiml import allreduce, run_spmd


def collective_loop(fail, failing_rank):
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    buf = np.zeros(1000)
    for step in range(10**9):
        if step == 20 and comm.rank == failing_rank:
            fail()
        allreduce(buf, comm)


def raise_error():
    raise ValueError("scenario failure on purpose")


def exit_with_3():
    sys.exit(3)


def interrupt():
    raise KeyboardInterrupt


def main():
    scenario, failing_rank = sys.argv[1], int(sys.argv[2])
    if scenario == "success":
        from mpi4py import MPI

        allreduce(np.ones(4), MPI.COMM_WORLD)
        return 0
    fail = {"raise": raise_error, "exit3": exit_with_3, "interrupt": interrupt}[scenario]
    return collective_loop(fail, failing_rank)


if __name__ == "__main__":
    sys.exit(run_spmd(main))
