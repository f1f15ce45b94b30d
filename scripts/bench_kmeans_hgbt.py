"""K-Means and boosted trees: mpiml at 2 ranks against scikit-learn, side by side.

    python scripts/bench_kmeans_hgbt.py [--quick] [--repeats N] [--data-dir DIR] [--json OUT]

* K-Means: Lloyd iterations on blobs (1M x 32, k = 16) from the same initial centres (16 rows
  drawn with a fixed seed) with ``tol=0``, against ``KMeans(init=centres, n_init=1,
  algorithm="lloyd", tol=0)`` with 2 threads (and 1). Time per iteration: mpiml from its
  ``on_iteration`` callbacks; scikit-learn as ``(t(M) - t(1)) / (n_iter(M) - 1)`` (best of 3
  fits each), so that neither side pays for set-up.
* Boosted trees: binary 1M x 100, depth 6, 255 bins, ``min_samples_leaf=20``, ``l2=1``, against
  ``HistGradientBoostingClassifier(max_depth=6, max_leaf_nodes=None, early_stopping=False)``
  with 2 threads (and 1). Time per tree: mpiml from ``on_tree`` (trees after the first);
  scikit-learn from the per-iteration times its ``verbose=2`` prints; binning excluded on both
  sides.

mpiml runs in-process under ``mpiexec -n 2`` (one BLAS thread per rank); scikit-learn in a
plain process with threadpoolctl. The driver alternates them ``--repeats`` times and keeps the
best of each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import sys
import time
from pathlib import Path

import benchlib
import numpy as np

K = 16
WORKLOADS = {
    "full": {"blobs": {"task": "blobs", "classes": K, "rows": 1_000_000, "features": 32,
                       "seed": 3},
             "binary": {"task": "binary", "rows": 1_000_000, "features": 100,
                        "test_rows": 100_000, "seed": 1}},
    "quick": {"blobs": {"task": "blobs", "classes": K, "rows": 20_000, "features": 32,
                        "seed": 3},
              "binary": {"task": "binary", "rows": 20_000, "features": 20, "test_rows": 5_000,
                         "seed": 1}},
}
HGBT = {"learning_rate": 0.1, "max_depth": 6, "min_samples_leaf": 20, "l2": 1.0, "max_bins": 255}


def initial_centers(path: str) -> np.ndarray:
    """K rows of the file drawn with a fixed seed: the same start for both sides."""
    import h5py

    with h5py.File(path, "r") as handle:
        rows = np.sort(np.random.default_rng(0).choice(len(handle["X"]), K, replace=False))
        return np.asarray(handle["X"][rows], dtype=np.float64)


# -- workers ---------------------------------------------------------------------------------------


def mpiml_worker(args) -> None:
    import warnings

    from mpi4py import MPI

    from mpiml.data import load_shard
    from mpiml.fit.boosting import fit_hgbt
    from mpiml.fit.kmeans import fit_kmeans
    from mpiml.models.trees import predict

    warnings.filterwarnings("ignore", "K-Means did not converge")  # tol=0 runs max_iter
    comm = MPI.COMM_WORLD
    out = {"ranks": comm.size, "load_before": benchlib.load()}
    shard = load_shard(args.blobs, comm, y=None)
    centers = initial_centers(args.blobs)
    stamps = []
    comm.Barrier()
    start = time.perf_counter()
    result = fit_kmeans(shard.X, K, comm, init=centers.copy(), max_iter=args.iterations,
                        tol=0.0, on_iteration=lambda state: stamps.append(time.perf_counter()),
                        row_offset=shard.start, n_total=shard.n_total)
    total = time.perf_counter() - start
    per_iteration = np.diff(stamps)
    out["kmeans"] = {
        "iteration": float(per_iteration.min() if len(per_iteration) else total),
        "iteration_median": float(np.median(per_iteration) if len(per_iteration) else total),
        "n_iter": result.n_iter, "inertia": result.inertia, "seconds_total": total}
    del shard
    shard = load_shard(args.binary, comm, task="binary")
    test = load_shard(args.binary, comm, x="X_test", y="y_test", task="binary")
    stamps = []
    comm.Barrier()
    start = time.perf_counter()
    result = fit_hgbt(shard.X, shard.y, comm, task="binary", n_estimators=args.trees,
                      row_offset=shard.start, n_total=shard.n_total,
                      on_tree=lambda model: stamps.append(time.perf_counter()),
                      learning_rate=HGBT["learning_rate"], max_depth=HGBT["max_depth"],
                      min_samples_leaf=HGBT["min_samples_leaf"], l2=HGBT["l2"],
                      max_bins=HGBT["max_bins"])
    total = time.perf_counter() - start
    correct = comm.allreduce(float((predict(result.model, test.X) == test.y).sum()))
    trees = np.diff(stamps)
    out["hgbt"] = {"tree": float(trees.min() if len(trees) else total),
                   "tree_median": float(np.median(trees) if len(trees) else total),
                   "first_tree_with_binning": stamps[0] - start, "trees": args.trees,
                   "seconds_total": total, "accuracy": correct / test.n_total}
    out["load_after"] = benchlib.load()
    if comm.rank == 0:
        benchlib.emit(out)


def sklearn_worker(args) -> None:
    import h5py
    from sklearn.cluster import KMeans
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    out = {"load_before": benchlib.load(), "kmeans": {}, "hgbt": {}}
    with h5py.File(args.blobs, "r") as handle:
        X = handle["X"][...]
    centers = initial_centers(args.blobs).astype(X.dtype)
    for threads in (2, 1):
        with threadpool_limits(threads):
            times, n_iter = {}, {}
            for _ in range(3):  # best of 3 of each fit: their difference is a few iterations
                for iterations in (1, args.iterations):
                    model = KMeans(K, init=centers, n_init=1, max_iter=iterations, tol=0.0,
                                   algorithm="lloyd")
                    start = time.perf_counter()
                    model.fit(X)
                    elapsed = time.perf_counter() - start
                    times[iterations] = min(times.get(iterations, elapsed), elapsed)
                    n_iter[iterations] = model.n_iter_
        steps = max(1, n_iter[args.iterations] - n_iter[1])
        per_iteration = (times[args.iterations] - times[1]) / steps
        if per_iteration <= 0:  # noise larger than the difference: count the set-up too
            per_iteration = times[args.iterations] / n_iter[args.iterations]
        out["kmeans"][f"{threads}t"] = {"iteration": per_iteration,
                                        "n_iter": int(n_iter[args.iterations]),
                                        "inertia": float(model.inertia_)}
    del X
    with h5py.File(args.binary, "r") as handle:
        X, y = handle["X"][...], handle["y"][...]
        X_test, y_test = handle["X_test"][...], handle["y_test"][...]
    for threads in (2, 1):
        with threadpool_limits(threads):
            model = HistGradientBoostingClassifier(
                max_iter=args.trees, learning_rate=HGBT["learning_rate"],
                max_depth=HGBT["max_depth"], max_leaf_nodes=None,
                min_samples_leaf=HGBT["min_samples_leaf"], l2_regularization=HGBT["l2"],
                max_bins=HGBT["max_bins"], early_stopping=False, random_state=0, verbose=2)
            log = io.StringIO()
            start = time.perf_counter()
            with contextlib.redirect_stdout(log):
                model.fit(X, y)
            total = time.perf_counter() - start
        # verbose=2 prints each boosting iteration's time (gradients, tree, raw predictions)
        trees = [float(t) for t in re.findall(r"\] .* in (\d+\.\d+)s", log.getvalue())]
        out["hgbt"][f"{threads}t"] = {
            "tree": min(trees[1:] or trees), "tree_median": float(np.median(trees)),
            "seconds_total": total,
            "accuracy": float((model.predict(X_test) == y_test).mean())}
    out["load_after"] = benchlib.load()
    benchlib.emit(out)


# -- driver ----------------------------------------------------------------------------------------


def combine(mine: list[dict], theirs: list[dict]) -> dict:
    result = {"loads": [run["load_before"] for run in mine + theirs], "kmeans": {}, "hgbt": {}}
    result["kmeans"]["mpiml_2r"] = min((run["kmeans"] for run in mine),
                                       key=lambda r: r["iteration"])
    for threads in ("2t", "1t"):
        result["kmeans"][f"sklearn_{threads}"] = min((run["kmeans"][threads] for run in theirs),
                                                     key=lambda r: r["iteration"])
        result["hgbt"][f"sklearn_{threads}"] = min((run["hgbt"][threads] for run in theirs),
                                                   key=lambda r: r["tree"])
    result["hgbt"]["mpiml_2r"] = min((run["hgbt"] for run in mine), key=lambda r: r["tree"])
    return result


def driver(args) -> dict:
    mode = "quick" if args.quick else "full"
    data_dir = args.data_dir or str(benchlib.ROOT / "data" / "bench")
    paths, commands = {}, {}
    for name, spec in WORKLOADS[mode].items():
        paths[name], commands[name] = benchlib.ensure_data(data_dir, f"{mode}-{name}", spec)
    script = str(Path(__file__).resolve())
    iterations, trees = (5, 3) if args.quick else (10, 4)
    common = ["--blobs", paths["blobs"], "--binary", paths["binary"], "--iterations",
              str(iterations), "--trees", str(trees)]
    env1 = benchlib.thread_env(1)
    mine, theirs = [], []
    quiet = 0.0 if args.quick else args.wait_quiet
    busy = {"sklearn": [], "mpiml 2 ranks": []}
    for repeat in range(args.repeats):
        busy["sklearn"].append(benchlib.wait_for_quiet(2, quiet))
        print(f"[bench_kmeans_hgbt] repeat {repeat + 1}/{args.repeats}: scikit-learn (load "
              f"{benchlib.load()})", file=sys.stderr, flush=True)
        theirs.append(benchlib.run_json([sys.executable, script, "--worker", "sklearn",
                                         *common], env=env1))
        print(f"[bench_kmeans_hgbt] repeat {repeat + 1}: mpiml at 2 ranks (load "
              f"{benchlib.load()})", file=sys.stderr, flush=True)
        busy["mpiml 2 ranks"].append(benchlib.wait_for_quiet(2, quiet))
        mine.append(benchlib.run_json([args.mpiexec, "-n", "2", sys.executable, script,
                                       "--worker", "mpiml", *common], env=env1))
    result = combine(mine, theirs)
    result.update(mode=mode, repeats=args.repeats, data=commands, iterations=iterations, busy=busy,
                  trees=trees, hgbt_settings=HGBT, k=K, workloads=WORKLOADS[mode],
                  command="python scripts/bench_kmeans_hgbt.py " + " ".join(sys.argv[1:]))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, one repetition")
    parser.add_argument("--repeats", type=int, help="repetitions (default 2, quick 1)")
    parser.add_argument("--data-dir", help="where the synth files go (default data/bench)")
    parser.add_argument("--mpiexec", default=benchlib.default_mpiexec())
    parser.add_argument("--json", help="write the combined results here")
    parser.add_argument("--wait-quiet", type=float, default=15.0, metavar="SECONDS",
                        help="before each measurement wait up to this long for 2 idle cores")
    parser.add_argument("--worker", choices=("mpiml", "sklearn"), help=argparse.SUPPRESS)
    parser.add_argument("--blobs", help=argparse.SUPPRESS)
    parser.add_argument("--binary", help=argparse.SUPPRESS)
    parser.add_argument("--iterations", type=int, default=20, help=argparse.SUPPRESS)
    parser.add_argument("--trees", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "mpiml":
        mpiml_worker(args)
        return 0
    if args.worker == "sklearn":
        sklearn_worker(args)
        return 0
    args.repeats = args.repeats or (1 if args.quick else 2)
    result = driver(args)
    text = json.dumps(result, indent=1, default=float)
    if args.json:
        Path(args.json).write_text(text)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
