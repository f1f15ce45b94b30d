"""Streamed (``data.memory_budget``) against in-memory training on one rank: throughput of
logistic-regression full-batch passes and of K-Means Lloyd iterations, and peak RSS.

Usage: python scripts/bench_out_of_core.py [--rows N] [--features D] [--budget-mib B]
                                           [--passes P] [--quick]

Writes a float32 data set to a temporary directory, reads it once (so the page cache is warm:
the streamed numbers are what a file that fits the page cache but not the budget costs), then
runs each case in a fresh process so that its peak RSS (``ru_maxrss``) is its own. Prints a
Markdown table; the ratio is in-memory throughput over streamed throughput, by the clock and
by the process's CPU time (steadier on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np


def write(path: str, rows: int, features: int) -> None:
    rng = np.random.default_rng(0)
    weights = rng.standard_normal(features).astype(np.float32)
    with h5py.File(path, "w") as out:
        X = out.create_dataset("X", (rows, features), dtype=np.float32)
        y = out.create_dataset("y", (rows,), dtype=np.float32)
        for lo in range(0, rows, 1 << 17):
            hi = min(rows, lo + (1 << 17))
            block = rng.standard_normal((hi - lo, features), dtype=np.float32)
            X[lo:hi], y[lo:hi] = block, (block @ weights > 0)


def child(path: str, family: str, budget: int | None, passes: int) -> dict:
    """One case in this process: rows per second over ``passes`` passes, and peak RSS."""
    from mpi4py import MPI

    from mpiml import config
    from mpiml.fit import load_rows
    from mpiml.run import open_run

    raw = {"data": {"train": path, "memory_budget": budget},
           "model": {"kind": "kmeans" if family == "kmeans" else "logistic"},
           "checkpoint": {"enabled": False}, "fault": {"stall_seconds": None}}
    with open_run(config.from_dict(raw), MPI.COMM_SELF) as run:
        rows = load_rows(run)
        n = rows.shard.n_total
        if family == "kmeans":
            from mpiml.fit.kmeans import fit_kmeans

            fit_kmeans(rows.shard.X, 8, max_iter=1, reducer=run.reducer, seed=0)  # warm-up
            start, cpu = time.perf_counter(), time.process_time()
            fit_kmeans(rows.shard.X, 8, init="random", max_iter=passes, tol=0.0,
                       reducer=run.reducer)
            passes += 2  # the tolerance's and the final assignment's passes
        else:
            from mpiml.fit.gradient import GradientProblem

            problem = GradientProblem(run, rows)
            problem.objective(problem.params)  # warm-up
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(passes):
                problem.objective(problem.params)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"rows_per_s": n * passes / seconds, "rows_per_cpu_s": n * passes / cpu,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--budget-mib", type=int, default=64)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, family, budget = args.child
        result = child(path, family, None if budget == "none" else int(budget), args.passes)
        print(json.dumps(result))
        return 0
    if args.quick:
        args.rows, args.budget_mib, args.passes = 100_000, 2, 2
    budget = args.budget_mib << 20
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.h5")
        write(path, args.rows, args.features)
        with open(path, "rb") as warm:  # the page cache holds the file from here on
            while warm.read(1 << 24):
                pass
        size = args.rows * args.features * 4
        print(f"{args.rows} x {args.features} float32 = {size / 2**20:.0f} MiB of X; budget "
              f"{args.budget_mib} MiB; {args.passes} passes; load average "
              f"{os.getloadavg()[0]:.2f}\n")
        print("| case | in memory (rows/s) | streamed (rows/s) | ratio | ratio of CPU time | "
              "peak RSS in memory | peak RSS streamed |")
        print("|---|---|---|---|---|---|---|")
        report = {"rows": args.rows, "features": args.features, "budget": budget,
                  "passes": args.passes, "load": os.getloadavg()[0], "cases": {}}
        for family, label in (("logistic", "logistic full-batch pass"),
                              ("kmeans", "K-Means Lloyd iteration (k=8)")):
            results = []
            for mode in ("none", str(budget)):
                job = subprocess.run([sys.executable, __file__, "--passes", str(args.passes),
                                      "--child", path, family, mode], env=env, text=True,
                                     capture_output=True, check=True)
                results.append(json.loads(job.stdout.strip().splitlines()[-1]))
            held, streamed = results
            report["cases"][label] = {"in_memory": held, "streamed": streamed}
            print(f"| {label} | {held['rows_per_s']:,.0f} | {streamed['rows_per_s']:,.0f} | "
                  f"{held['rows_per_s'] / streamed['rows_per_s']:.2f} | "
                  f"{held['rows_per_cpu_s'] / streamed['rows_per_cpu_s']:.2f} | "
                  f"{held['peak_rss'] / 2**20:.0f} MiB | {streamed['peak_rss'] / 2**20:.0f} MiB |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
