"""fault.mode shrink: survivors carry on without a dead rank (ULFM, Open MPI --with-ft ulfm).

The disturbed runs use the Open MPI environment (.venv-ompi, set up by `make test`); the
undisturbed references run under MPICH: in reproducible mode the bits do not depend on the MPI
library (exact sums), so the shrunk run must end with exactly the reference's bits; without it,
within 1e-8. Every model family is covered: the first-order loop redoes the step; L-BFGS,
K-Means and boosting start their fit again from the agreed iteration or round.
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

from mpiml.config import ConfigError, from_dict

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


def records(cfg: Path) -> list[dict]:
    return [json.loads(line) for line in
            (cfg.parent / "run" / "metrics.jsonl").read_text().splitlines()]


def events(cfg: Path, name: str) -> list[dict]:
    return [r for r in records(cfg) if r.get("event") == name]


def steps_after_failure(cfg: Path) -> list[int]:
    """The steps (iterations, rounds) logged after the first rank_failure record."""
    lines = records(cfg)
    at = next(i for i, r in enumerate(lines) if r.get("event") == "rank_failure")
    return [r["step"] for r in lines[at + 1:] if "step" in r and "event" not in r]


def model_arrays(cfg: Path) -> dict[str, np.ndarray]:
    with h5py.File(cfg.parent / "run" / "model.h5") as model:
        arrays = {}
        model["model"].visititems(lambda name, item: arrays.update(
            {name: item[()]} if isinstance(item, h5py.Dataset) else {}))
        return arrays


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


# -- every model family --------------------------------------------------------------------------

KMEANS = {"model": {"kind": "kmeans"}, "kmeans": {"n_clusters": 8, "max_iter": 30, "tol": 0.0}}
HGBT = {"model": {"kind": "hgbt_classifier"},
        "hgbt": {"n_estimators": 12, "max_depth": 3, "min_samples_leaf": 5}}
LBFGS = {"optimizer": {"name": "lbfgs"},
         "train": {"max_steps": 60, "reproducible": True, "log_every": 1}}


@pytest.mark.parametrize(("sections", "fault", "dead"), [
    # Lloyd in reproducible mode: exact sums, the same bits at any rank count, and a fit started
    # from an iteration's state equals the uninterrupted one; so the 2 survivors, started from
    # the agreed iteration, must end with the undisturbed 3-rank run's bits
    (dict(KMEANS, train={"reproducible": True, "log_every": 1}),
     "rank=1,step=5,at=before_allreduce,action=kill", [1]),
    # trees: exact integer histograms at any rank count in either mode (here not reproducible);
    # the rank that logs and saves dies, and a validation watch restarts with the rounds
    (dict(HGBT, data={"validation_fraction": 0.2}, train={"patience": 50, "log_every": 1}),
     "rank=0,step=4,at=before_allreduce,action=kill", [0]),
])
def test_kmeans_and_boosting_survivors_end_with_the_undisturbed_bits(tmp_path, data_file,
                                                                      sections, fault, dead):
    reference = make_config(tmp_path / "reference", data_file, **sections)
    assert train(reference, 3, mpi="mpich").returncode == 0
    cfg = make_config(tmp_path / "shrunk", data_file, **sections)
    job = train(cfg, 3, fault=fault)
    assert job.returncode == 0, job.output
    failure = events(cfg, "rank_failure")
    assert [f["dead_ranks"] for f in failure] == [dead] and failure[0]["ranks_left"] == 2
    # carried on from the agreed round (a fresh start would give the same bits too)
    assert steps_after_failure(cfg)[0] == failure[0]["step"] + 1 > 1
    expected, got = model_arrays(reference), model_arrays(cfg)
    assert expected.keys() == got.keys()
    for name, value in expected.items():
        assert got[name].tobytes() == value.tobytes(), name


def test_minibatch_kmeans_survivors_finish(tmp_path, data_file):
    """Mini-batch K-Means: the global batch order does not depend on the rank count, so the
    survivors go on with the batches that follow the agreed one; the sums of the survivors'
    rows add in another order, so the centres agree to rounding."""
    sections = dict(KMEANS, kmeans={"batch_size": 128, "max_iter": 3})
    reference = make_config(tmp_path / "reference", data_file, **sections)
    assert train(reference, 3, mpi="mpich").returncode == 0
    cfg = make_config(tmp_path / "shrunk", data_file, **sections)
    job = train(cfg, 3, fault="rank=2,step=17,at=before_allreduce,action=kill")
    assert job.returncode == 0, job.output
    assert events(cfg, "rank_failure")[0]["dead_ranks"] == [2]
    np.testing.assert_allclose(model_arrays(cfg)["centers"], model_arrays(reference)["centers"],
                               rtol=1e-10, atol=1e-12)


def test_lbfgs_survivors_restart_the_search_and_reach_the_optimum(tmp_path, data_file):
    """scipy's search cannot continue without the dead rank: the survivors restart L-BFGS from
    the parameters of the last iteration they all completed, with a fresh curvature history
    (as a resume does), so they reach the same optimum, not the same bits."""
    reference = make_config(tmp_path / "reference", data_file, **LBFGS)
    assert train(reference, 3, mpi="mpich").returncode == 0
    cfg = make_config(tmp_path / "shrunk", data_file, **LBFGS)
    job = train(cfg, 3, fault="rank=1,step=6,at=before_allreduce,action=kill")
    assert job.returncode == 0, job.output
    failure = events(cfg, "rank_failure")
    assert failure[0]["dead_ranks"] == [1] and failure[0]["step"] == 6, failure
    assert steps_after_failure(cfg)[0] == 7
    searches = [r for r in records(cfg) if "lbfgs" in r]
    assert len(searches) == 1 and "CONVERGENCE" in searches[0]["lbfgs"], searches
    expected = [r for r in records(reference) if "lbfgs" in r][-1]
    # measured: the losses agree to 7e-13 (relative), the parameters to 3.4e-6
    assert abs(searches[0]["loss"] - expected["loss"]) <= 1e-9 * abs(expected["loss"])
    np.testing.assert_allclose(params_of(cfg), params_of(reference), rtol=0, atol=1e-4)


def test_shrink_is_refused_only_outside_sync_mode():
    base = {"data": {"train": "x.h5"}, "fault": {"mode": "shrink"}}
    for sections in (LBFGS, KMEANS, HGBT, dict(KMEANS, kmeans={"batch_size": 64})):
        from_dict({**base, **sections})
    with pytest.raises(ConfigError, match="fault.mode shrink supports comm.mode sync"):
        from_dict({**base, "comm": {"mode": "local_sgd"}})
