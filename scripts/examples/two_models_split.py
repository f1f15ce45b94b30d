"""Two models trained at once in one MPI job, each by half of the ranks: mpiml inside a program
that owns its communicators.

    mpiexec -n 4 python scripts/examples/two_models_split.py

The program splits COMM_WORLD by ``rank % 2``. Group 0 fits a LogisticRegression on its rows
of scikit-learn's bundled breast-cancer data and reports the accuracy on held-out rows; group 1
fits a KMeans on rows each of its ranks generates itself (the rows never leave their rank) and
reports how close the centres are to the true ones. Each group's rank 0 prints one line. mpi4py
initialises and finalises MPI; the program frees the communicator it created, and
:func:`mpiml.run_spmd` turns an exception on any rank into the end of the whole job.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread per rank: the ranks use the cores

import sys  # noqa: E402

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import mpiml  # noqa: E402
from mpiml.estimators import KMeans, LogisticRegression  # noqa: E402

TRUE_CENTRES = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
ROWS_PER_RANK = 1500


def classify(group, label: str) -> str:
    """LogisticRegression on this rank's share of 80 % of the rows; accuracy on the rest."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))  # the same split on every rank
    train, test = order[: len(y) * 4 // 5], order[len(y) * 4 // 5 :]
    mine = slice(*mpiml.row_range(len(train), group.rank, group.size))
    held_out = slice(*mpiml.row_range(len(test), group.rank, group.size))
    model = LogisticRegression(C=1.0, standardize=True, comm=group)
    model.fit(X[train][mine], y[train][mine])
    accuracy = model.score(X[test][held_out], y[test][held_out])  # collective, global
    return (f"{label}: LogisticRegression on breast_cancer ({len(train)} training rows): "
            f"test accuracy {accuracy:.3f} after {model.n_iter_} L-BFGS iterations")


def cluster(group, label: str) -> str:
    """KMeans on rows each rank draws itself around TRUE_CENTRES."""
    rng = np.random.default_rng(100 + group.rank)
    X = TRUE_CENTRES[rng.integers(len(TRUE_CENTRES), size=ROWS_PER_RANK)]
    X = X + rng.normal(scale=0.7, size=X.shape)
    model = KMeans(n_clusters=len(TRUE_CENTRES), random_state=0, comm=group).fit(X)
    gaps = np.linalg.norm(TRUE_CENTRES[:, None] - model.cluster_centers_[None], axis=2)
    error = gaps.min(axis=1).max()  # each true centre to the nearest centre found
    return (f"{label}: KMeans k={len(TRUE_CENTRES)} on {ROWS_PER_RANK * group.size} generated "
            f"rows: inertia {model.inertia_:.1f}, largest centre error {error:.3f}")


def main() -> None:
    world = MPI.COMM_WORLD
    color = world.rank % 2
    group = world.Split(color=color, key=world.rank)
    try:
        members = group.allgather(world.rank)
        label = f"group {color} (world ranks {', '.join(map(str, members))})"
        line = classify(group, label) if color == 0 else cluster(group, label)
        if group.rank == 0:
            print(line, flush=True)
    finally:
        group.Free()


if __name__ == "__main__":
    sys.exit(mpiml.run_spmd(main))
