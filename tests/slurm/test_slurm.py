"""scripts/slurm/*.sbatch on a real single-node Slurm (docs/slurm.md): training to completion under
both launchers, the warning signal -> checkpoint -> exit 75 -> requeue -> bit-identical resume, a
crashing rank ending the job, the `srun --mpi=none` launch mistake, and a sweep job array.

Every job is followed with `scontrol show job` (`sbatch --wait` returns 0 even for a TIMEOUT).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ci" / "local-slurm.sh"
PREFIX = Path(os.environ.get("MPIML_SLURM_PREFIX", "/tmp/mpiml-slurm"))
RANKS = 2
# 80 epochs of 125 batches: ~3 s of training here, long enough to signal it mid-run (at step ~100).
LONG = ["train.epochs=80", "train.batch_size=32", "train.log_every=50",
        "checkpoint.every_steps=1000", "checkpoint.every_seconds=null"]
SHORT = ["train.epochs=3", "train.log_every=10", "checkpoint.every_steps=20"]
FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
            "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
# Pending reasons meaning the job can never start on this cluster: fail at once, not at a timeout
NEVER_STARTS = {"PartitionConfig", "PartitionNodeLimit", "BadConstraints", "ReqNodeNotAvail",
                "PartitionDown", "PartitionInactive", "InvalidAccount", "InvalidQOS"}


def field_of(record: str, key: str) -> str | None:
    """The value of ``key=`` in one line of ``scontrol show job -o``."""
    found = re.search(rf"(?:^|\s){key}=(\S*)", record)
    return found.group(1) if found else None


@dataclass
class Slurm:
    """The running local Slurm: ``env`` has SLURM_CONF and one BLAS thread per rank."""

    env: dict[str, str]
    submitted: list[str] = field(default_factory=list)

    def run(self, argv: list[str], timeout: float = 60, env: dict | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                              env=dict(self.env, **(env or {})))
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def sbatch(self, script: str, args: list[str] = (), options: list[str] = (),
               env: dict | None = None) -> str:
        """Submit ``scripts/slurm/<script>`` from the repository root; returns the job id. The
        submitting environment (with ``env``) reaches the job: sbatch's default --export=ALL."""
        proc = self.run(["sbatch", "--parsable", *options, str(ROOT / "scripts" / "slurm" / script),
                         *args], env=env)
        job_id = proc.stdout.strip().split(";")[0]
        self.submitted.append(job_id)
        return job_id

    def records(self, job_id: str) -> list[str]:
        """``scontrol show job -o`` lines: one per job, or per task of an array."""
        proc = self.run(["scontrol", "show", "job", "-o", job_id], check=False)
        return [line for line in proc.stdout.splitlines() if line.startswith("JobId=")]

    def wait(self, job_id: str, timeout: float, tasks: int = 1) -> list[str]:
        """Poll until ``tasks`` records of the job are finished; returns them. At the timeout
        the job is cancelled and the test fails with its state."""
        deadline = time.monotonic() + timeout
        records: list[str] = []
        while time.monotonic() < deadline:
            records = self.records(job_id)
            states = [field_of(r, "JobState") for r in records]
            if len(records) == tasks and all(s in FINISHED for s in states):
                return records
            if any(field_of(r, "Reason") in NEVER_STARTS for r in records):
                self.run(["scancel", job_id], check=False)
                raise AssertionError(f"job {job_id} can never start here: {records}")
            time.sleep(0.5)
        self.run(["scancel", job_id], check=False)
        raise AssertionError(f"job {job_id} not finished after {timeout} s: {records}")

    def wait_for_file_text(self, path: Path, text: str, count: int, timeout: float,
                           job_id: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists() and path.read_text().count(text) >= count:
                return
            states = [field_of(r, "JobState") for r in self.records(job_id)]
            if states and all(s in FINISHED for s in states):
                raise AssertionError(f"job {job_id} ended ({states}) before {path} showed "
                                     f"{count} x {text!r}")
            time.sleep(0.1)
        raise AssertionError(f"{path} did not show {count} x {text!r} within {timeout} s")


def _script(command: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@contextlib.contextmanager
def _sessions():
    """The live pytest sessions using the local Slurm (a file per pid), under an exclusive lock:
    concurrent `make test` runs share one Slurm and the last one out stops it."""
    directory = PREFIX / "test-sessions"
    directory.mkdir(parents=True, exist_ok=True)
    with open(PREFIX / "test-sessions.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for entry in directory.iterdir():  # sessions that died without cleaning up
            if entry.name.isdigit() and not Path(f"/proc/{entry.name}").exists():
                entry.unlink(missing_ok=True)
        yield directory


@pytest.fixture(scope="session")
def slurm():
    """Start Slurm with scripts/ci/local-slurm.sh (installing it the first time). The tests stop
    it at the end only if they started it (the `started-by-tests` marker) and no other test
    session still uses it; a Slurm someone else started keeps running."""
    marker = PREFIX / "started-by-tests"
    with _sessions() as sessions:
        if _script("status", 30).returncode != 0:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        started = _script("start", 600)
        assert started.returncode == 0, (f"local-slurm.sh start failed:\n{started.stdout}"
                                         f"{started.stderr}")
        (sessions / str(os.getpid())).touch()
    conf = (PREFIX / "env").read_text().strip().removeprefix("export SLURM_CONF=")
    env = dict(os.environ, SLURM_CONF=conf, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHON=sys.executable)
    env.pop("MPIML_FAULT", None)
    cluster = Slurm(env)
    cpus = cluster.run(["sinfo", "-h", "-o", "%c"]).stdout.split()
    assert cpus and int(cpus[0]) >= RANKS, f"the Slurm node has {cpus} CPUs; the tests need {RANKS}"
    yield cluster
    for job_id in cluster.submitted:  # nothing of ours outlives the session
        cluster.run(["scancel", job_id], check=False)
    with _sessions() as sessions:
        (sessions / str(os.getpid())).unlink(missing_ok=True)
        if marker.exists() and not any(sessions.iterdir()):
            _script("stop", 120)
            marker.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slurm-data") / "binary.h5"
    subprocess.run([sys.executable, "-m", "mpiml.data", "synth", "--task", "binary", "--rows",
                    "4000", "--features", "10", "--test-rows", "1000", "--seed", "0", str(path)],
                   check=True, capture_output=True, timeout=120, cwd=ROOT)
    return path


def sets(data_file: Path, out_dir: Path, overrides: list[str]) -> list[str]:
    """Training arguments: --quiet and the --set overrides for this data and output dir."""
    args = ["--quiet"]
    for item in [f"data.train={data_file}", f"data.test={data_file}", f"output.dir={out_dir}",
                 *overrides]:
        args += ["--set", item]
    return args


def records(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def events(out_dir: Path, name: str) -> list[dict]:
    return [r for r in records(out_dir) if r.get("event") == name]


def params(out_dir: Path) -> np.ndarray:
    with h5py.File(out_dir / "model.h5") as model:
        return model["model/params"][()]


def train_job(slurm, tmp: Path, name: str, data_file: Path, overrides: list[str],
              env: dict | None = None, options: list[str] = ()) -> tuple[str, Path, Path]:
    """Submit train.sbatch with the default CONFIG (configs/quickstart.yaml) and the overrides as
    script arguments; returns (job id, output dir, log file)."""
    out_dir, log = tmp / name, tmp / f"{name}.out"
    job_id = slurm.sbatch("train.sbatch", sets(data_file, out_dir, overrides),
                          options=[f"--output={log}", f"--ntasks-per-node={RANKS}", *options],
                          env=env)
    return job_id, out_dir, log


def assert_outputs_where_docs_say(out_dir: Path, steps: int) -> None:
    """docs/slurm.md: output.dir holds config.yaml, metrics.jsonl (ending with `done`), model.h5
    and checkpoints/ckpt-<step>.h5."""
    assert (out_dir / "config.yaml").is_file()
    done = records(out_dir)[-1]
    assert done["event"] == "done" and done["steps"] == steps, done
    assert events(out_dir, "start")[0]["ranks"] == RANKS
    assert params(out_dir).size > 0
    assert (out_dir / "checkpoints" / f"ckpt-{steps:010d}.h5").is_file()


@pytest.fixture(scope="module")
def reference(slurm, data_file, tmp_path_factory):
    """An uninterrupted LONG run under srun on RANKS ranks: (job record, output dir, log)."""
    tmp = tmp_path_factory.mktemp("slurm-reference")
    job_id, out_dir, log = train_job(slurm, tmp, "reference", data_file, LONG)
    (record,) = slurm.wait(job_id, timeout=180)
    return record, out_dir, log


def test_train_sbatch_trains_to_completion_under_srun(reference):
    record, out_dir, log = reference
    assert field_of(record, "JobState") == "COMPLETED", (record, log.read_text())
    assert field_of(record, "ExitCode") == "0:0"
    assert_outputs_where_docs_say(out_dir, steps=80 * 125)
    text = log.read_text()
    assert f"restart 0 on {field_of(record, 'NodeList')}: {RANKS} ranks via srun" in text, text
    assert "training exited with 0" in text


def test_train_sbatch_trains_to_completion_under_mpiexec(slurm, data_file, tmp_path):
    job_id, out_dir, log = train_job(slurm, tmp_path, "mpiexec", data_file, SHORT,
                                     env={"MPIML_LAUNCHER": "mpiexec"})
    (record,) = slurm.wait(job_id, timeout=120)
    assert field_of(record, "JobState") == "COMPLETED", (record, log.read_text())
    assert_outputs_where_docs_say(out_dir, steps=3 * 16)
    assert f"{RANKS} ranks via mpiexec" in log.read_text()


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_warning_signal_checkpoints_requeues_and_resumes_bit_identically(slurm, data_file,
                                                                          tmp_path, reference,
                                                                          launcher):
    job_id, out_dir, log = train_job(slurm, tmp_path, "requeued", data_file, LONG,
                                     env={"MPIML_LAUNCHER": launcher})
    slurm.wait_for_file_text(out_dir / "metrics.jsonl", '"loss"', 2, timeout=60, job_id=job_id)
    # What `#SBATCH --signal=USR1@120` does before the time limit: USR1 to the ranks of the steps
    slurm.run(["scancel", "--signal=USR1", job_id])
    (record,) = slurm.wait(job_id, timeout=180)
    text = log.read_text()
    assert field_of(record, "JobState") == "COMPLETED", (record, text)
    assert field_of(record, "Restarts") == "1", record
    assert "training exited with 75" in text and "requeueing job" in text, text
    assert "restart 0 on" in text and "restart 1 on" in text, text  # SLURM_RESTART_COUNT

    stopped = events(out_dir, "stopped")
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGUSR1", stopped
    resumed = events(out_dir, "resume")
    assert [r["step"] for r in resumed] == [stopped[0]["step"]], resumed
    assert 0 < stopped[0]["step"] < 80 * 125
    assert_outputs_where_docs_say(out_dir, steps=80 * 125)

    _, reference_dir, _ = reference
    got, want = params(out_dir), params(reference_dir)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (
        f"max difference {np.abs(got - want).max():.3g}")


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_the_time_limit_warning_reaches_every_rank_under_both_launchers(slurm, data_file,
                                                                        tmp_path, launcher):
    """The real `--signal=USR1@T` path (not scancel): Slurm's time-limit warning reaches the
    ranks whether srun or mpiexec (hydra, whose proxies srun starts) launched them, and they
    stop with a checkpoint (exit 75; MAX_RESTARTS=0 keeps it from requeueing)."""
    out_dir, log = tmp_path / launcher, tmp_path / f"{launcher}.out"
    endless = ["train.epochs=100000", "train.batch_size=32", "train.log_every=1000",
               "checkpoint.every_steps=null", "checkpoint.every_seconds=null"]
    job_id = slurm.sbatch("train.sbatch", sets(data_file, out_dir, endless),
                          options=[f"--output={log}", f"--ntasks-per-node={RANKS}", "--time=1",
                                   "--signal=USR1@55"],
                          env={"MPIML_LAUNCHER": launcher, "MAX_RESTARTS": "0"})
    (record,) = slurm.wait(job_id, timeout=150)
    text = log.read_text()
    assert field_of(record, "ExitCode") == "75:0", (record, text)
    assert "training exited with 75" in text and "not requeueing" in text, text
    stopped = events(out_dir, "stopped")
    assert len(stopped) == 1 and stopped[0]["signal"] == "SIGUSR1", stopped
    found = out_dir / "checkpoints" / f"ckpt-{stopped[0]['step']:010d}.h5"
    assert found.is_file(), sorted(p.name for p in (out_dir / "checkpoints").iterdir())


def test_the_same_script_submitted_twice_leaves_the_first_job_alone(slurm, data_file, tmp_path):
    """docs/slurm.md: the second of two identical submissions fails at once on the run
    directory's lock, naming the first job, and the first finishes as if alone."""
    options = [f"--output={tmp_path}/twice-%j.out", "--ntasks-per-node=1"]  # both fit at once
    # ~12 s of training: the second job must start (sbatch, scheduling, Python) while the first
    # still runs, also on a loaded machine
    longer = [item if not item.startswith("train.epochs=") else "train.epochs=320"
              for item in LONG]
    overrides = sets(data_file, tmp_path / "twice", longer)
    first = slurm.sbatch("train.sbatch", overrides, options=options)
    slurm.wait_for_file_text(tmp_path / "twice" / "metrics.jsonl", '"loss"', 1, timeout=60,
                             job_id=first)
    second = slurm.sbatch("train.sbatch", overrides, options=options)
    (late,) = slurm.wait(second, timeout=120)
    text = (tmp_path / f"twice-{second}.out").read_text()
    assert field_of(late, "JobState") == "FAILED", (late, text)
    assert f"is in use by another run (Slurm job {first}," in text, text
    (early,) = slurm.wait(first, timeout=240)
    assert field_of(early, "JobState") == "COMPLETED", early
    assert len(events(tmp_path / "twice", "start")) == 1
    assert records(tmp_path / "twice")[-1]["event"] == "done"


def test_crashing_rank_fails_the_job_within_seconds(slurm, data_file, tmp_path):
    fault = "rank=1,step=5,at=before_allreduce,action=raise"
    job_id, out_dir, log = train_job(slurm, tmp_path, "crash", data_file, SHORT,
                                     env={"MPIML_FAULT": fault})
    (record,) = slurm.wait(job_id, timeout=120)
    text = log.read_text()
    assert field_of(record, "JobState") == "FAILED", (record, text)
    assert field_of(record, "ExitCode") != "0:0"
    assert "mpiml: error: rank 1 of 2: InjectedFault: injected fault at before_allreduce of " \
           "step 5 on rank 1" in text, text
    start, end = (time.mktime(time.strptime(field_of(record, key), "%Y-%m-%dT%H:%M:%S"))
                  for key in ("StartTime", "EndTime"))
    assert end - start <= 15, f"the job took {end - start:.0f} s to end"
    assert not (out_dir / "model.h5").exists()


def test_srun_without_mpi_plugin_is_refused_with_the_launch_message(slurm, data_file, tmp_path):
    """`srun --mpi=none` starts N single-rank copies; mpiml.run.launchcheck must stop them."""
    out_dir = tmp_path / "mistake"
    proc = slurm.run(["srun", "--mpi=none", f"--ntasks={RANKS}", "--kill-on-bad-exit=1",
                      sys.executable, "-m", "mpiml.train", "configs/quickstart.yaml",
                      *sets(data_file, out_dir, SHORT)], timeout=120, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert (f"launch mistake: Slurm started {RANKS} tasks (SLURM_STEP_NUM_TASKS={RANKS}) but "
            f"MPI sees 1 rank in each") in output, output
    assert f"srun --mpi=pmi2 -n {RANKS} python -m mpiml.train" in output
    assert not (out_dir / "model.h5").exists()


def test_sweep_array_trains_one_output_directory_per_line(slurm, data_file, tmp_path):
    sweep_file = tmp_path / "sweep.txt"
    sweep_file.write_text("# learning rates\n\noptimizer.lr=0.2\n"
                          "optimizer.lr=0.05 train.batch_size=128\n")
    sweep_dir = tmp_path / "sweep"
    common = " ".join(sets(data_file, tmp_path / "not-used", SHORT))
    array_id = slurm.sbatch("sweep.sbatch", options=[
        "--array=0-1", f"--output={tmp_path}/sweep-%A_%a.out", f"--ntasks-per-node={RANKS}"],
        env={"SWEEP_FILE": str(sweep_file), "SWEEP_DIR": str(sweep_dir), "MPIML_ARGS": common})
    finished = slurm.wait(array_id, timeout=180, tasks=2)
    logs = {p.name: p.read_text() for p in tmp_path.glob("sweep-*.out")}
    assert [field_of(r, "JobState") for r in finished] == ["COMPLETED"] * 2, (finished, logs)
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["0", "1"]
    assert not (tmp_path / "not-used").exists()
    resolved = [yaml.safe_load((sweep_dir / str(i) / "config.yaml").read_text()) for i in (0, 1)]
    assert [c["optimizer"]["lr"] for c in resolved] == [0.2, 0.05]
    assert [c["train"]["batch_size"] for c in resolved] == [256, 128]
    assert [c["output"]["dir"] for c in resolved] == [str(sweep_dir / "0"), str(sweep_dir / "1")]
    for i, steps in ((0, 3 * 16), (1, 3 * 32)):
        done = records(sweep_dir / str(i))[-1]
        assert done["event"] == "done" and done["steps"] == steps, done
        assert list((sweep_dir / str(i) / "checkpoints").glob("ckpt-*.h5"))
    assert not params(sweep_dir / "0").tobytes() == params(sweep_dir / "1").tobytes()


def test_local_slurm_script_is_idempotent(slurm):
    again = _script("start", 120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already running" in again.stdout, again.stdout
