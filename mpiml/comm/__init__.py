"""The communication layer, the only package that imports mpi4py: collectives, agreement,
exact sums, the run's reducer, ULFM helpers and the SPMD runner.

``mpi4py.MPI`` is imported on first use, so importing this package never initialises MPI.
"""

from .agree import agree_on_error, any_true, mark_raised_together, on_root, raise_together
from .collectives import (
    ALGORITHMS,
    DEFAULT_RING_THRESHOLD,
    CollectiveError,
    PendingAllreduce,
    allgather_object,
    allreduce,
    broadcast,
    broadcast_object,
    exchange_bytes,
    gather_rows,
    rank_and_size,
    start_allreduce,
    world,
)
from .reducer import Reducer
from .spmd import run_spmd
from .ulfm import RankFailure

__all__ = [
    "ALGORITHMS", "DEFAULT_RING_THRESHOLD", "CollectiveError", "PendingAllreduce", "RankFailure",
    "Reducer", "agree_on_error", "allgather_object", "allreduce", "any_true", "broadcast",
    "broadcast_object", "exchange_bytes", "gather_rows", "mark_raised_together", "on_root",
    "raise_together", "rank_and_size", "run_spmd", "start_allreduce", "world",
]
