"""fault.mode shrink across hosts (docs/multi-node.md, "When a host fails"): under Open MPI's
ULFM, a job of 2 simulated hosts x 2 ranks whose ranks on the second host are killed carries on
with the first host's two ranks and ends with the bits of an undisturbed run.

Boosted trees are exact integer sums at any rank count, so the survivors, started again from
the agreed round, must end with the undisturbed run's model bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import yaml
from launch import ROOT, needs_openmpi, run_mpi, single_thread_env
from multihost_cluster import network_env
from test_failures import Job, wait_for

LOST = "mpiml-h2"


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("multihost-shrink") / "binary.h5"
    subprocess.run([sys.executable, "-m", "mpiml.data", "synth", "--task", "binary", "--rows",
                    "1000", "--features", "10", "--seed", "2", str(path)],
                   check=True, capture_output=True, timeout=120, cwd=ROOT)
    return path


def write_config(directory: Path, data_file: Path) -> Path:
    raw = {"data": {"train": str(data_file)}, "model": {"kind": "hgbt_classifier"},
           "hgbt": {"n_estimators": 60, "max_depth": 4, "min_samples_leaf": 5},
           "train": {"log_every": 1},
           "checkpoint": {"every_steps": None, "every_seconds": None},
           "fault": {"mode": "shrink", "stall_seconds": 30},
           "output": {"dir": str(directory / "run")}}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def model_arrays(cfg: Path) -> dict[str, bytes]:
    arrays = {}
    with h5py.File(cfg.parent / "run" / "model.h5") as model:
        model["model"].visititems(lambda name, item: arrays.update(
            {name: item[()].tobytes()} if isinstance(item, h5py.Dataset) else {}))
    return arrays


def records(cfg: Path) -> list[dict]:
    return [json.loads(line) for line in
            (cfg.parent / "run" / "metrics.jsonl").read_text().splitlines()]


def test_the_first_hosts_ranks_carry_on_when_the_second_hosts_die(cluster, data_file,
                                                                   tmp_path):
    needs_openmpi("openmpi-ulfm")
    reference = write_config(tmp_path / "reference", data_file)
    undisturbed = run_mpi(2, ["-m", "mpiml.train", str(reference), "--quiet"], timeout=120,
                          env=single_thread_env())
    assert undisturbed.returncode == 0, undisturbed.output[-4000:]
    cfg = write_config(tmp_path / "shrunk", data_file)
    argv = cluster.launch("openmpi", 4, ["-m", "mpiml.train", str(cfg), "--quiet"])
    job = Job([argv[0], "--with-ft", "ulfm", *argv[1:]], network_env("openmpi"),
              cfg.parent / "job.log")
    log = cfg.parent / "run" / "metrics.jsonl"
    try:
        wait_for(lambda: job.ended() or '"step": 5,' in (log.read_text() if log.exists() else ""),
                 90, "round 5")
        assert not job.ended(), job.output()[-4000:]
        ranks = [pid for pid, line in cluster.processes(LOST).items()
                 if str(cfg) in line and "python" in line.split()[0]]
        assert len(ranks) == 2, cluster.processes(LOST)
        began = time.monotonic()
        for pid in ranks:
            os.kill(pid, 9)
        wait_for(job.ended, 60, "the survivors to finish")
        seconds = time.monotonic() - began
    finally:
        job.kill()
    output = job.output()
    assert job.proc.returncode == 0, output[-4000:]
    failures = [r for r in records(cfg) if r.get("event") == "rank_failure"]
    assert sorted(r for f in failures for r in f["dead_ranks"]) == [2, 3], failures
    assert failures[-1]["ranks_left"] == 2
    print(f"the survivors finished {seconds:.2f} s after host 2's ranks died; "
          f"recovery {[f['seconds'] for f in failures]} s at rounds "
          f"{[f['step'] for f in failures]}")
    assert model_arrays(cfg) == model_arrays(reference)
