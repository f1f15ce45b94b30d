"""Say which host this rank runs on, then run `python -m mpiml.train` with this program's
arguments: the multi-host tests launch it to see where a real training job's ranks ran."""

import runpy
import socket
import sys

from mpi4py import MPI

comm = MPI.COMM_WORLD
sys.stdout.write(f"mpiml-multihost: rank {comm.rank} of {comm.size} on {socket.gethostname()}\n")
sys.stdout.flush()
sys.argv[0] = "mpiml.train"
runpy.run_module("mpiml.train", run_name="__main__", alter_sys=True)
