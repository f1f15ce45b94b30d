"""K-Means and boosted trees: mpiml at 2 ranks against scikit-learn, oneDAL, LightGBM and XGBoost.

    python scripts/bench_kmeans_hgbt.py [--quick] [--repeats N] [--data-dir DIR] [--json OUT]

* K-Means: Lloyd iterations on blobs (1M x 32, k = 16) from the same initial centres (16 rows
  drawn with a fixed seed) with ``tol=0``: mpiml with its compiled kernel and with its numpy
  reference (``MPIML_KERNELS=numpy``), against ``KMeans(init=centres, n_init=1,
  algorithm="lloyd", tol=0)`` with 2 threads (and 1), and oneDAL's (``sklearnex.cluster.KMeans``,
  2 threads) when scikit-learn-intelex is installed (the ``bench`` extra). Time per iteration:
  mpiml from its ``on_iteration`` callbacks; scikit-learn and oneDAL as ``(t(M) - t(1)) /
  (n_iter(M) - 1)`` (best of 3 fits each), so that neither side pays for set-up.
* Boosted trees: binary 1M x 100, 255 bins, ``min_samples_leaf=20``, no early stopping, in
  two settings (``HGBT``): depth-wise to depth 6 with ``l2=1``, and scikit-learn's defaults
  (best-first to 31 leaves, ``l2=0``), against ``HistGradientBoostingClassifier`` with 2
  threads, LightGBM and XGBoost (``hist``) with 2 threads (when installed: the ``bench``
  extra). Time per tree without binning: mpiml from ``on_tree``, LightGBM and XGBoost from a
  callback, scikit-learn from the per-iteration times its ``verbose=2`` prints (trees after the
  first, best). Binning on its own: mpiml's bin edges and bins; scikit-learn's as ``verbose``
  prints it; LightGBM's ``Dataset.construct``; XGBoost's ``QuantileDMatrix``. "With binning":
  the whole fit divided by the number of trees.

mpiml runs in-process under ``mpiexec -n 2`` (one BLAS thread per rank); scikit-learn in a
plain process with threadpoolctl. The driver alternates them ``--repeats`` times and keeps the
best of each.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
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
#: The boosting settings compared (mpiml's names; ``max_leaf_nodes`` None grows depth-wise).
HGBT = {"depth 6": {"learning_rate": 0.1, "max_depth": 6, "max_leaf_nodes": None,
                    "min_samples_leaf": 20, "l2": 1.0, "max_bins": 255},
        "31 leaves": {"learning_rate": 0.1, "max_depth": None, "max_leaf_nodes": 31,
                      "min_samples_leaf": 20, "l2": 0.0, "max_bins": 255}}


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
    from mpiml.fit.boosting import bin_edges, fit_hgbt
    from mpiml.fit.kmeans import fit_kmeans
    from mpiml.fit.layout import RowLayout
    from mpiml.kernels import kmeans_tile
    from mpiml.models.trees import bin_features, predict

    warnings.filterwarnings("ignore", "K-Means did not converge")  # tol=0 runs max_iter
    comm = MPI.COMM_WORLD
    out = {"ranks": comm.size, "load_before": benchlib.load(), "kmeans": {}}
    shard = load_shard(args.blobs, comm, y=None)
    centers = initial_centers(args.blobs)
    for choice in ("numpy", "numba"):  # the numpy reference, then the compiled kernel
        os.environ["MPIML_KERNELS"] = choice  # numba last: the default, for what follows
        kmeans_tile.cache_clear()  # the choice is made once per process: make it again
        stamps = []
        comm.Barrier()
        start = time.perf_counter()
        result = fit_kmeans(shard.X, K, comm, init=centers.copy(), max_iter=args.iterations,
                            tol=0.0, row_offset=shard.start, n_total=shard.n_total,
                            on_iteration=lambda state, stamps=stamps: stamps.append(
                                time.perf_counter()))
        total = time.perf_counter() - start
        per_iteration = np.diff(stamps)
        out["kmeans"][choice] = {
            "iteration": float(per_iteration.min() if len(per_iteration) else total),
            "iteration_median": float(np.median(per_iteration) if len(per_iteration) else total),
            "first_iteration": stamps[0] - start, "n_iter": result.n_iter,
            "inertia": result.inertia, "seconds_total": total}
    del shard
    shard = load_shard(args.binary, comm, task="binary")
    test = load_shard(args.binary, comm, x="X_test", y="y_test", task="binary")
    fit_hgbt(shard.X[:1000], shard.y[:1000], comm, n_estimators=1)  # load the kernels
    comm.Barrier()
    start = time.perf_counter()
    edges, offsets = bin_edges(shard.X, RowLayout(shard.X, comm), 255, 0, comm)
    bin_features(shard.X, edges, offsets)
    comm.Barrier()
    binning = time.perf_counter() - start
    out["hgbt"] = {}
    for name, settings in HGBT.items():
        stamps = []
        comm.Barrier()
        start = time.perf_counter()
        result = fit_hgbt(shard.X, shard.y, comm, task="binary", n_estimators=args.trees,
                          row_offset=shard.start, n_total=shard.n_total,
                          on_tree=lambda model, stamps=stamps: stamps.append(
                              time.perf_counter()), **settings)
        total = time.perf_counter() - start
        correct = comm.allreduce(float((predict(result.model, test.X) == test.y).sum()))
        out["hgbt"][name] = dict(per_tree(stamps, start, total, args.trees), binning=binning,
                                 accuracy=correct / test.n_total)
    out["load_after"] = benchlib.load()
    if comm.rank == 0:
        benchlib.emit(out)


def per_tree(stamps: list, start: float, total: float, trees: int) -> dict:
    """Seconds per tree from the time stamps after each tree: the best and the median of the
    trees after the first; the first (it pays for binning); the whole fit per tree."""
    gaps = np.diff(stamps) if len(stamps) > 1 else np.array([total])
    return {"tree": float(gaps.min()), "tree_median": float(np.median(gaps)),
            "first_tree": stamps[0] - start, "with_binning": total / trees,
            "seconds_total": total, "trees": trees}


def sklearn_hgbt(settings: dict, X, y, X_test, y_test, trees: int) -> dict:
    """scikit-learn's HistGradientBoostingClassifier with ``settings`` (mpiml's names)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=trees, learning_rate=settings["learning_rate"],
        max_depth=settings["max_depth"], max_leaf_nodes=settings["max_leaf_nodes"],
        min_samples_leaf=settings["min_samples_leaf"], l2_regularization=settings["l2"],
        max_bins=settings["max_bins"], early_stopping=False, random_state=0, verbose=2)
    log = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(log):
        model.fit(X, y)
    total = time.perf_counter() - start
    # verbose=2 prints the binning time and each iteration's (gradients, tree, predictions)
    times = [float(t) for t in re.findall(r"\] .* in (\d+\.\d+)s", log.getvalue())]
    binning = re.search(r"Binning .*: (\d+\.\d+) s", log.getvalue())
    return {"tree": min(times[1:] or times), "tree_median": float(np.median(times)),
            "first_tree": times[0], "with_binning": total / trees, "seconds_total": total,
            "binning": float(binning.group(1)) if binning else float("nan"), "trees": trees,
            "accuracy": float((model.predict(X_test) == y_test).mean())}


def lightgbm_hgbt(lightgbm, settings: dict, X, y, X_test, y_test, trees: int) -> dict:
    """LightGBM with 2 threads and ``settings`` (depth-wise: ``num_leaves = 2^max_depth``)."""
    params = {"objective": "binary", "learning_rate": settings["learning_rate"],
              "num_leaves": settings["max_leaf_nodes"] or 2 ** settings["max_depth"],
              "max_depth": settings["max_depth"] or -1,
              "min_child_samples": settings["min_samples_leaf"], "min_sum_hessian_in_leaf": 1e-3,
              "lambda_l2": settings["l2"], "max_bin": settings["max_bins"], "num_threads": 2,
              "seed": 0, "verbose": -1}
    start = time.perf_counter()
    data = lightgbm.Dataset(X, y, params=params).construct()
    binning = time.perf_counter() - start
    stamps = []
    start = time.perf_counter()
    booster = lightgbm.train(params, data, num_boost_round=trees,
                             callbacks=[lambda env: stamps.append(time.perf_counter())])
    total = time.perf_counter() - start + binning
    result = per_tree(stamps, start, total, trees)
    result.update(binning=binning, accuracy=float(((booster.predict(X_test) > 0.5) == y_test)
                                                  .mean()))
    return result


def xgboost_hgbt(xgboost, settings: dict, X, y, X_test, y_test, trees: int) -> dict:
    """XGBoost (``hist``) with 2 threads and ``settings``: depth-wise, or ``lossguide`` to
    ``max_leaf_nodes`` leaves. XGBoost has no minimum row count per leaf: ``min_child_weight``
    is set as LightGBM's minimum hessian (1e-3)."""
    params = {"objective": "binary:logistic", "tree_method": "hist",
              "eta": settings["learning_rate"], "max_depth": settings["max_depth"] or 0,
              "min_child_weight": 1e-3, "reg_lambda": settings["l2"],
              "max_bin": settings["max_bins"], "nthread": 2, "seed": 0, "verbosity": 0}
    if settings["max_leaf_nodes"]:
        params.update(grow_policy="lossguide", max_leaves=settings["max_leaf_nodes"])
    start = time.perf_counter()
    data = xgboost.QuantileDMatrix(X, y, max_bin=settings["max_bins"], nthread=2)
    binning = time.perf_counter() - start
    stamps = []

    class Stamp(xgboost.callback.TrainingCallback):
        def after_iteration(self, model, epoch, evals_log):
            stamps.append(time.perf_counter())
            return False

    start = time.perf_counter()
    booster = xgboost.train(params, data, num_boost_round=trees, callbacks=[Stamp()])
    total = time.perf_counter() - start + binning
    result = per_tree(stamps, start, total, trees)
    predicted = booster.predict(xgboost.DMatrix(X_test, nthread=2)) > 0.5
    result.update(binning=binning, accuracy=float((predicted == y_test).mean()))
    return result


def time_kmeans(estimator, X, centers, iterations: int) -> dict:
    """Seconds per Lloyd iteration of a scikit-learn-like ``estimator``: ``(t(M) - t(1)) /
    (n_iter(M) - 1)``, best of 3 fits each (their difference is a few iterations)."""
    times, n_iter = {}, {}
    for _ in range(3):
        for max_iter in (1, iterations):
            model = estimator(K, init=centers, n_init=1, max_iter=max_iter, tol=0.0,
                              algorithm="lloyd")
            start = time.perf_counter()
            model.fit(X)
            elapsed = time.perf_counter() - start
            times[max_iter] = min(times.get(max_iter, elapsed), elapsed)
            n_iter[max_iter] = model.n_iter_
    steps = max(1, n_iter[iterations] - n_iter[1])
    per_iteration = (times[iterations] - times[1]) / steps
    if per_iteration <= 0:  # noise larger than the difference: count the set-up too
        per_iteration = times[iterations] / n_iter[iterations]
    return {"iteration": per_iteration, "n_iter": int(n_iter[iterations]),
            "inertia": float(model.inertia_)}


def sklearn_worker(args) -> None:
    import h5py
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    out = {"load_before": benchlib.load(), "kmeans": {}, "hgbt": {}}
    with h5py.File(args.blobs, "r") as handle:
        X = handle["X"][...]
    centers = initial_centers(args.blobs).astype(X.dtype)
    for threads in (2, 1):
        with threadpool_limits(threads):
            out["kmeans"][f"{threads}t"] = time_kmeans(KMeans, X, centers, args.iterations)
    try:  # oneDAL, through scikit-learn-intelex (optional: the bench extra)
        import daal4py
        from sklearnex.cluster import KMeans as OneDALKMeans
    except ImportError:
        pass
    else:
        daal4py.daalinit(2)
        out["kmeans"]["onedal_2t"] = time_kmeans(OneDALKMeans, X, centers, args.iterations)
    del X
    with h5py.File(args.binary, "r") as handle:
        X, y = handle["X"][...], handle["y"][...]
        X_test, y_test = handle["X_test"][...], handle["y_test"][...]
    peers = {}  # optional: the bench extra installs both
    for module, timer in (("lightgbm", lightgbm_hgbt), ("xgboost", xgboost_hgbt)):
        try:
            peers[f"{module}_2t"] = (importlib.import_module(module), timer)
        except ImportError:
            pass
    for name, settings in HGBT.items():
        with threadpool_limits(2):
            out["hgbt"][f"sklearn_2t {name}"] = sklearn_hgbt(settings, X, y, X_test, y_test,
                                                             args.trees)
        for peer, (module, timer) in peers.items():
            out["hgbt"][f"{peer} {name}"] = timer(module, settings, X, y, X_test, y_test,
                                                  args.trees)
    out["load_after"] = benchlib.load()
    benchlib.emit(out)


# -- driver ----------------------------------------------------------------------------------------


def combine(mine: list[dict], theirs: list[dict]) -> dict:
    result = {"loads": [run["load_before"] for run in mine + theirs], "kmeans": {}, "hgbt": {}}
    for choice, name in (("numba", "mpiml_2r"), ("numpy", "mpiml_2r_numpy")):
        result["kmeans"][name] = min((run["kmeans"][choice] for run in mine),
                                     key=lambda r: r["iteration"])
    for threads in ("2t", "1t"):
        result["kmeans"][f"sklearn_{threads}"] = min((run["kmeans"][threads] for run in theirs),
                                                     key=lambda r: r["iteration"])
    if all("onedal_2t" in run["kmeans"] for run in theirs):
        result["kmeans"]["onedal_2t"] = min((run["kmeans"]["onedal_2t"] for run in theirs),
                                            key=lambda r: r["iteration"])
    for name in HGBT:  # per setting: mpiml, then its references
        result["hgbt"][f"mpiml_2r {name}"] = min((run["hgbt"][name] for run in mine),
                                                 key=lambda r: r["tree"])
        for reference in ("sklearn_2t", "lightgbm_2t", "xgboost_2t"):
            key = f"{reference} {name}"
            if all(key in run["hgbt"] for run in theirs):
                result["hgbt"][key] = min((run["hgbt"][key] for run in theirs),
                                          key=lambda r: r["tree"])
    return result


def driver(args) -> dict:
    mode = "quick" if args.quick else "full"
    data_dir = args.data_dir or str(benchlib.ROOT / "data" / "bench")
    paths, commands = {}, {}
    for name, spec in WORKLOADS[mode].items():
        paths[name], commands[name] = benchlib.ensure_data(data_dir, f"{mode}-{name}", spec)
    script = str(Path(__file__).resolve())
    iterations, trees = (5, 3) if args.quick else (10, 5)
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
