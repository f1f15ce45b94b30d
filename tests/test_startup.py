"""Start-up of ``python -m mpiml.train``: a job imports only what it needs (numba, scikit-learn,
matplotlib, pyarrow and scipy.optimize cost 0.1-0.5 s each), and rank 0 records each start-up
phase's time as one ``startup`` record."""

import json

import pytest
import yaml
from datasets import make_problem, write_dense
from launch import run_mpi, single_thread_env

#: What a job pays for only when it needs it.
OPTIONAL = ("numba", "llvmlite", "sklearn", "matplotlib", "pyarrow", "scipy.optimize")

#: The train command as ``python -m mpiml.train`` runs it, then every module it imported.
PROGRAM = """
import json, sys
from mpiml.cli.train import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "imported": sorted(sys.modules)}))
"""

JOBS = {
    "logistic, momentum": ({"kind": "logistic"}, {}, {"optimizer": {"name": "momentum"}}, []),
    "logistic, L-BFGS": ({"kind": "logistic"}, {}, {"optimizer": {"name": "lbfgs"}},
                         ["scipy.optimize"]),
    "kmeans": ({"kind": "kmeans"}, {}, {"kmeans": {"n_clusters": 3}}, ["llvmlite", "numba"]),
    "kmeans, numpy references": ({"kind": "kmeans"}, {"MPIML_KERNELS": "numpy"},
                                 {"kmeans": {"n_clusters": 3}}, []),
    "hgbt": ({"kind": "hgbt_classifier"}, {}, {"hgbt": {"n_estimators": 2}},
             ["llvmlite", "numba"]),
}


def train_in_process(tmp_path, model, sections, env=None):
    """One 1-rank job of the train command; (its exit code, the optional modules it imported,
    its metrics.jsonl records)."""
    X, y = make_problem("binary", 600, 5, seed=3)
    data = tmp_path / "data.h5"
    write_dense(data, X[:500], y[:500], X[500:], y[500:])
    raw = {"data": {"train": str(data), "test": str(data)}, "model": model,
           "train": {"epochs": 2, "batch_size": 50}, "output": {"dir": str(tmp_path / "run")},
           **sections}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    job = run_mpi(1, ["-c", PROGRAM, str(config), "--quiet"], timeout=120,
                  env=single_thread_env(**(env or {})))
    assert job.returncode == 0, job.output
    result = json.loads(job.output.strip().splitlines()[-1])
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    return (result["code"], [name for name in result["imported"] if name in OPTIONAL],
            [json.loads(line) for line in lines])


@pytest.mark.parametrize("name", list(JOBS))
def test_a_job_imports_the_optional_modules_it_needs_and_no_other(tmp_path, name):
    model, env, sections, needed = JOBS[name]
    code, imported, _ = train_in_process(tmp_path, model, sections, env)
    assert code == 0
    assert imported == needed


def test_rank_0_records_each_start_up_phase_once_before_the_steps(tmp_path):
    _, _, records = train_in_process(tmp_path, {"kind": "logistic"}, {})
    startups = [r for r in records if r.get("event") == "startup"]
    assert len(startups) == 1, records
    record = startups[0]
    phases = record["phases_s"]
    assert list(phases) == ["interpreter", "imports", "config_read", "mpi_init", "config",
                            "run_open", "data", "loop_setup", "first_step"]
    assert all(seconds >= 0 for seconds in phases.values()), phases
    assert sum(phases.values()) == pytest.approx(record["total_s"], abs=1e-3)
    assert 0 < record["total_s"] < 60
    assert abs(record["wall"] - (record["process_start"] + record["total_s"])) < 0.5
    # after the start record and the first step, before any step record
    assert records.index(record) == 1 + [r.get("event") for r in records].index("start")
