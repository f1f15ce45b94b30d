"""OSU-style allreduce benchmark: native MPI vs mpiml's ring, tree and auto, side by side.

    python scripts/bench_allreduce.py --ranks 2 4 [--mpiexec PATH] [--quick] [--json OUT]

The driver starts ``mpiexec -n P python bench_allreduce.py --worker`` for each rank count. For each
message size (float64, 8 B .. 64 MiB, x2 steps) the worker times every algorithm in turn, with
warm-up, over enough iterations to fill about ``--seconds`` per measurement, and reports the
slowest rank's average latency (best of ``--rounds`` alternating rounds) and the bus bandwidth
``2 (p-1)/p * bytes / time`` (the OSU and nccl-tests convention, comparable across rank counts).
Timings exclude the length-check probe (``validate=False``); its own cost is the 8 B native
latency. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ALGORITHMS = ("native", "ring", "tree", "auto")


def sizes(quick: bool) -> list[int]:
    top = 1 << 20 if quick else 64 << 20
    out, size = [], 8
    while size <= top:
        out.append(size)
        size *= 2
    return out


def time_one(buf, comm, algorithm, seconds, ring_threshold) -> float:
    from mpiml.comm import allreduce

    def run(n):
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(n):
            allreduce(buf, comm, algorithm=algorithm, validate=False,
                      ring_threshold=ring_threshold)
        return time.perf_counter() - start

    probe = max(run(3) / 3, 1e-7)
    iters = np.array([max(5, min(20000, int(seconds / probe)))])
    comm.Bcast(iters, root=0)  # every rank runs the same count
    run(max(1, int(iters[0]) // 10))  # warm-up
    elapsed = np.array([run(int(iters[0])) / int(iters[0])])
    from mpi4py import MPI

    comm.Allreduce(MPI.IN_PLACE, elapsed, op=MPI.MAX)
    return float(elapsed[0])


def worker(args) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    p = comm.size
    rows = []
    for nbytes in sizes(args.quick):
        buf = np.zeros(nbytes // 8)  # repeated in-place sums of zeros cannot overflow
        times = {alg: float("inf") for alg in ALGORITHMS}
        for _ in range(args.rounds):  # the algorithms alternate; best round of each
            for alg in ALGORITHMS:
                times[alg] = min(times[alg], time_one(buf, comm, alg, args.seconds,
                                                      args.ring_threshold))
        rows.append((nbytes, times))
    if comm.rank != 0:
        return
    bus = 2 * (p - 1) / p
    out = [f"\n### {p} ranks ({MPI.Get_library_version().splitlines()[0].strip()})\n",
           "| size | native µs | ring µs | tree µs | auto µs | ring/native | tree/native | "
           "auto/native | native GB/s | ring GB/s |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for nbytes, t in rows:
        out.append(
            f"| {human(nbytes)} | {t['native'] * 1e6:.1f} | {t['ring'] * 1e6:.1f} | "
            f"{t['tree'] * 1e6:.1f} | {t['auto'] * 1e6:.1f} | {t['ring'] / t['native']:.2f} | "
            f"{t['tree'] / t['native']:.2f} | {t['auto'] / t['native']:.2f} | "
            f"{bus * nbytes / t['native'] / 1e9:.2f} | {bus * nbytes / t['ring'] / 1e9:.2f} |")
    sys.stdout.write("\n".join(out) + "\n")
    if args.emit_json:
        library = " ".join(MPI.Get_library_version().splitlines()[0].split())
        sys.stdout.write(json.dumps({"ranks": p, "library": library,
                                     "rows": [[nbytes, t] for nbytes, t in rows]}) + "\n")
    sys.stdout.flush()


def human(nbytes: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def driver(args) -> int:
    mpiexec = args.mpiexec or str(Path(sys.executable).parent / "mpiexec")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    flags = ["--seconds", str(args.seconds), "--ring-threshold", str(args.ring_threshold),
             "--rounds", str(args.rounds)]
    flags += ["--quick"] if args.quick else []
    flags += ["--emit-json"] if args.json else []
    print(f"command: {' '.join(sys.argv)}  (ring_threshold={args.ring_threshold} bytes for auto)")
    results = []
    for p in args.ranks:
        cmd = [mpiexec, "-n", str(p), sys.executable, __file__, "--worker", *flags]
        load = " ".join(f"{value:.2f}" for value in os.getloadavg())
        result = subprocess.run(cmd, env=env, timeout=1800, stdout=subprocess.PIPE, text=True)
        for line in result.stdout.splitlines():
            if line.startswith("{"):
                results.append(dict(json.loads(line), load_before=load))
            else:
                print(line)
        if result.returncode != 0:
            return result.returncode
    if args.json:
        Path(args.json).write_text(json.dumps({"ring_threshold": args.ring_threshold,
                                               "seconds": args.seconds, "rounds": args.rounds,
                                               "results": results}))
    return 0


def main() -> int:
    from mpiml.comm import DEFAULT_RING_THRESHOLD

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--mpiexec", help="launcher (default: the one beside this Python)")
    parser.add_argument("--seconds", type=float, default=0.075, help="time per measurement")
    parser.add_argument("--rounds", type=int, default=2,
                        help="measure every size and algorithm this many times, keep the best")
    parser.add_argument("--ring-threshold", type=int, default=DEFAULT_RING_THRESHOLD)
    parser.add_argument("--quick", action="store_true", help="sizes up to 1 MiB, short runs")
    parser.add_argument("--json", help="also write the timings as JSON to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 0.02)
    if args.worker:
        worker(args)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
