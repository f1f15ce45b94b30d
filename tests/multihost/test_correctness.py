"""Training across hosts gives the models training on one host gives: 2 simulated hosts x 2
ranks against 1 host x 4 ranks, every model family (linear, logistic, softmax and SVM with SGD
and L-BFGS, an MLP, K-Means, boosted trees), in one launch per layout (train_matrix.py).

Reproducible mode must give the same bits -- also under Open MPI, whose sums travel by another
library over the same network; the normal mode must agree within the tolerances the
single-host MPI tests allow between rank counts (tests/mpi/test_trainer_mpi.py).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from launch import ROOT, needs_openmpi, run, run_mpi, single_thread_env
from multihost_cluster import network_env
from train_matrix import CASES

PROGRAM = Path(__file__).with_name("train_matrix.py")
#: Relative tolerance of the normal mode, by case (L-BFGS's line search amplifies rounding).
TOLERANCE = {case: 1e-8 if "lbfgs" in case else 1e-10 for case in CASES}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Tiny data sets, one per task, on the filesystem every host shares."""
    path = tmp_path_factory.mktemp("multihost-matrix")
    for task in ("binary", "multiclass", "regression"):
        subprocess.run([sys.executable, "-m", "mpiml.data", "synth", "--task", task, "--rows",
                        "400", "--features", "6", "--seed", "1", str(path / f"{task}.h5")],
                       check=True, capture_output=True, timeout=120, cwd=ROOT)
    return path


@pytest.fixture(scope="module")
def one_host(data_dir, tmp_path_factory) -> Path:
    """Every case trained by 4 ranks on this machine (MPICH), the reference."""
    out = tmp_path_factory.mktemp("one-host")
    job = run_mpi(4, [str(PROGRAM), str(data_dir), str(out)], timeout=180,
                  env=single_thread_env())
    assert not job.timed_out and job.returncode == 0, job.output[-4000:]
    return out


def train_on_hosts(cluster, mpi: str, data_dir: Path, out: Path, cases: list[str]) -> None:
    job = run(cluster.launch(mpi, 4, [str(PROGRAM), str(data_dir), str(out), *cases]),
              timeout=180, env=network_env(mpi))
    assert not job.timed_out and job.returncode == 0, job.output[-4000:]
    hosts = Counter(line.rsplit(" ", 1)[1] for line in job.output.splitlines()
                    if line.startswith("mpiml-multihost: rank "))
    assert hosts == {name: 2 for name in cluster.names}, job.output[-4000:]


def compare(got_dir: Path, want_dir: Path, case: str) -> list[str]:
    """What differs between the two layouts' models of ``case``: bits in reproducible mode,
    more than the tolerance otherwise."""
    problems = []
    for mode in ("reproducible", "normal"):
        got = np.load(got_dir / f"{case}-{mode}.npz")
        want = np.load(want_dir / f"{case}-{mode}.npz")
        assert sorted(got.files) == sorted(want.files), (case, got.files, want.files)
        for name in want.files:
            a, b = got[name], want[name]
            if mode == "reproducible" or a.dtype.kind != "f":
                if a.dtype != b.dtype or a.tobytes() != b.tobytes():
                    problems.append(f"{case} {mode}: {name} differs")
                continue
            error = float(np.abs(a - b).max()) / max(1.0, float(np.abs(b).max()))
            if error > TOLERANCE[case]:
                problems.append(f"{case} {mode}: {name} differs by {error:.3g}")
    return problems


def test_every_family_trains_the_same_model_on_two_hosts_as_on_one(cluster, data_dir,
                                                                     one_host, tmp_path):
    train_on_hosts(cluster, "mpich", data_dir, tmp_path, [])
    problems = [problem for case in CASES for problem in compare(tmp_path, one_host, case)]
    assert not problems, problems


def test_open_mpi_across_hosts_gives_mpichs_bits(cluster, data_dir, one_host, tmp_path):
    needs_openmpi("openmpi")
    train_on_hosts(cluster, "openmpi", data_dir, tmp_path, ["logistic-sgd"])
    assert not compare(tmp_path, one_host, "logistic-sgd")
