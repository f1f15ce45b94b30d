"""Time from a rank's death to training resuming, with fault.mode shrink (ULFM).

    python scripts/bench_ulfm.py [--ranks 3 4] [--rows 200000] [--features 50]

Needs the Open MPI environment (``.venv-ompi``, which ``make test`` builds). For each rank count,
trains logistic regression under ``mpirun --with-ft ulfm``, SIGKILLs rank 1 at step 40, and
reports from metrics.jsonl: the recovery time (revoke, shrink, agreement, re-reading the rows,
from the survivors' first failed collective to the redo of the step) and the whole job's wall
time against an undisturbed run. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(mpirun: Path, python: Path, ranks: int, cfg: Path, fault: str | None) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if fault:
        env["MPIML_FAULT"] = fault
    start = time.perf_counter()
    subprocess.run([str(mpirun), "--with-ft", "ulfm", "--oversubscribe", "-n", str(ranks),
                    str(python), "-m", "mpiml.train", str(cfg), "--quiet", "--resume", "never"],
                   env=env, check=True, cwd=ROOT)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[3, 4])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--ompi-python", default=str(ROOT / ".venv-ompi" / "bin" / "python"))
    parser.add_argument("--quick", action="store_true", help="3 ranks, 20,000 rows")
    args = parser.parse_args()
    if args.quick:
        args.ranks, args.rows = [3], 20_000
    python = Path(args.ompi_python)
    mpirun = python.parent / "mpirun"
    if not mpirun.exists():
        sys.stderr.write(f"no Open MPI environment at {python.parent} (run make test first)\n")
        return 1
    print(f"command: {' '.join(sys.argv)}  ({args.rows} x {args.features} float32, SIGKILL of "
          "rank 1 at step 40)\n")
    print("| ranks | recovery s (shrink + agree + reload) | job s undisturbed | job s with a "
          "death | ranks left |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.h5"
        subprocess.run([sys.executable, "-m", "mpiml.data", "synth", "--task", "binary",
                        "--rows", str(args.rows), "--features", str(args.features), "--dtype",
                        "float32", "--seed", "0", str(data)], check=True)
        for ranks in args.ranks:
            cfg = Path(tmp) / f"c{ranks}.yaml"
            out = Path(tmp) / f"run{ranks}"
            cfg.write_text(yaml.safe_dump({
                "data": {"train": str(data)}, "model": {"kind": "logistic"},
                "optimizer": {"name": "sgd", "lr": 0.1},
                "train": {"epochs": 100, "batch_size": 512, "max_steps": 200},
                "checkpoint": {"enabled": False}, "fault": {"mode": "shrink"},
                "output": {"dir": str(out)}}))
            undisturbed = run(mpirun, python, ranks, cfg, None)
            disturbed = run(mpirun, python, ranks, cfg,
                            "rank=1,step=40,at=before_allreduce,action=kill")
            records = [json.loads(line) for line in
                       (out / "metrics.jsonl").read_text().splitlines()]
            failure = [r for r in records if r.get("event") == "rank_failure"][-1]
            print(f"| {ranks} | {failure['seconds']:.3f} | {undisturbed:.2f} | {disturbed:.2f} "
                  f"| {failure['ranks_left']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
