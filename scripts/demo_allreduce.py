"""2-rank allreduce demo: each rank contributes its rank number; every rank prints the sum."""

import sys

import numpy as np

from mpiml import allreduce, run_spmd


def main() -> int:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    buf = np.full(4, float(comm.rank + 1))
    for algorithm in ("native", "ring", "tree"):
        allreduce(buf, comm, algorithm=algorithm)
        sys.stdout.write(f"rank {comm.rank}/{comm.size} {algorithm:6s} -> {buf}\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_spmd(main))
