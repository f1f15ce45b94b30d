"""A host lost in the middle of a job of 2 simulated hosts x 2 ranks, under MPICH and Open MPI
(docs/multi-node.md, "When a host fails"):

- a dead host (every process on it killed, the kernel still up: its connections close) ends
  the job within 20 s; the launcher names the host, and rank 0 said at start which ranks run
  there;
- a partitioned host (its link down: nothing arrives, nothing is refused) is named with its
  ranks by rank 0's stall watchdog, and the job -- the launcher with the ranks it can reach --
  ends within ``fault.stall_seconds`` + 10 s (the watchdog aborts COMM_WORLD, which MPICH
  reports to hydra's mpiexec; Open MPI's mpirun ends then or when ssh's keepalive gives up);

and the job resumed afterwards (on the same hosts; after Open MPI's partition on 1 host x 2
ranks) ends with the bits of an undisturbed run (reproducible mode).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import yaml
from launch import ROOT, needs_openmpi, run, run_mpi, single_thread_env
from multihost_cluster import network_env

STALL = 5.0
LOST = "mpiml-h2"
#: How each launcher names the lost host (MPICH: ssh, by the hostfile's address).
HOST_NAMED = {"mpich": "Connection to 10.77.0.2 closed by remote host",
              "openmpi": "Remote host:   mpiml-h2"}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("multihost-failures") / "binary.h5"
    subprocess.run([sys.executable, "-m", "mpiml.data", "synth", "--task", "binary", "--rows",
                    "1000", "--features", "10", "--seed", "2", str(path)],
                   check=True, capture_output=True, timeout=120, cwd=ROOT)
    return path


def write_config(directory: Path, data_file: Path) -> Path:
    """189 steps, a checkpoint every 25, reproducible: a few seconds on the hosts."""
    raw = {"data": {"train": str(data_file)}, "model": {"kind": "logistic", "alpha": 0.001},
           "optimizer": {"name": "momentum", "lr": 0.05},
           "train": {"epochs": 3, "batch_size": 16, "log_every": 1000, "reproducible": True,
                     "block_rows": 16},
           "checkpoint": {"every_steps": 25, "every_seconds": None},
           "fault": {"stall_seconds": STALL}, "output": {"dir": str(directory / "run")}}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def final_params(cfg: Path) -> bytes:
    with h5py.File(cfg.parent / "run" / "model.h5") as model:
        return model["model/params"][()].tobytes()


@pytest.fixture(scope="module")
def undisturbed(data_file, tmp_path_factory) -> bytes:
    """The final parameters of the run never disturbed (2 ranks here: the bits do not depend
    on the rank count in reproducible mode)."""
    cfg = write_config(tmp_path_factory.mktemp("undisturbed"), data_file)
    job = run_mpi(2, ["-m", "mpiml.train", str(cfg), "--quiet"], timeout=120,
                  env=single_thread_env())
    assert job.returncode == 0, job.output[-4000:]
    return final_params(cfg)


def wait_for(predicate, timeout: float, what: str) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout``."""
    began = time.monotonic()
    while not predicate():
        assert time.monotonic() - began < timeout, f"{what}: not within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - began


class Job:
    """A launch running in the background, its output in a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        env = dict(env, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        self.log = log
        with log.open("w") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=ROOT, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ended(self) -> bool:
        return self.proc.poll() is not None

    def kill(self) -> None:
        if not self.ended():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def start_and_wait_for_a_checkpoint(cluster, mpi: str, cfg: Path) -> Job:
    job = Job(cluster.launch(mpi, 4, ["-m", "mpiml.train", str(cfg), "--quiet"]),
              network_env(mpi), cfg.parent / "job.log")
    checkpoints = cfg.parent / "run" / "checkpoints"
    wait_for(lambda: job.ended() or any(checkpoints.glob("ckpt-00000000[57]?.h5")), 90,
             "a checkpoint of step 50 or 75")
    assert not job.ended(), job.output()[-4000:]
    return job


def resume_and_compare(cluster, mpi: str, cfg: Path, ranks: int, undisturbed: bytes) -> None:
    """Resume on ``ranks`` ranks of the hosts (2: both on the first host); the final bits must
    be the undisturbed run's."""
    job = run(cluster.launch(mpi, ranks, ["-m", "mpiml.train", str(cfg), "--quiet"]),
              timeout=120, env=network_env(mpi))
    assert not job.timed_out and job.returncode == 0, job.output[-4000:]
    metrics = (cfg.parent / "run" / "metrics.jsonl").read_text()
    assert '"event": "resume"' in metrics, metrics[-2000:]
    assert final_params(cfg) == undisturbed, "the resumed run's parameters differ"


def restore(cluster) -> None:
    """The lost host back as the cluster made it: link up, nothing of the job left on it. The
    job's ranks must end by themselves (Open MPI leaves the other host's until their stall
    watchdog ends them)."""
    cluster.set_link(LOST, up=True)
    try:
        gone = wait_for(lambda: not cluster.training_processes(), STALL * 1.25 + 20,
                        "the lost job's ranks to end")
        print(f"the lost job's last rank ended {gone:.2f} s after its launcher")
    finally:
        cluster.kill_host(LOST)


@pytest.mark.parametrize("mpi", ["mpich", "openmpi"])
def test_a_dead_host_ends_the_job_and_the_resumed_job_matches(cluster, data_file, undisturbed,
                                                              tmp_path, mpi):
    needs_openmpi(mpi)
    cfg = write_config(tmp_path, data_file)
    job = start_and_wait_for_a_checkpoint(cluster, mpi, cfg)
    try:
        began = time.monotonic()
        killed = cluster.kill_host(LOST)
        wait_for(job.ended, 20, "the job to end after its host died")
        seconds = time.monotonic() - began
    finally:
        restore(cluster)
        job.kill()
    output = job.output()
    assert sum("mpiml.train" in line for line in killed.values()) >= 2, killed
    assert job.proc.returncode != 0, output[-4000:]
    assert "mpiml: ranks 0, 1 on host mpiml-h1; ranks 2, 3 on host mpiml-h2" in output, output
    assert HOST_NAMED[mpi] in output, output[-4000:]
    print(f"{mpi}: the job ended {seconds:.2f} s after its host died")
    resume_and_compare(cluster, mpi, cfg, 4, undisturbed)


@pytest.mark.parametrize("mpi", ["mpich", "openmpi"])
def test_a_partitioned_host_is_named_and_the_resumed_job_matches(cluster, data_file,
                                                                 undisturbed, tmp_path, mpi):
    needs_openmpi(mpi)
    cfg = write_config(tmp_path, data_file)
    job = start_and_wait_for_a_checkpoint(cluster, mpi, cfg)
    limit = STALL + 10
    try:
        began = time.monotonic()
        cluster.set_link(LOST, up=False)
        named = wait_for(lambda: "late ranks: [2, 3]: ranks 2, 3 on host mpiml-h2"
                         in job.output(), limit, "rank 0 to name the lost ranks and host")
        wait_for(job.ended, limit - (time.monotonic() - began), "the launcher to end")
        seconds = time.monotonic() - began
        wait_for(lambda: "mpiml-h1" not in cluster.training_processes(),
                 limit - (time.monotonic() - began), "the reachable ranks to end")
        reachable = time.monotonic() - began
    finally:
        restore(cluster)
        job.kill()
    assert job.proc.returncode != 0, job.output()[-4000:]
    print(f"{mpi}: named after {named:.2f} s, the launcher ended after {seconds:.2f} s, the "
          f"reachable ranks after {reachable:.2f} s")
    resume_and_compare(cluster, mpi, cfg, 4 if mpi == "mpich" else 2, undisturbed)
