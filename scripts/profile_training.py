"""Profile of the full-batch gradient pass and of the training step (1 rank, 1 BLAS thread).

    python scripts/profile_training.py [--quick] [--data-dir DIR] [--top N]

Prints (1) cProfile of ``loss_grad_sum`` over this process's rows of the binary workload of
scripts/bench_training.py (logistic and softmax), and (2) the time per step of the tiny-model
loop (d=10, batch 256, SGD) with the cProfile of one epoch of it. The findings are summarised
in docs/benchmarks.md ("Profile").
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import bench_training  # noqa: E402
import benchlib  # noqa: E402
import numpy as np  # noqa: E402


def top(profile: cProfile.Profile, n: int) -> str:
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(n)
    return "\n".join(line for line in text.getvalue().splitlines()[4:] if line.strip())


def profile_pass(path: str, kind: str, rows: int, n: int) -> None:
    from mpiml.data import load_shard
    from mpiml.models import make_model

    shard = load_shard(path, task="binary" if kind == "logistic" else "multiclass")
    X, y = shard.X[:rows], shard.y[:rows]
    model = make_model(kind, X.shape[1], n_classes=shard.n_classes, alpha=1e-4)
    params = np.random.default_rng(0).normal(scale=0.1, size=model.n_params)
    grad = np.empty(model.n_params)
    k = 1 if kind == "logistic" else shard.n_classes
    w = params[: k * X.shape[1]].reshape(k, X.shape[1]).astype(X.dtype)
    r = np.ones((k, X.shape[0]), dtype=X.dtype)
    floor = benchlib.best_time(lambda: (X @ w.T, r @ X), 5)  # the two products, unblocked
    best = benchlib.best_time(lambda: model.loss_grad_sum(params, X, y, grad), 5)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(5):
        model.loss_grad_sum(params, X, y, grad)
    profile.disable()
    print(f"\n== {kind} loss_grad_sum, {X.shape[0]:,} x {X.shape[1]} {X.dtype}: best "
          f"{best * 1e3:.1f} ms (its two products alone, X @ W.T and R @ X: "
          f"{floor * 1e3:.1f} ms); cProfile of 5 calls:")
    print(top(profile, n))


def profile_step(path: str, n: int) -> None:
    """cProfile of one epoch of the training loop on a tiny model (where per-step overhead
    shows), through the same public functions the benchmark uses."""
    with tempfile.TemporaryDirectory() as out_dir:
        config = bench_training.make_config(path, "logistic", {"name": "sgd", "lr": 0.1},
                                            {"batch_size": bench_training.TINY_BATCH,
                                             "epochs": 1}, out_dir)
        first = bench_training.gradient_problem(config, None, lambda record: None)
        bench_training.run_loop(first)  # warm-up
        steps = first.plan.n_batches(0)
        problem = bench_training.gradient_problem(config, None, lambda record: None,
                                                  rows=first.rows)
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        bench_training.run_loop(problem)
        profile.disable()
        elapsed = time.perf_counter() - start
        print(f"\n== training step, tiny model (d=10, batch {bench_training.TINY_BATCH}, SGD, 1 "
              f"rank): {elapsed / steps * 1e6:.1f} µs per step under cProfile; one epoch "
              f"({steps} steps):")
        print(top(profile, n))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small workloads")
    parser.add_argument("--data-dir", help="where the synth files are (default data/bench)")
    parser.add_argument("--top", type=int, default=12, help="functions shown per profile")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    directory = args.data_dir or str(benchlib.ROOT / "data" / "bench")
    paths = {name: benchlib.ensure_data(directory, f"{mode}-{name}", spec)[0]
             for name, spec in bench_training.WORKLOADS[mode].items()}
    rows = 20_000 if args.quick else 500_000
    profile_pass(paths["binary"], "logistic", rows, args.top)
    profile_pass(paths["multiclass"], "softmax", rows, args.top)
    profile_step(paths["tiny"], args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
