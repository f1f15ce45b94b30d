"""scripts/slurm/train.sbatch on a Slurm with one slurmd per simulated host (`local-slurm.sh start
--nodes 2`, docs/slurm.md): `sbatch -N 2 --ntasks-per-node=2` trains across both hosts under srun
and under mpiexec; the warning signal gives a checkpoint, a requeue and a resume on both nodes;
and a node that dies (every process of its host killed) gets the job requeued, and it resumes
once the node is back. Both end bit-identical to an undisturbed run.

Runs when both layers are enabled (MPIML_MULTIHOST_TESTS=1 and MPIML_SLURM_TESTS=1).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
from multihost_cluster import ROOT

SCRIPT = ROOT / "scripts" / "ci" / "local-slurm.sh"
PREFIX = Path("/tmp/mpiml-slurm-nodes")
STEPS = 40 * 125  # 40 epochs of 4,000 rows in batches of 32
TRAIN = ["train.epochs=40", "train.batch_size=32", "train.log_every=100",
         "checkpoint.every_steps=250", "checkpoint.every_seconds=null"]
#: docs/multi-node.md: MPICH between the simulated hosts goes over TCP on their interface.
NETWORK_ENV = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": "mpiml0"}
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


def local_slurm(cluster, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPIML_CLUSTER_PREFIX=str(cluster.prefix),
               MPIML_CLUSTER_NAME=cluster.names[0].rsplit("-h", 1)[0])
    return subprocess.run(["bash", str(SCRIPT), command, "--nodes", str(len(cluster.names))],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)


@pytest.fixture(scope="module")
def slurm(cluster):
    """The multi-node Slurm, started for this module and stopped after it (unless it ran)."""
    already_up = local_slurm(cluster, "status", 30).returncode == 0
    started = local_slurm(cluster, "start", 600)
    assert started.returncode == 0, started.stdout + started.stderr
    assert "2 nodes are up" in started.stdout, started.stdout
    env = dict(os.environ, SLURM_CONF=str(PREFIX / "slurm.conf"), OMP_NUM_THREADS="1",
               PYTHON=sys.executable, **NETWORK_ENV)
    env.pop("MPIML_FAULT", None)
    submitted: list[str] = []
    yield env, submitted
    for job_id in submitted:
        subprocess.run(["scancel", job_id], env=env, capture_output=True, timeout=30)
    if not already_up:
        stopped = local_slurm(cluster, "stop")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slurm-nodes-data") / "binary.h5"
    subprocess.run([sys.executable, "-m", "mpiml.data", "synth", "--task", "binary", "--rows",
                    "4000", "--features", "10", "--test-rows", "500", "--seed", "0", str(path)],
                   check=True, capture_output=True, timeout=120, cwd=ROOT)
    return path


def job_record(env: dict, job_id: str) -> str:
    return subprocess.run(["scontrol", "show", "job", "-o", job_id], env=env, capture_output=True,
                          text=True, timeout=30).stdout


def field_of(record: str, key: str) -> str | None:
    found = re.search(rf"(?:^|\s){key}=(\S*)", record)
    return found.group(1) if found else None


def submit(slurm, tmp: Path, name: str, data_file: Path, launcher: str) -> tuple[str, Path, Path]:
    """train.sbatch on 2 nodes x 2 ranks; returns (job id, output dir, log)."""
    env, submitted = slurm
    out_dir, log = tmp / name, tmp / f"{name}.out"
    args = ["--quiet"]
    for item in (f"data.train={data_file}", f"data.test={data_file}", f"output.dir={out_dir}",
                 *TRAIN):
        args += ["--set", item]
    proc = subprocess.run(["sbatch", "--parsable", "-N", "2", "--ntasks-per-node=2",
                           f"--output={log}", str(ROOT / "scripts" / "slurm" / "train.sbatch"),
                           *args], env=dict(env, MPIML_LAUNCHER=launcher), capture_output=True,
                          text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    submitted.append(proc.stdout.strip())
    return proc.stdout.strip(), out_dir, log


def wait_until(what, timeout: float, message):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        time.sleep(0.5)
    raise AssertionError(message())


def finish(env: dict, job_id: str, log: Path, timeout: float) -> str:
    record = ""

    def done() -> bool:
        nonlocal record
        record = job_record(env, job_id)
        return field_of(record, "JobState") in FINISHED
    wait_until(done, timeout, lambda: f"job {job_id} not finished: {record}\n"
                                      f"{log.read_text() if log.exists() else ''}")
    return record


def events(out_dir: Path, name: str) -> list[dict]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") == name]


def params(out_dir: Path) -> bytes:
    with h5py.File(out_dir / "model.h5") as model:
        return model["model/params"][()].tobytes()


def losses_logged(out_dir: Path) -> int:
    path = out_dir / "metrics.jsonl"
    return path.read_text().count('"loss"') if path.exists() else 0


def assert_trained_on_both_hosts(record: str, out_dir: Path, log: Path, restarts: int) -> None:
    text = log.read_text()
    assert field_of(record, "JobState") == "COMPLETED", (record, text)
    assert field_of(record, "NodeList") == "mpiml-h[1-2]", record
    assert field_of(record, "Restarts") == str(restarts), record
    assert events(out_dir, "start")[0]["ranks"] == 4
    assert events(out_dir, "done")[0]["steps"] == STEPS


@pytest.fixture(scope="module")
def reference(slurm, data_file, tmp_path_factory):
    """An undisturbed run under srun: (record, output dir, log)."""
    tmp = tmp_path_factory.mktemp("slurm-nodes-reference")
    job_id, out_dir, log = submit(slurm, tmp, "reference", data_file, "srun")
    return finish(slurm[0], job_id, log, 120), out_dir, log


def test_srun_trains_on_both_nodes(reference):
    record, out_dir, log = reference
    assert_trained_on_both_hosts(record, out_dir, log, restarts=0)
    assert "4 ranks via srun" in log.read_text()


def test_warning_under_mpiexec_checkpoints_requeues_and_resumes_on_both_nodes(
        slurm, data_file, tmp_path, reference):
    env, _ = slurm
    job_id, out_dir, log = submit(slurm, tmp_path, "warned", data_file, "mpiexec")
    wait_until(lambda: losses_logged(out_dir) >= 2, 60, lambda: log.read_text())
    subprocess.run(["scancel", "--signal=USR1", job_id], env=env, check=True, timeout=30)
    record = finish(env, job_id, log, 120)
    assert_trained_on_both_hosts(record, out_dir, log, restarts=1)
    text = log.read_text()
    assert "4 ranks via mpiexec" in text and "training exited with 75" in text, text
    stopped, resumed = events(out_dir, "stopped"), events(out_dir, "resume")
    assert [r["step"] for r in resumed] == [stopped[0]["step"]], (stopped, resumed)
    assert params(out_dir) == params(reference[1])


def test_a_dead_node_requeues_the_job_and_it_resumes_when_the_node_is_back(
        slurm, cluster, data_file, tmp_path, reference):
    env, _ = slurm
    job_id, out_dir, log = submit(slurm, tmp_path, "node-death", data_file, "srun")
    wait_until(lambda: list((out_dir / "checkpoints").glob("ckpt-*.h5"))
               if (out_dir / "checkpoints").exists() else False, 60, lambda: log.read_text())
    # host 2 dies: every process in its namespace (slurmd, its job's ranks), but its sshd
    sshd = int((cluster.prefix / "mpiml-h2" / "sshd.pid").read_text())
    pids = subprocess.run(["ip", "netns", "pids", "mpiml-h2"], capture_output=True, text=True,
                          check=True).stdout.split()
    for pid in {int(p) for p in pids} - {sshd}:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    began = time.monotonic()
    wait_until(lambda: field_of(job_record(env, job_id), "Restarts") == "1", 60,
               lambda: job_record(env, job_id))
    requeued_after = time.monotonic() - began
    restarted = local_slurm(cluster, "start")  # the node comes back
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    record = finish(env, job_id, log, 120)
    assert_trained_on_both_hosts(record, out_dir, log, restarts=1)
    resumed = events(out_dir, "resume")
    assert len(resumed) == 1 and 0 < resumed[0]["step"] < STEPS, resumed
    assert params(out_dir) == params(reference[1])
    assert requeued_after < 30, f"requeued {requeued_after:.0f} s after the node died"
