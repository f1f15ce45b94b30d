"""Start-up of the demo job: the time from ``mpiexec`` to the first step, per phase.

    python scripts/bench_startup.py [--quick] [--repeats 5] [--ranks 2 1] [--mpiexec MPIEXEC]
                                    [--data-dir data/bench] [--json OUT]

Launches ``mpiexec -n R python -m mpiml.train configs/quickstart.yaml`` (the ``make demo`` job,
on a copy of its data written by ``python -m mpiml.data synth`` into ``--data-dir``) several
times per rank count. Each job's rank 0 writes a ``startup`` record (:class:`mpiml.run.log.
Startup`): its process's start, read from /proc/self/stat (1/100 s), and the Unix time at the end
of each phase; this script takes the Unix time just before it starts ``mpiexec``, so "launcher"
is mpiexec's own start up to the rank's process (the tables join it to the interpreter's start,
since the process's start is known to 1/100 s only). The run with the least time to its first step
is shown, with the median over the repetitions beside it. Then the imports:
``python -X importtime -m mpiml.train --help`` (what the command costs before it does anything)
and a 1-rank job under ``-X importtime`` (what the job imports, self time per top-level package).
Prints markdown; ``--json`` also writes the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

ROOT = benchlib.ROOT
CONFIG = ROOT / "configs" / "quickstart.yaml"
#: The demo's data (configs/quickstart.yaml's ``# Data:`` command).
DEMO_DATA = {"task": "binary", "rows": 20000, "features": 20, "test_rows": 5000, "seed": 0}
#: The phases of a ``startup`` record, in order, as the table names them.
PHASES = {"launch": "launcher and interpreter start: mpiexec to mpiml's `main`",
          "imports": "imports (numpy, scipy, h5py, yaml, mpiml)",
          "config_read": "config read by each rank (the watchdog's patience)",
          "mpi_init": "MPI init",
          "config": "config: launch check, rank 0 reads and checks, broadcast",
          "run_open": "run open (lock, checkpoints directory)",
          "data": "data open and load",
          "loop_setup": "loop set-up (its imports, the problem, resume decision)",
          "first_step": "first step"}


def train_command(mpiexec: str, ranks: int, data: str, out_dir: str, python=()) -> list[str]:
    return [mpiexec, "-n", str(ranks), sys.executable, *python, "-m", "mpiml.train", str(CONFIG),
            "--quiet", "--resume", "never", "--set", f"output.dir={out_dir}", "--set",
            f"data.train={data}", "--set", f"data.test={data}"]


def startup_record(out_dir: Path) -> dict:
    for line in (out_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "startup":
            return record
    raise RuntimeError(f"no startup record in {out_dir / 'metrics.jsonl'}")


def one_job(mpiexec: str, ranks: int, data: str, scratch: Path, env: dict) -> dict:
    """Run the demo job once; its phases (seconds) from mpiexec's start to its exit."""
    out_dir = scratch / f"run-{time.monotonic_ns()}"
    launched = time.time()
    job = subprocess.run(train_command(mpiexec, ranks, data, str(out_dir)), env=env, cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=300, check=False)
    ended = time.time()
    if job.returncode != 0:
        raise RuntimeError(f"the demo job exited {job.returncode}:\n{job.stdout[-3000:]}")
    record = startup_record(out_dir)
    first_step = record["process_start"] + record["total_s"] - launched
    phases = record["phases_s"]
    return {"launcher": record["process_start"] - launched,
            "launch": record["process_start"] + phases["interpreter"] - launched, **phases,
            "to_first_step": first_step, "after_first_step": ended - launched - first_step,
            "job": ended - launched}


def import_times(cmd: list[str], env: dict) -> dict:
    """``-X importtime`` of ``cmd``: the total, the heaviest top-level imports (cumulative) and
    the self time per top-level package, in seconds."""
    job = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, timeout=300, check=False)
    if job.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {job.returncode}:\n{job.stderr[-3000:]}")
    tops, packages = [], {}
    for line in job.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line or "self [us]" in line:
            continue
        own, cumulative, name = line[len("import time:"):].split("|")
        package = name.strip().split(".")[0]
        packages[package] = packages.get(package, 0.0) + int(own) / 1e6
        if len(name) - len(name.lstrip()) == 1:  # imported by the program itself
            tops.append((name.strip(), int(cumulative) / 1e6))
    return {"total": sum(packages.values()),
            "heaviest": sorted(tops, key=lambda top: -top[1])[:8],
            "packages": sorted(packages.items(), key=lambda item: -item[1])[:8]}


def table(results: dict) -> str:
    """The markdown of a run of this script."""
    ranks = list(results["jobs"])
    best = {r: min(runs, key=lambda run: run["to_first_step"])
            for r, runs in results["jobs"].items()}
    head = " | ".join(f"{r} rank{'s' if int(r) > 1 else ''} s" for r in ranks)
    out = [f"Command: `{results['command']}` (load average {results['load_before']} -> "
           f"{results['load_after']}; best of {results['repeats']} by time to the first step, "
           f"median beside it).", "", f"| phase (rank 0) | {head} |",
           "|---|" + "---:|" * len(ranks)]

    def row(label, key):
        out.append(f"| {label} | " + " | ".join(f"{best[r].get(key, float('nan')):.3f}"
                                                 for r in ranks) + " |")

    for key, label in PHASES.items():
        row(label, key)
    out.append("| **mpiexec to the first step** | " + " | ".join(
        f"**{best[r]['to_first_step']:.3f}** (median "
        f"{statistics.median(run['to_first_step'] for run in results['jobs'][r]):.3f})"
        for r in ranks) + " |")
    row("rest of the job (training, model save, MPI finalize, exit)", "after_first_step")
    row("**mpiexec to exit**", "job")
    for entry in results["imports"].values():
        heaviest = ", ".join(f"`{module}` {seconds:.3f}" for module, seconds in entry["heaviest"])
        out += ["", f"`{entry['command']}`: {entry['total']:.3f} s of imports (sum of self "
                f"times). Heaviest imports the program makes itself (cumulative s): {heaviest}.",
                "", "| top-level package | self s |", "|---|---:|"]
        out += [f"| `{package}` | {own:.3f} |" for package, own in entry["packages"]]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--mpiexec", default=benchlib.default_mpiexec())
    parser.add_argument("--data-dir", help="where the demo data go (default data/bench; quick: "
                                           "a temporary directory)")
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    repeats = 1 if args.quick else args.repeats
    env = benchlib.thread_env(1)
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        data_dir = args.data_dir or (scratch if args.quick else str(ROOT / "data" / "bench"))
        data, _ = benchlib.ensure_data(data_dir, "quickstart", DEMO_DATA)
        load_before = benchlib.load()
        one_job(args.mpiexec, 1, data, Path(scratch), env)  # warm the page cache and .pyc files
        jobs = {str(r): [] for r in args.ranks}
        for _ in range(repeats):  # rank counts alternate: a load change hits both
            for ranks in args.ranks:
                jobs[str(ranks)].append(one_job(args.mpiexec, ranks, data, Path(scratch), env))
        help_cmd = [sys.executable, "-X", "importtime", "-m", "mpiml.train", "--help"]
        job_cmd = train_command(args.mpiexec, 1, data, str(Path(scratch) / "importtime"),
                                python=("-X", "importtime"))
        imports = {"help": dict(import_times(help_cmd, env),
                                command="python -X importtime -m mpiml.train --help"),
                   "job": dict(import_times(job_cmd, env),
                               command="mpiexec -n 1 python -X importtime -m mpiml.train "
                                       "configs/quickstart.yaml")}
    shown = [os.path.relpath(arg, ROOT) if arg.startswith(str(ROOT)) else arg
             for arg, before in zip(sys.argv[1:], sys.argv, strict=False)
             if "--json" not in (arg, before)]
    results = {"command": " ".join(["python scripts/bench_startup.py", *shown]),
               "repeats": repeats, "load_before": load_before, "load_after": benchlib.load(),
               "jobs": jobs, "imports": imports}
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
