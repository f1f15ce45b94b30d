"""Checkpoints, resume, signals and guards, with real jobs under mpiexec (docs/fault-tolerance.md).

The central property: a job killed at any step (also in the middle of writing a checkpoint) and
resumed with --resume auto ends with parameters bit-identical to a job never interrupted.
"""

import json
import os
import signal
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from datasets import make_problem, write_dense
from launch import launcher, run, run_mpi, single_thread_env

from mpiml.files import checkpoint
from mpiml.run import EXIT_STOPPED

RANKS = 3


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    X, y = make_problem("binary", 701, 5, seed=9)
    path = tmp_path_factory.mktemp("data") / "binary.h5"
    write_dense(path, X[:601], y[:601], X[601:], y[601:])
    return path


def make_config(directory: Path, data_file, **sections) -> Path:
    raw = {"data": {"train": str(data_file), "test": str(data_file)},
           "model": {"kind": "logistic", "alpha": 0.001},
           "optimizer": {"name": "momentum", "lr": 0.1},
           "train": {"epochs": 4, "batch_size": 50, "log_every": 1000},
           "checkpoint": {"every_steps": 5, "every_seconds": None, "keep": 3},
           "output": {"dir": str(directory / "run")}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def train(cfg: Path, nprocs=RANKS, fault: str | None = None, extra=(), timeout=120):
    env = single_thread_env()
    if fault:
        env["MPIML_FAULT"] = fault
    return run_mpi(nprocs, ["-m", "mpiml.train", str(cfg), "--quiet", *extra], timeout=timeout,
                   env=env)


def final_params(cfg: Path) -> np.ndarray:
    run_dir = Path(yaml.safe_load(cfg.read_text())["output"]["dir"])
    with h5py.File(run_dir / "model.h5") as model:
        return model["model/params"][()]


def records(cfg: Path) -> list[dict]:
    run_dir = Path(yaml.safe_load(cfg.read_text())["output"]["dir"])
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


_reference_cache: dict = {}


def reference(tmp_path_factory, data_file, **sections) -> np.ndarray:
    """Parameters of the uninterrupted run with these settings (computed once)."""
    key = json.dumps(sections, sort_keys=True)
    if key not in _reference_cache:
        cfg = make_config(tmp_path_factory.mktemp("reference"), data_file, **sections)
        job = train(cfg)
        assert job.returncode == 0, job.output
        _reference_cache[key] = final_params(cfg)
    return _reference_cache[key]


def kill_then_resume(tmp_path, data_file, fault, expect_resume=True, **sections) -> np.ndarray:
    cfg = make_config(tmp_path, data_file, **sections)
    crashed = train(cfg, fault=fault)
    assert crashed.returncode != 0 and not crashed.timed_out, crashed.output
    assert not (tmp_path / "run" / "model.h5").exists()
    resumed = train(cfg)
    assert resumed.returncode == 0, resumed.output
    resumed_from = [r["step"] for r in records(cfg) if r.get("event") == "resume"]
    assert bool(resumed_from) == expect_resume, resumed_from
    return final_params(cfg)


def assert_bit_identical(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (
        f"max difference {np.abs(got - want).max():.3g}")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adagrad"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_killed_and_resumed_run_is_bit_identical(tmp_path, tmp_path_factory, data_file,
                                                  optimizer, dtype):
    sections = dict(optimizer={"name": optimizer, "lr": 0.05}, data={"dtype": dtype})
    want = reference(tmp_path_factory, data_file, **sections)
    got = kill_then_resume(tmp_path, data_file, "rank=1,step=23,at=before_allreduce,action=kill",
                           **sections)
    assert_bit_identical(got, want)


@pytest.mark.parametrize("fault", [
    "rank=0,step=2,at=before_allreduce,action=kill",     # before the first checkpoint
    "rank=2,step=11,at=before_allreduce,action=kill",
    "rank=0,step=35,at=during_checkpoint,action=kill",   # rank 0 dies half-way through a write
    "rank=0,step=20,at=after_checkpoint,action=kill",
    "rank=1,step=30,at=before_allreduce,action=raise",
])
def test_kill_at_any_point_resumes_bit_identically(tmp_path, tmp_path_factory, data_file, fault):
    want = reference(tmp_path_factory, data_file)
    got = kill_then_resume(tmp_path, data_file, fault, expect_resume="step=2," not in fault)
    assert_bit_identical(got, want)


@pytest.mark.parametrize("mode", ["overlap", "local_sgd"])
def test_overlap_and_local_sgd_also_resume_bit_identically(tmp_path, tmp_path_factory, data_file,
                                                            mode):
    sections = dict(comm={"mode": mode, "local_steps": 5})
    want = reference(tmp_path_factory, data_file, **sections)
    got = kill_then_resume(tmp_path, data_file, "rank=1,step=27,at=before_allreduce,action=kill",
                           **sections)
    assert_bit_identical(got, want)


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_damaged_newest_checkpoint_is_reported_and_the_previous_one_used(tmp_path, data_file,
                                                                         damage):
    cfg = make_config(tmp_path, data_file)
    crashed = train(cfg, fault="rank=1,step=23,at=before_allreduce,action=kill")
    assert crashed.returncode != 0
    files = checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in files][-1] == "ckpt-0000000020.h5"
    newest = files[-1]
    raw = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(raw[: len(raw) // 3])
    else:
        params = checkpoint.load(files[-1]).arrays["params"].tobytes()
        offset = raw.find(params[:16])
        newest.write_bytes(raw[:offset] + bytes(b ^ 0x55 for b in raw[offset:offset + 8])
                           + raw[offset + 8:])
    resumed = train(cfg)
    assert resumed.returncode == 0, resumed.output
    log = records(cfg)
    skipped = [r for r in log if r.get("event") == "checkpoint_skipped"]
    assert skipped and newest.name in skipped[0]["reason"]
    assert [r["step"] for r in log if r.get("event") == "resume"] == [15]


def test_resume_on_a_different_number_of_ranks_continues_the_same_batches(tmp_path,
                                                                          tmp_path_factory,
                                                                          data_file):
    want = reference(tmp_path_factory, data_file)
    cfg = make_config(tmp_path, data_file)
    assert train(cfg, nprocs=2, fault="rank=1,step=23,at=before_allreduce,action=kill"
                 ).returncode != 0
    resumed = train(cfg, nprocs=3)
    assert resumed.returncode == 0, resumed.output
    done = records(cfg)[-1]
    assert done["event"] == "done" and done["steps"] == 4 * 13
    np.testing.assert_allclose(final_params(cfg), want, rtol=1e-9, atol=1e-12)


def test_incompatible_resume_is_refused_with_the_differences(tmp_path, data_file):
    cfg = make_config(tmp_path, data_file)
    assert train(cfg, fault="rank=0,step=12,at=before_allreduce,action=kill").returncode != 0
    job = train(cfg, extra=["--set", "train.batch_size=10", "--set", "optimizer.name=adam"])
    assert job.returncode == 1
    assert "train.batch_size: 50 -> 10" in job.output and "optimizer.name: 'momentum'" in (
        job.output), job.output
    fresh = train(cfg, extra=["--resume", "never", "--set", "train.batch_size=10"])
    assert fresh.returncode == 0, fresh.output
    moved = [r for r in records(cfg) if r.get("event") == "checkpoints_set_aside"]
    assert len(moved) == 1 and list(Path(moved[0]["to"]).glob("ckpt-*.h5"))
    again = train(cfg, extra=["--set", "train.batch_size=10"])  # auto resumes the new run
    assert again.returncode == 0, again.output


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_job(cfg: Path, extra=()):
    import subprocess

    env = single_thread_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return subprocess.Popen(launcher(RANKS) + ["-m", "mpiml.train", str(cfg), "--quiet",
                                               *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def rank_pids(marker: str) -> dict[int, int]:
    """PIDs of this test's ranks by rank, read from /proc (PMI_RANK in each environment)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmdline and b"mpiml.train" in cmdline:
            for item in environ:
                if item.startswith(b"PMI_RANK="):
                    found[int(item.split(b"=")[1])] = int(entry.name)
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_to_the_launcher_checkpoints_and_exits_with_the_reserved_code(
        tmp_path, tmp_path_factory, data_file, signum):
    cfg = make_config(tmp_path, data_file, train={"epochs": 100000, "log_every": 10},
                      checkpoint={"every_steps": None})
    proc = start_job(cfg)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        wait_for(lambda: metrics.exists() and metrics.read_text().count('"loss"') >= 3, 60,
                 "training to start")
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_STOPPED, output
    log = records(cfg)
    stopped = [r for r in log if r.get("event") == "stopped"]
    assert stopped and stopped[0]["signal"] == signal.Signals(signum).name
    found, _, skipped = checkpoint.latest_valid(tmp_path / "run" / "checkpoints")
    assert found is not None and not skipped and found.step == stopped[0]["step"]


def test_stopped_rank_is_detected_by_the_watchdog(tmp_path, data_file):
    cfg = make_config(tmp_path, data_file, train={"epochs": 100000, "log_every": 10},
                      fault={"stall_seconds": 3})
    proc = start_job(cfg)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        wait_for(lambda: metrics.exists() and metrics.read_text().count('"loss"') >= 3, 60,
                 "training to start")
        pids = rank_pids(str(cfg))
        assert sorted(pids) == [0, 1, 2], pids
        stopped_at = time.monotonic()
        os.kill(pids[2], signal.SIGSTOP)
        output, _ = proc.communicate(timeout=30)
        elapsed = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0, output
    assert elapsed < 3 * 1.25 + 20, f"took {elapsed:.1f} s:\n{output}"
    assert "stall watchdog" in output and "late ranks: [2]" in output, output


def late_ranks_named(heard: dict, seconds: float = 3.0) -> str:
    """What rank 0's watchdog says of ``heard`` = {rank: (step, waiting, seconds ago)}."""
    from mpiml.run.watchdog import StallWatchdog
    watchdog = StallWatchdog.__new__(StallWatchdog)  # no thread, no MPI: the naming rule only
    watchdog.seconds, now = seconds, 100.0
    watchdog._heard = {rank: (step, waiting, now - ago) for rank, (step, waiting, ago)
                       in heard.items()}
    return watchdog._late_ranks(now)


def test_a_stopped_rank_is_named_even_when_its_stale_report_says_waiting():
    """CI saw 'late ranks: [0, 1, 2]': rank 2, stopped, last reported step 18 inside a
    collective; ranks 0 and 1 waited in a reduction not marked as one (the epoch's evaluation).
    The silent rank's stale 'waiting' made the others look late."""
    said = late_ranks_named({0: (30, False, 0.0), 1: (30, False, 0.2), 2: (18, True, 3.4)})
    assert said.startswith("late ranks: [2] "), said


def test_a_rank_computing_while_the_others_wait_is_named():
    said = late_ranks_named({0: (9, True, 0.0), 1: (9, False, 0.1), 2: (9, True, 0.1)})
    assert said.startswith("late ranks: [1] "), said
    said = late_ranks_named({0: (9, True, 0.0), 1: (9, True, 0.1), 2: (9, True, 0.1)})
    assert said.startswith("every rank is alive and waiting"), said


def test_hanging_rank_is_named_by_the_watchdog(tmp_path, data_file):
    cfg = make_config(tmp_path, data_file, fault={"stall_seconds": 2})
    job = train(cfg, fault="rank=1,step=9,at=before_allreduce,action=hang", timeout=60)
    assert not job.timed_out and job.returncode != 0, job.output
    assert "late ranks: [1]" in job.output, job.output


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path,
                                                                               data_file):
    cfg = make_config(tmp_path, data_file)
    job = train(cfg, fault="rank=2,step=12,at=before_allreduce,action=nan")
    assert job.returncode == 1
    assert "non-finite gradient at step 12" in job.output
    assert job.output.count("mpiml: error:") == 1, job.output
    found, _, _ = checkpoint.latest_valid(tmp_path / "run" / "checkpoints")
    assert found.step == 10 and np.isfinite(found.arrays["params"]).all()


def test_diverged_replica_is_named(tmp_path, data_file):
    cfg = make_config(tmp_path, data_file, fault={"check_every": 5})
    job = train(cfg, fault="rank=2,step=7,at=before_allreduce,action=diverge")
    assert job.returncode == 1
    assert "parameters differ across ranks at step 10: ranks [2] differ" in job.output, job.output


def test_bad_fault_specification_is_a_clear_error(tmp_path, data_file):
    cfg = make_config(tmp_path, data_file)
    job = train(cfg, fault="rank=1,step=3,at=sometime,action=kill")
    assert job.returncode == 1 and "MPIML_FAULT: at='sometime'" in job.output, job.output


def test_finished_run_is_not_trained_again(tmp_path, data_file):
    cfg = make_config(tmp_path, data_file)
    assert train(cfg).returncode == 0
    first = final_params(cfg)
    again = train(cfg)
    assert again.returncode == 0, again.output
    assert_bit_identical(final_params(cfg), first)
    assert "already finished at step 52" in again.output, again.output
    assert not [r for r in records(cfg) if r.get("event") == "resume"]  # it wrote nothing


def test_every_seconds_checkpoints_are_agreed_by_all_ranks(tmp_path, data_file):
    cfg = make_config(tmp_path, data_file, checkpoint={"every_steps": None, "every_seconds": 0})
    assert train(cfg).returncode == 0
    steps = [r["step"] for r in records(cfg) if r.get("event") == "checkpoint"]
    assert steps == list(range(1, 53)), steps


def test_print_of_run_is_single(tmp_path, data_file):
    cfg = make_config(tmp_path, data_file)
    job = run(launcher(2) + ["-m", "mpiml.train", str(cfg)], timeout=120)
    assert job.returncode == 0 and job.output.count("event=done") == 1


def test_signal_while_ranks_are_blocked_in_mpi_ends_the_job_within_the_grace_period(tmp_path,
                                                                                    data_file):
    """Rank 1 hangs before its allreduce, so ranks 0 and 2 sit inside MPI where no Python
    handler could run; the listener thread still receives SIGTERM and, when the job cannot stop
    cleanly, exits after fault.stop_grace_seconds."""
    cfg = make_config(tmp_path, data_file, fault={"stop_grace_seconds": 2, "stall_seconds": None})
    env_fault = "rank=1,step=30,at=before_allreduce,action=hang"
    import subprocess

    env = single_thread_env(MPIML_FAULT=env_fault)
    proc = subprocess.Popen(launcher(RANKS) + ["-m", "mpiml.train", str(cfg), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        time.sleep(4)  # the job reaches step 30 within a second and then blocks
        assert proc.poll() is None, proc.communicate()[0]
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        elapsed = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0 and elapsed < 2 + 8, (proc.returncode, elapsed, output)
    assert "did not stop within 2 s" in output, output


@pytest.fixture(scope="module")
def blobs_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("blobs") / "blobs.h5"
    job = run([sys.executable, "-m", "mpiml.data", "synth", "--task", "blobs", "--classes", "6",
               "--rows", "3001", "--features", "4", "--noise", "3", "--seed", "4", str(path)],
              timeout=60)
    assert job.returncode == 0, job.output
    return path


@pytest.mark.parametrize(("kind", "sections"), [
    ("kmeans", {"kmeans": {"n_clusters": 6, "max_iter": 30, "tol": 0.0}}),
    ("kmeans", {"kmeans": {"n_clusters": 6, "max_iter": 4, "tol": 0.0, "batch_size": 200}}),
    ("hgbt_classifier", {"hgbt": {"n_estimators": 12, "max_depth": 3}}),
])
def test_kmeans_and_trees_resume_bit_identically(tmp_path, blobs_file, data_file, kind,
                                                 sections):
    source = blobs_file if kind == "kmeans" else data_file
    common = dict(model={"kind": kind}, checkpoint={"every_steps": 2, "every_seconds": None},
                  **sections)
    if kind == "kmeans":
        common["data"] = {"test": None}
    reference_cfg = make_config(tmp_path / "reference", source, **common)
    assert train(reference_cfg).returncode == 0
    cfg = make_config(tmp_path / "resumed", source, **common)
    crashed = train(cfg, fault="rank=1,step=5,at=before_allreduce,action=kill")
    assert crashed.returncode != 0
    resumed = train(cfg)
    assert resumed.returncode == 0, resumed.output
    assert [r["step"] for r in records(cfg) if r.get("event") == "resume"] == [4]
    with h5py.File(reference_cfg.parent / "run" / "model.h5") as want, \
            h5py.File(cfg.parent / "run" / "model.h5") as got:
        assert sorted(want["model"]) == sorted(got["model"])
        for name in want["model"]:
            assert want["model"][name][()].tobytes() == got["model"][name][()].tobytes(), name


def test_reproducible_run_resumed_on_fewer_ranks_is_bit_identical(tmp_path, data_file):
    """Reproducible mode: 4 ranks killed mid-run and resumed on 2 ranks end with exactly the
    parameters of the uninterrupted 4-rank run (and of a 3-rank run)."""
    sections = dict(train={"reproducible": True, "block_rows": 10, "epochs": 3})
    reference_cfg = make_config(tmp_path / "four", data_file, **sections)
    assert train(reference_cfg, nprocs=4).returncode == 0
    three_cfg = make_config(tmp_path / "three", data_file, **sections)
    assert train(three_cfg, nprocs=3).returncode == 0
    cfg = make_config(tmp_path / "resumed", data_file, **sections)
    assert train(cfg, nprocs=4, fault="rank=3,step=17,at=before_allreduce,action=kill"
                 ).returncode != 0
    resumed = train(cfg, nprocs=2)
    assert resumed.returncode == 0, resumed.output
    assert [r["step"] for r in records(cfg) if r.get("event") == "resume"] == [15]
    assert_bit_identical(final_params(cfg), final_params(reference_cfg))
    assert_bit_identical(final_params(three_cfg), final_params(reference_cfg))
