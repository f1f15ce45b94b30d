"""Scaling past this machine, on paper: an alpha-beta model fitted to measured allreduce times,
projecting the time per step of each model family to 8 .. 1,024 ranks.

    python scripts/scaling_model.py --network "10 Gb/s, 25 us"=ar10g.json \
        [--network NAME=FILE ...] [--markdown OUT]

Each ``FILE`` is the ``--json`` output of ``scripts/bench_allreduce.py`` on one network (ranks
2 and 4; sizes 8 B .. 64 MiB). For every network the script fits, by least squares on relative
error over every measured (ranks, size) point:

* ring (mpiml's reduce-scatter + allgather): ``T = 2 (p-1) alpha + 2 (p-1)/p m beta``;
* tree (recursive doubling): ``T = ceil(log2 p) (alpha + m beta)``;

and reports the fitted alpha (latency per message) and 1/beta (bandwidth), with the largest
relative error of the fit against the measured points (the check on the 2- and 4-rank data).

The projection: one step of a family costs ``compute(1 rank) / p`` (strong scaling of a fixed
data set; the compute times are the 1-rank measurements of docs/benchmarks.md, overridable with
``--compute family=seconds``) plus its reductions at the faster of ring and tree for their size,
which is what ``comm.algorithm: auto`` picks when its threshold is set from these measurements.
The rank count where communication passes half the step is printed per family and network.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

#: One step of each family on the benchmarks' data at 1 rank (seconds of compute) and the
#: reductions it makes: (messages per step, bytes per message). From docs/benchmarks.md.
FAMILIES = {
    "logistic, full batch (1M x 100)": (0.0616, 1, (100 + 1 + 3) * 8),
    "softmax, 10 classes, L-BFGS evaluation (1M x 100)": (0.22, 1, (10 * 101 + 3) * 8),
    "MLP 784-256-10, SGD step (global batch 1,024)": (0.012, 1, (784 * 256 + 256 + 2570 + 3) * 8),
    "K-Means iteration (1M x 32, k = 16)": (0.0466, 1, (16 * 32 + 16 + 1) * 8),
    "boosting, tree of depth 6 (1M x 100, 255 bins)": (0.58, 32, 100 * 255 * 3 * 8),
}
RANKS = (8, 16, 32, 64, 128, 256, 512, 1024)


def ring_time(p, m, alpha, beta):
    return 2 * (p - 1) * alpha + 2 * (p - 1) / p * m * beta


def tree_time(p, m, alpha, beta):
    return math.ceil(math.log2(p)) * (alpha + m * beta)


MODELS = {"ring": ring_time, "tree": tree_time}


def fit(points: list[tuple[int, int, float]], model) -> tuple[float, float, float]:
    """(alpha, beta, worst relative error) of ``model`` fitted to (ranks, bytes, seconds)
    points, least squares on relative error (each equation divided by its measured time)."""
    rows = np.array([[model(p, m, 1.0, 0.0), model(p, m, 0.0, 1.0)] for p, m, _ in points])
    times = np.array([t for _, _, t in points])
    (alpha, beta), *_ = np.linalg.lstsq(rows / times[:, None], np.ones(len(times)), rcond=None)
    alpha, beta = max(alpha, 0.0), max(beta, 0.0)
    predicted = np.array([model(p, m, alpha, beta) for p, m, _ in points])
    return float(alpha), float(beta), float(np.max(np.abs(predicted / times - 1)))


def load_points(path: str) -> dict[str, list[tuple[int, int, float]]]:
    """Per algorithm, the (ranks, bytes, seconds) points of a bench_allreduce.py JSON file."""
    data = json.loads(Path(path).read_text())
    points: dict[str, list] = {name: [] for name in MODELS}
    for result in data["results"]:
        for nbytes, times in result["rows"]:
            for name in MODELS:
                points[name].append((result["ranks"], nbytes, times[name]))
    return points


def network_model(path: str) -> dict:
    points = load_points(path)
    return {name: dict(zip(("alpha", "beta", "worst"), fit(points[name], MODELS[name]),
                           strict=True))
            for name in MODELS}


def step_time(model: dict, family: tuple, p: int) -> tuple[float, float, str]:
    """(compute, communication, algorithm) of one step of ``family`` at ``p`` ranks."""
    compute, messages, nbytes = family
    best = min(MODELS, key=lambda name: MODELS[name](p, nbytes, model[name]["alpha"],
                                                       model[name]["beta"]))
    comm = messages * MODELS[best](p, nbytes, model[best]["alpha"], model[best]["beta"])
    return compute / p, comm, best


def report(networks: dict[str, dict], families: dict) -> str:
    out = ["### Fitted alpha-beta models", "",
           "| network | algorithm | alpha (µs) | bandwidth 1/beta (GB/s) | worst fit error on "
           "the measured 2- and 4-rank points |", "|---|---|---:|---:|---:|"]
    for name, model in networks.items():
        for algorithm, values in model.items():
            bandwidth = 1 / values["beta"] / 1e9 if values["beta"] > 0 else float("inf")
            out.append(f"| {name} | {algorithm} | {values['alpha'] * 1e6:.1f} | "
                       f"{bandwidth:.2f} | {100 * values['worst']:.0f}% |")
    for name, model in networks.items():
        out += ["", f"### Projected time per step: {name}", "",
                "| family | " + " | ".join(f"{p} ranks" for p in RANKS)
                + " | communication > half the step from |",
                "|---|" + "---:|" * len(RANKS) + "---:|"]
        for family, spec in families.items():
            cells, crossover = [], None
            for p in RANKS:
                compute, comm, algorithm = step_time(model, spec, p)
                total = compute + comm
                cells.append(f"{1e3 * total:.2f} ms ({100 * comm / total:.0f}% comm, {algorithm})")
                if crossover is None and comm > compute:
                    crossover = p
            out.append(f"| {family} | " + " | ".join(cells)
                       + f" | {crossover or '> 1024'} ranks |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", action="append", required=True, metavar="NAME=FILE",
                        help="a network's name and its bench_allreduce.py --json file")
    parser.add_argument("--compute", action="append", default=[], metavar="FAMILY=SECONDS",
                        help="override a family's 1-rank compute time per step")
    parser.add_argument("--markdown", help="write the tables here instead of stdout")
    args = parser.parse_args()
    families = dict(FAMILIES)
    for item in args.compute:
        name, seconds = item.rsplit("=", 1)
        if name not in families:
            parser.error(f"--compute: unknown family {name!r}; known: {', '.join(families)}")
        families[name] = (float(seconds), *families[name][1:])
    networks = {}
    for item in args.network:
        name, path = item.rsplit("=", 1)
        networks[name] = network_model(path)
    text = report(networks, families) + "\n"
    if args.markdown:
        Path(args.markdown).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
