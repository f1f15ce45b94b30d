"""fault.mode shrink: survivors carry on without a dead rank (ULFM, Open MPI --with-ft ulfm).

The disturbed runs use the Open MPI environment (.venv-ompi, set up by `make test`); the
undisturbed references run under MPICH: in reproducible mode the bits do not depend on the MPI
library (exact sums), so the shrunk run must end with exactly the reference's bits; without it,
within 1e-8.
"""

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from datasets import make_problem, write_dense
from launch import needs_openmpi, run_mpi, single_thread_env

ULFM = "openmpi-ulfm"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    X, y = make_problem("binary", 1701, 6, seed=13)
    path = tmp_path_factory.mktemp("ulfm") / "binary.h5"
    write_dense(path, X[:1501], y[:1501], X[1501:], y[1501:])
    return path


def make_config(directory: Path, data_file, **sections) -> Path:
    raw = {"data": {"train": str(data_file), "test": str(data_file)},
           "model": {"kind": "logistic", "alpha": 0.001},
           "optimizer": {"name": "momentum", "lr": 0.05},
           "train": {"epochs": 3, "batch_size": 64, "log_every": 1000},
           "checkpoint": {"every_steps": 10, "every_seconds": None},
           "fault": {"mode": "shrink"},
           "output": {"dir": str(directory / "run")}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train(cfg, nprocs, mpi=ULFM, fault=None, timeout=300):
    needs_openmpi(mpi)
    env = single_thread_env()
    if fault:
        env["MPIML_FAULT"] = fault
    return run_mpi(nprocs, ["-m", "mpiml.train", str(cfg), "--quiet"], timeout=timeout,
                   mpi=mpi, env=env)


def params_of(cfg: Path) -> np.ndarray:
    with h5py.File(cfg.parent / "run" / "model.h5") as model:
        return model["model/params"][()]


def events(cfg: Path, name: str) -> list[dict]:
    lines = (cfg.parent / "run" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == name]


@pytest.mark.parametrize(("nprocs", "fault", "dead"), [
    (3, "rank=1,step=23,at=before_allreduce,action=kill", [1]),
    (3, "rank=0,step=23,at=before_allreduce,action=kill", [0]),  # the rank that logs and saves
    (4, "rank=1,step=10,at=before_allreduce,action=kill;"
        "rank=3,step=40,at=before_allreduce,action=kill", [1, 3]),
])
def test_survivors_finish_with_the_undisturbed_bits(tmp_path, data_file, nprocs, fault, dead):
    sections = dict(train={"reproducible": True})
    reference = make_config(tmp_path / "reference", data_file, **sections)
    assert train(reference, nprocs, mpi="mpich").returncode == 0
    cfg = make_config(tmp_path / "shrunk", data_file, **sections)
    job = train(cfg, nprocs, fault=fault)
    assert job.returncode == 0, job.output
    failures = events(cfg, "rank_failure")
    assert sorted(r for f in failures for r in f["dead_ranks"]) == dead, failures
    assert failures[-1]["ranks_left"] == nprocs - len(dead)
    assert params_of(cfg).tobytes() == params_of(reference).tobytes()


def test_without_reproducible_mode_the_result_agrees_to_rounding(tmp_path, data_file):
    reference = make_config(tmp_path / "reference", data_file)
    assert train(reference, 3, mpi="mpich").returncode == 0
    cfg = make_config(tmp_path / "shrunk", data_file)
    job = train(cfg, 3, fault="rank=2,step=23,at=before_allreduce,action=kill")
    assert job.returncode == 0, job.output
    np.testing.assert_allclose(params_of(cfg), params_of(reference), rtol=1e-8, atol=1e-12)


def test_too_few_survivors_checkpoint_and_exit(tmp_path, data_file):
    cfg = make_config(tmp_path, data_file, fault={"mode": "shrink", "min_ranks": 3})
    job = train(cfg, 3, fault="rank=2,step=23,at=before_allreduce,action=kill")
    assert job.returncode != 0
    failure = events(cfg, "rank_failure")
    assert failure and "fewer than fault.min_ranks=3" in failure[0]["action"]
    assert events(cfg, "checkpoint")[-1]["step"] == 23
    resumed = train(cfg, 3, mpi="mpich")  # a restarted job resumes from it anywhere
    assert resumed.returncode == 0, resumed.output
    assert events(cfg, "resume")[-1]["step"] == 23


def test_without_ulfm_shrink_falls_back_to_restart(tmp_path, data_file):
    cfg = make_config(tmp_path, data_file)
    job = train(cfg, 3, mpi="mpich", fault="rank=1,step=23,at=before_allreduce,action=kill")
    assert job.returncode != 0 and not job.timed_out
    fallback = events(cfg, "shrink_unavailable")
    assert fallback and fallback[0]["fallback"] == "restart"
    resumed = train(cfg, 3, mpi="mpich")
    assert resumed.returncode == 0, resumed.output
    assert events(cfg, "resume")[-1]["step"] == 20


def test_bench_ulfm_quick_runs():
    import sys

    from launch import ROOT, run

    needs_openmpi(ULFM)
    job = run([sys.executable, str(ROOT / "scripts" / "bench_ulfm.py"), "--quick",
               "--ompi-python", os.environ["MPIML_OMPI_PYTHON"]], timeout=300)
    assert job.returncode == 0, job.output
    assert "| 3 |" in job.output
