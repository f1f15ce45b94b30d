"""Helpers shared by the benchmark scripts: launching workers, timing, data, environment.

Timing rules of the benchmarks (a shared 2-core machine): every number is the best of several
repetitions, every target is a ratio of two numbers measured side by side in the same run, and
the load average is recorded with every measurement (:func:`load`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def thread_env(threads: int = 1, base: dict | None = None) -> dict:
    """The environment with every BLAS/OpenMP thread count set to ``threads``."""
    env = dict(os.environ if base is None else base)
    env.update({name: str(threads) for name in THREAD_VARS})
    return env


def load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def busy_cores(window: float = 0.5) -> float:
    """Cores busy over the next ``window`` seconds (from /proc/stat), or 0.0 where unavailable."""
    def sample():
        with open("/proc/stat") as stat:
            values = [float(v) for v in stat.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(window)
        total1, idle1 = sample()
    except OSError:
        return 0.0
    busy = 1.0 - (idle1 - idle0) / max(total1 - total0, 1.0)
    return busy * (os.cpu_count() or 1)


def wait_for_quiet(cores: int, timeout: float) -> float:
    """Wait (at most ``timeout`` seconds) until ``cores`` cores are idle: other jobs share this
    machine, and a 2-rank MPI job whose rank is descheduled stalls the other one. Returns the
    busy cores seen last (recorded with the measurement)."""
    deadline = time.monotonic() + timeout
    while True:
        busy = busy_cores()
        if busy <= (os.cpu_count() or 1) - cores + 0.25 or time.monotonic() >= deadline:
            return round(busy, 2)


def default_mpiexec() -> str:
    return str(Path(sys.executable).parent / "mpiexec")


def run_json(cmd: list[str], env: dict | None = None, timeout: float = 1800) -> dict:
    """Run ``cmd`` and return the JSON object on the last line of its stdout that holds one;
    stderr passes through. Raises RuntimeError with the output on failure."""
    job = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=timeout,
                         check=False)
    if job.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {job.returncode}:\n{job.stdout[-4000:]}")
    for line in reversed(job.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"{' '.join(cmd)} printed no JSON line:\n{job.stdout[-4000:]}")


def synth_command(path: str, spec: dict) -> list[str]:
    """``python -m mpiml.data synth`` arguments that write the workload ``spec``."""
    cmd = [sys.executable, "-m", "mpiml.data", "synth", "--task", spec["task"], "--rows",
           str(spec["rows"]), "--features", str(spec["features"]), "--seed", str(spec["seed"])]
    if spec.get("classes"):
        cmd += ["--classes", str(spec["classes"])]
    if spec.get("test_rows"):
        cmd += ["--test-rows", str(spec["test_rows"])]
    return cmd + ["--force", path]


def ensure_data(directory: str, name: str, spec: dict) -> tuple[str, str]:
    """The HDF5 file of workload ``spec`` in ``directory``, written by ``python -m mpiml.data
    synth`` unless a file written with the same arguments is already there (synth is
    deterministic). Returns (path, the command as text)."""
    import h5py

    path = os.path.join(directory, f"{name}.h5")
    cmd = synth_command(path, spec)
    text = "python -m mpiml.data synth " + " ".join(cmd[4:-2]) + f" {name}.h5"
    if os.path.exists(path):
        try:
            with h5py.File(path, "r") as handle:
                attrs = handle.attrs
                same = (attrs.get("task") == spec["task"] and int(attrs["rows"]) == spec["rows"]
                        and int(attrs["features"]) == spec["features"]
                        and int(attrs["seed"]) == spec["seed"]
                        and int(attrs["test_rows"]) == spec.get("test_rows", 0)
                        and int(attrs.get("n_classes", 2)) == (spec.get("classes") or 2))
            if same:
                return path, text
        except (OSError, KeyError):
            pass
    os.makedirs(directory, exist_ok=True)
    subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return path, text


def best_time(function, repeats: int, comm=None) -> float:
    """Best of ``repeats`` wall times of ``function()``; under MPI each repetition starts at a
    barrier and counts the slowest rank."""
    best = float("inf")
    for _ in range(repeats):
        if comm is not None:
            comm.Barrier()
        start = time.perf_counter()
        function()
        elapsed = time.perf_counter() - start
        if comm is not None:
            elapsed = comm.allreduce(elapsed, op=_mpi_max())
        best = min(best, elapsed)
    return best


def _mpi_max():
    from mpi4py import MPI

    return MPI.MAX


def blas_info() -> list[dict]:
    """threadpoolctl's view of the BLAS and OpenMP libraries loaded by numpy/scipy/sklearn."""
    try:
        import numpy  # noqa: F401
        import scipy.linalg  # noqa: F401
        import sklearn  # noqa: F401
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{key: info.get(key) for key in ("internal_api", "prefix", "version",
                                            "architecture", "num_threads")}
            for info in threadpool_info()]


def versions() -> dict:
    """Versions of Python and the libraries the benchmarks use (the MPI library's comes from a
    worker, so that this process never initialises MPI)."""
    import platform

    import h5py
    import mpi4py
    import numpy
    import scipy

    out = {"python": platform.python_version(), "numpy": numpy.__version__,
           "scipy": scipy.__version__, "mpi4py": mpi4py.__version__, "h5py": h5py.__version__}
    try:
        import sklearn
        import threadpoolctl

        out["scikit-learn"] = sklearn.__version__
        out["threadpoolctl"] = threadpoolctl.__version__
    except ImportError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    for name in ("numba", "scikit-learn-intelex"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def mpi_library(mpiexec: str) -> str:
    """The MPI library's version line, from a 1-rank job."""
    code = ("from mpi4py import MPI; "
            "print(MPI.Get_library_version().splitlines()[0].strip())")
    job = subprocess.run([mpiexec, "-n", "1", sys.executable, "-c", code], text=True,
                         stdout=subprocess.PIPE, check=False, timeout=120)
    return " ".join(job.stdout.split()) or "unknown"


def emit(result: dict) -> None:
    """Print ``result`` as the one JSON line a driver reads."""
    sys.stdout.write(json.dumps(result, default=float) + "\n")
    sys.stdout.flush()
