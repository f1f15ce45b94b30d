"""Time of moving rows into whole blocks (mpiml.data.rebalance) before a reproducible fit.

    python scripts/bench_rebalance.py [--rows 1000000] [--features 20] [--ranks 2] [--quick]

Under ``mpiexec -n RANKS``, every rank makes its rows of a float64 data set with labels, split
two ways that cut blocks of 1024 rows: evenly by row (what ``load_shard`` without ``block_rows``
gives; few rows move) and all rows on rank 0 (the worst case: every other rank's share moves).
For each it times ``rebalance_rows`` (pack, all-to-all, unpack) and, alone, the all-to-all of
the same bytes (``exchange_bytes``); best of 3, the slowest rank. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from benchlib import best_time, load, thread_env, wait_for_quiet


def worker(n_rows: int, n_features: int) -> None:
    import numpy as np
    from mpi4py import MPI

    from mpiml.comm import exchange_bytes
    from mpiml.data import row_range
    from mpiml.data.rebalance import rebalance_rows

    comm = MPI.COMM_WORLD
    splits = {
        "even by row": [row_range(n_rows, r, comm.size)[1] - row_range(n_rows, r, comm.size)[0]
                        for r in range(comm.size)],
        "all on rank 0": [n_rows] + [0] * (comm.size - 1),
    }
    rows = []
    for name, counts in splits.items():
        X = np.random.default_rng(comm.rank).standard_normal((counts[comm.rank], n_features))
        y = np.zeros(counts[comm.rank])
        moved = rebalance_rows(X, y, None, counts, 1024, comm)
        sent = comm.allreduce(max(0, counts[comm.rank] - (moved.stop - moved.start)))
        per_destination = np.zeros(comm.size, dtype=np.int64)
        start = sum(counts[:comm.rank])
        for dest in range(comm.size):
            lo, hi = row_range(n_rows, dest, comm.size, 1024)
            overlap = max(0, min(hi, start + counts[comm.rank]) - max(lo, start))
            per_destination[dest] = 0 if dest == comm.rank else overlap * (n_features + 1) * 8
        buffer = np.ones(int(per_destination.sum()), dtype=np.uint8)
        del moved
        total = best_time(lambda X=X, y=y, counts=counts: rebalance_rows(X, y, None, counts, 1024,
                                                                        comm), 3, comm)
        exchange = best_time(lambda b=buffer, c=per_destination: exchange_bytes(b, c, comm), 3,
                             comm)
        rows.append((name, sent, sent * (n_features + 1) * 8 / 2**20, exchange, total))
    if comm.rank == 0:
        print("| split | rows moved | MiB moved | all-to-all s | rebalance_rows s |")
        print("|---|---:|---:|---:|---:|")
        for name, sent, mib, exchange, total in rows:
            print(f"| {name} | {sent:,} | {mib:.1f} | {exchange:.3f} | {total:.3f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20,000 rows")
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    rows = 20_000 if args.quick else args.rows
    busy = wait_for_quiet(args.ranks, timeout=60)
    print(f"command: {' '.join(sys.argv)}  ({rows:,} x {args.features} float64 + float64 "
          f"labels, {args.ranks} ranks; load {load()}, {busy} cores busy before)\n")
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    subprocess.run([mpiexec, "-n", str(args.ranks), sys.executable, __file__, "--worker",
                    str(rows), str(args.features)], check=True,
                   env=thread_env(1, dict(os.environ)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
