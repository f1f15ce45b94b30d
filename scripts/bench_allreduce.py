"""OSU-style allreduce benchmark: native MPI vs mpiml's ring, tree and auto, side by side.

    python scripts/bench_allreduce.py --ranks 2 4 [--mpiexec PATH] [--quick] [--json OUT]

The driver starts ``mpiexec -n P python bench_allreduce.py --worker`` for each rank count. For each
message size (float64, 8 B .. 64 MiB, x2 steps) the worker times every algorithm in turn on the
same buffer: ``--rounds`` rounds, each a batch of the same number of calls per algorithm (about
``--seconds`` for the slowest), in an order rotated every round. It reports the best round's
average latency (a batch's time is the slowest rank's) and the bus bandwidth
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


def time_size(buf, comm, seconds, rounds, ring_threshold) -> dict[str, float]:
    """Seconds per allreduce of ``buf`` for every algorithm: the best of ``rounds`` interleaved
    rounds, each timing a batch of the same number of calls per algorithm (order rotated every
    round, so no algorithm always runs first or after the same one); a batch's time is the
    slowest rank's."""
    from mpi4py import MPI

    from mpiml.comm import allreduce

    def run(algorithm, n):
        comm.Barrier()
        start = time.perf_counter()
        for _ in range(n):
            allreduce(buf, comm, algorithm=algorithm, validate=False,
                      ring_threshold=ring_threshold)
        return time.perf_counter() - start

    for algorithm in ALGORITHMS:  # warm-up, and the slowest algorithm sets the batch length
        run(algorithm, 2)
    probe = np.array([max(run(algorithm, 3) / 3 for algorithm in ALGORITHMS)])
    comm.Allreduce(MPI.IN_PLACE, probe, op=MPI.MAX)  # every rank runs the same count
    iters = max(1, min(20000, int(seconds / max(probe[0], 1e-7))))
    best = dict.fromkeys(ALGORITHMS, float("inf"))
    for round_ in range(rounds):
        shift = round_ % len(ALGORITHMS)
        for algorithm in ALGORITHMS[shift:] + ALGORITHMS[:shift]:
            elapsed = np.array([run(algorithm, iters) / iters])
            comm.Allreduce(MPI.IN_PLACE, elapsed, op=MPI.MAX)
            best[algorithm] = min(best[algorithm], float(elapsed[0]))
    return best


def worker(args) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    p = comm.size
    rows = []
    for nbytes in sizes(args.quick):
        buf = np.zeros(nbytes // 8)  # repeated in-place sums of zeros cannot overflow
        rows.append((nbytes, time_size(buf, comm, args.seconds, args.rounds,
                                       args.ring_threshold)))
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
    parser.add_argument("--seconds", type=float, default=0.02,
                        help="time per measurement (one batch of the slowest algorithm)")
    parser.add_argument("--rounds", type=int, default=8,
                        help="measure every size and algorithm this many times, keep the best")
    parser.add_argument("--ring-threshold", type=int, default=DEFAULT_RING_THRESHOLD)
    parser.add_argument("--quick", action="store_true", help="sizes up to 1 MiB, short runs")
    parser.add_argument("--json", help="also write the timings as JSON to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--emit-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds = min(args.seconds, 0.005), min(args.rounds, 2)
    if args.worker:
        worker(args)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
