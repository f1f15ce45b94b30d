"""Checkpoint write and load time for 1 MB, 100 MB and 1 GB of parameters, and the share of
training time spent checkpointing at the default interval.

    python scripts/bench_checkpoint.py [--sizes-mb 1 100 1000] [--dir DIR] [--json OUT]

Each checkpoint holds the parameters plus an optimizer state of the same size (momentum), as a
momentum-SGD run would write. Write = temp file + fsync + rename + directory fsync (what the
trainer does); load = read + SHA-256 verification. The share at the default interval is
write time / checkpoint.every_seconds (300 s). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mpiml.config import CheckpointConfig
from mpiml.files import checkpoint
from mpiml.files.checkpoint import Checkpoint


def measure(directory, megabytes: float, repeats: int) -> tuple[float, float]:
    n = int(megabytes * 1e6 / 8 / 2)
    params = np.random.default_rng(0).standard_normal(n)
    state = {"params": params, "opt/velocity": params * 0.5, "opt/step": np.array(7)}
    writes, loads = [], []
    for step in range(repeats):
        start = time.perf_counter()
        path = checkpoint.save(directory, Checkpoint(step, state, {"epoch": 0}), keep=1)
        writes.append(time.perf_counter() - start)
        start = time.perf_counter()
        checkpoint.load(path)
        loads.append(time.perf_counter() - start)
    return min(writes), min(loads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--dir", help="where to write (default: a temporary directory)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the timings as JSON to this file")
    args = parser.parse_args()
    interval = CheckpointConfig().every_seconds
    print(f"command: {' '.join(sys.argv)}")
    print("\n| checkpoint size | write s | write GB/s | load+verify s | share of training "
          f"time at every_seconds={interval:g} |")
    print("|---:|---:|---:|---:|---:|")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for megabytes in args.sizes_mb:
            load_average = " ".join(f"{value:.2f}" for value in os.getloadavg())
            write, load = measure(Path(directory) / f"{megabytes:g}MB", megabytes, args.repeats)
            rows.append({"megabytes": megabytes, "write": write, "load": load,
                         "load_average": load_average})
            print(f"| {megabytes:g} MB | {write:.3f} | {megabytes / 1000 / write:.2f} | "
                  f"{load:.3f} | {100 * write / interval:.3f}% |")
    if args.json:
        Path(args.json).write_text(json.dumps({"interval": interval, "repeats": args.repeats,
                                               "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
