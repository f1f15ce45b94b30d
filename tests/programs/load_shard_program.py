"""Load a shard on every rank and report on rank 0, for tests/test_data_errors.py.

Usage: python load_shard_program.py FILE [TASK]

Ends through run_spmd, so a validation error on any rank ends the whole job with one message.
On success rank 0 prints the global row count and the class set, after checking that every rank
agreed on the classes and that the shards tile the file.
"""

import sys

import numpy as np

from mpiml import run_spmd
from mpiml.comm import allgather_object, rank_and_size
from mpiml.data import load_shard


def main() -> int:
    path = sys.argv[1]
    task = sys.argv[2] if len(sys.argv) > 2 else None
    shard = load_shard(path, task=task)
    reports = allgather_object((shard.start, shard.stop, shard.classes))
    ranges = [(start, stop) for start, stop, _ in reports]
    if ranges[0][0] != 0 or ranges[-1][1] != shard.n_total or any(
            a[1] != b[0] for a, b in zip(ranges[:-1], ranges[1:], strict=True)):
        raise AssertionError(f"shards do not tile the file: {ranges}")
    if any(not np.array_equal(classes, shard.classes) for _, _, classes in reports):
        raise AssertionError("ranks disagree on the classes")
    if rank_and_size()[0] == 0:
        sys.stdout.write(f"loaded {shard.n_total} rows on {len(reports)} ranks; "
                         f"classes {shard.classes}\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_spmd(main))
