"""Benchmark of mpiml.data: shard load time and peak memory per rank, and one global batch.

Writes a synthetic binary data set (default 1M x 100 float32) with ``synth`` into a temporary
directory, then starts itself under mpiexec at each rank count as a worker. Each worker
measures its interpreter baseline (ru_maxrss after imports, one collective and one file open),
the time to load its shard and its peak RSS afterwards (target: peak <= baseline + 1.2 x shard
bytes), then the time to gather one global batch of 1024 rows
(``local_rows`` + ``Shard.batch``) against the time of a logistic loss-and-gradient on that
batch. Prints a markdown table.

Usage: python scripts/bench_data.py [--rows N] [--features D] [--ranks 1 2 4] [--mpiexec PATH]
       [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH_SIZE = 1024
BATCHES_TIMED = 200


def worker(path: str) -> None:
    """One rank: baseline, load, peak RSS, batch gather and gradient timings; rank 0 prints."""
    import h5py
    import numpy as np

    from mpiml.comm import allgather_object, rank_and_size
    from mpiml.data import BatchPlan, load_shard
    from mpiml.models import LogisticRegression

    rank, size = rank_and_size()
    allgather_object(None)  # MPI's own buffers belong to the baseline
    h5py.File(path, "r").close()  # and so does the HDF5 library's start-up
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    allgather_object(None)
    started = time.perf_counter()
    shard = load_shard(path, task="binary")
    allgather_object(None)
    load_seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    shard_bytes = shard.X.nbytes + shard.y.nbytes

    plan = BatchPlan.for_shard(shard, BATCH_SIZE, seed=0)
    started = time.perf_counter()
    plan.local_rows(0, 0)
    epoch_seconds = time.perf_counter() - started
    model = LogisticRegression(shard.n_features)
    params = np.zeros(model.n_params)
    grad = np.empty(model.n_params)
    gather_seconds = gradient_seconds = 0.0
    for t in range(min(BATCHES_TIMED, plan.n_batches(0))):
        started = time.perf_counter()
        rows = plan.local_rows(0, t)
        X_batch, y_batch, _ = shard.batch(rows)
        middle = time.perf_counter()
        model.loss_grad_sum(params, X_batch, y_batch, grad)
        gather_seconds += middle - started
        gradient_seconds += time.perf_counter() - middle
    timed = min(BATCHES_TIMED, plan.n_batches(0))
    report = dict(rank=rank, rows=shard.n_local, shard_bytes=shard_bytes, baseline=baseline,
                  peak=peak, load_seconds=load_seconds, epoch_seconds=epoch_seconds,
                  gather_seconds=gather_seconds / timed, gradient_seconds=gradient_seconds / timed)
    reports = allgather_object(report)
    if rank == 0:
        sys.stdout.write(json.dumps(dict(size=size, ranks=reports)) + "\n")


def run_ranks(mpiexec: str, ranks: int, path: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    job = subprocess.run([mpiexec, "-n", str(ranks), sys.executable, __file__, "--worker", path],
                         capture_output=True, text=True, env=env, timeout=900, check=False)
    if job.returncode != 0:
        raise RuntimeError(f"{ranks}-rank worker failed:\n{job.stdout}{job.stderr}")
    return json.loads(job.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    megabyte = 2**20
    lines = [
        "| ranks | rows/rank | shard MB/rank | load s | baseline MB | peak RSS MB "
        "| peak - baseline / shard | epoch order ms | batch gather µs | batch gradient µs |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        ranks = result["ranks"]
        worst = max(ranks, key=lambda r: (r["peak"] - r["baseline"]) / r["shard_bytes"])

        def mean(key, ranks=ranks):
            return sum(r[key] for r in ranks) / len(ranks)

        lines.append(
            f"| {result['size']} | {ranks[0]['rows']:,} | {ranks[0]['shard_bytes'] / megabyte:.1f} "
            f"| {max(r['load_seconds'] for r in ranks):.2f} | {worst['baseline'] / megabyte:.0f} "
            f"| {worst['peak'] / megabyte:.0f} "
            f"| {(worst['peak'] - worst['baseline']) / worst['shard_bytes']:.3f} "
            f"| {mean('epoch_seconds') * 1e3:.1f} | {mean('gather_seconds') * 1e6:.0f} "
            f"| {mean('gradient_seconds') * 1e6:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--worker", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return 0

    import numpy as np

    from mpiml.data.tools import synth

    with tempfile.TemporaryDirectory(prefix="bench-data-") as directory:
        path = os.path.join(directory, "bench.h5")
        started = time.perf_counter()
        synth(path, "binary", args.rows, args.features, seed=0, dtype="float32")
        synth_seconds = time.perf_counter() - started
        os.sync()  # write-back of the new file would otherwise slow the first load
        results = []
        for ranks in args.ranks:
            load_average = " ".join(f"{value:.2f}" for value in os.getloadavg())
            results.append(dict(run_ranks(args.mpiexec, ranks, path), load_average=load_average))
        file_bytes = os.path.getsize(path)
    shown = [arg for arg, before in zip(sys.argv[1:], ["", *sys.argv[1:-1]], strict=True)
             if "--json" not in (arg, before)]
    command = " ".join(["python", "scripts/bench_data.py", *shown])
    sys.stdout.write(
        f"`{command}` -- {args.rows:,} x {args.features} float32 ({file_bytes / 2**20:.0f} MB "
        f"file, written by synth in {synth_seconds:.1f} s), batch {BATCH_SIZE} rows, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}, "
        f"warm page cache; 'peak - baseline / shard' is the worst rank, target <= 1.2\n\n")
    sys.stdout.write(table(results) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": command, "rows": args.rows, "features": args.features,
            "batch_size": BATCH_SIZE, "file_bytes": file_bytes, "synth_seconds": synth_seconds,
            "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
