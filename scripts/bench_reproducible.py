"""Cost of reproducible mode per training step against normal mode, side by side in one run.

    python scripts/bench_reproducible.py [--rows 1000000] [--features 100] [--ranks 2] [--quick]

Generates a binary data set with ``python -m mpiml.data synth`` (float32) in a temporary
directory, then under ``mpiexec -n RANKS`` times, in the same job and alternating: full-batch
gradient descent steps (block_rows 1024) and mini-batch SGD steps (batch 256, block_rows 32),
normal vs ``train.reproducible: true``. Prints a markdown table of seconds per step and ratios.
Target (issue 10): reproducible <= 2x normal per step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(path: str, full_steps: int, sgd_steps: int) -> None:
    from mpi4py import MPI

    from mpiml import config
    from mpiml.data.run_rows import load_run_data
    from mpiml.fit import fit
    from mpiml.run import open_run

    comm = MPI.COMM_WORLD
    off = {"checkpoint": {"enabled": False}, "fault": {"stall_seconds": None}}
    cases = {
        "full-batch GD step": dict(optimizer={"name": "gd", "lr": 0.1},
                                   train={"epochs": full_steps, "batch_size": None,
                                          "block_rows": 1024}),
        "mini-batch SGD step (256)": dict(optimizer={"name": "sgd", "lr": 0.1},
                                          train={"epochs": 1, "max_steps": sgd_steps,
                                                 "batch_size": 256, "block_rows": 32}),
    }
    rows = []
    for name, sections in cases.items():
        times = {}
        for reproducible in (False, True, False, True):
            raw = {"data": {"train": path}, "model": {"kind": "logistic"}, **off, **sections}
            raw["train"] = dict(sections["train"], reproducible=reproducible, log_every=10**9)
            if not reproducible:
                del raw["train"]["block_rows"]
            resolved = config.from_dict(raw)
            with open_run(resolved, comm) as run:
                rows_of_run = load_run_data(resolved, run.reducer, "binary")
                comm.Barrier()
                start = time.perf_counter()
                result = fit(run, rows_of_run)
                elapsed = time.perf_counter() - start
            per_step = comm.allreduce(elapsed, op=MPI.MAX) / result.steps
            times[reproducible] = min(times.get(reproducible, per_step), per_step)
        rows.append((name, times[False], times[True]))
    if comm.rank == 0:
        print("| step | normal ms | reproducible ms | ratio |")
        print("|---|---:|---:|---:|")
        for name, normal, exact in rows:
            print(f"| {name} | {normal * 1e3:.2f} | {exact * 1e3:.2f} | {exact / normal:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20,000 rows, few steps")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), int(args.worker[2]))
        return 0
    rows = 20_000 if args.quick else args.rows
    steps = ("2", "20") if args.quick else ("5", "200")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    print(f"command: {' '.join(sys.argv)}  ({rows} x {args.features} float32, "
          f"{args.ranks} ranks, 1 BLAS thread per rank)\n")
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "binary.h5")
        subprocess.run([sys.executable, "-m", "mpiml.data", "synth", "--task", "binary",
                        "--rows", str(rows), "--features", str(args.features), "--dtype",
                        "float32", "--seed", "0", data], check=True, env=env)
        subprocess.run([mpiexec, "-n", str(args.ranks), sys.executable, __file__, "--worker",
                        data, *steps], check=True, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
