"""Run integrity: a resume never continues the wrong run, two jobs never share one run
directory, and exit 75 means a checkpoint exists (docs/fault-tolerance.md).

Each test is the regression test of one bug found on the code before the run layer had
lineages, locks and data fingerprints; the bug is quoted in the docstring.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from datasets import make_problem, write_dense
from launch import launcher, needs_openmpi, run_mpi, single_thread_env
from test_fault_tolerance import final_params, make_config, rank_pids, records, train, wait_for

from mpiml.files import checkpoint
from mpiml.run import EXIT_STOPPED
from mpiml.run.exits import EXIT_STOPPED_UNSAVED


@pytest.fixture
def data_file(tmp_path):
    X, y = make_problem("binary", 701, 5, seed=9)
    path = tmp_path / "binary.h5"
    write_dense(path, X[:601], y[:601], X[601:], y[601:])
    return path


def events(cfg: Path, name: str) -> list[dict]:
    return [r for r in records(cfg) if r.get("event") == name]


def checkpoints_dir(cfg: Path) -> Path:
    return Path(yaml.safe_load(cfg.read_text())["output"]["dir"]) / "checkpoints"


def test_resuming_an_older_checkpoint_branches_and_auto_never_returns_to_the_old_run(
        tmp_path, data_file):
    """Bug 1: resuming from an older checkpoint left the abandoned run's newer checkpoints in
    place; retention deleted the new run's and a later --resume auto continued the old one."""
    cfg = make_config(tmp_path / "a", data_file)
    assert train(cfg, fault="rank=1,step=23,at=before_allreduce,action=kill").returncode != 0
    older = checkpoints_dir(cfg) / checkpoint.file_name(10)
    assert older.exists()
    branch = ["--resume", str(older), "--set", "optimizer.lr=0.05"]
    # the reference: the branch, never interrupted, in a directory of its own
    ref = make_config(tmp_path / "ref", data_file)
    assert train(ref, fault="rank=1,step=23,at=before_allreduce,action=kill").returncode != 0
    done = train(ref, extra=["--resume", str(checkpoints_dir(ref) / checkpoint.file_name(10)),
                             "--set", "optimizer.lr=0.05"])
    assert done.returncode == 0, done.output
    # the branch, killed after its own step 15, then resumed with auto
    killed = train(cfg, extra=branch, fault="rank=2,step=17,at=before_allreduce,action=kill")
    assert killed.returncode != 0
    moved = events(cfg, "checkpoints_set_aside")
    assert moved and {p.name for p in Path(moved[-1]["to"]).glob("ckpt-*.h5")} == {
        checkpoint.file_name(15), checkpoint.file_name(20)}
    resumed = train(cfg, extra=["--set", "optimizer.lr=0.05"])
    assert resumed.returncode == 0, resumed.output
    assert events(cfg, "resume")[-1]["step"] == 15
    assert final_params(cfg).tobytes() == final_params(ref).tobytes()


def test_a_larger_epoch_count_continues_a_finished_run_and_the_same_one_does_nothing(
        tmp_path, data_file):
    """Bug 2: raising train.epochs after a finished run did nothing ("done steps=7" twice)."""
    cfg = make_config(tmp_path / "run4", data_file)
    assert train(cfg).returncode == 0
    assert events(cfg, "done")[-1]["steps"] == 4 * 13
    run_dir = cfg.parent / "run"
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    again = train(cfg)
    assert again.returncode == 0 and "already finished at step 52" in again.output, again.output
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before
    longer = train(cfg, extra=["--set", "train.epochs=6"])
    assert longer.returncode == 0, longer.output
    assert events(cfg, "done")[-1]["steps"] == 6 * 13
    fresh = make_config(tmp_path / "run6", data_file, train={"epochs": 6})
    assert train(fresh).returncode == 0
    assert final_params(cfg).tobytes() == final_params(fresh).tobytes()


def test_a_larger_max_iter_continues_an_estimator_fit(tmp_path):
    """Bug 2 (estimators): a larger max_iter with the same checkpoint_dir did nothing."""
    from mpiml.estimators import LogisticRegression

    X, y = make_problem("binary", 300, 4, seed=1)
    options = dict(solver="sgd", batch_size=32, n_iter_no_change=None)
    first = LogisticRegression(max_iter=3, checkpoint_dir=tmp_path / "c", **options).fit(X, y)
    assert first.n_iter_ == 3
    longer = LogisticRegression(max_iter=6, checkpoint_dir=tmp_path / "c", **options).fit(X, y)
    fresh = LogisticRegression(max_iter=6, **options).fit(X, y)
    assert longer.n_iter_ == 6
    assert longer.coef_.tobytes() == fresh.coef_.tobytes()


@pytest.mark.parametrize(("rows_before", "rows_after"), [(200, 600), (600, 200)])
def test_a_replaced_data_file_is_refused_on_resume(tmp_path, rows_before, rows_after):
    """Bug 3: a data file replaced under the same path resumed silently (200 -> 600 rows), or
    ended in a traceback (600 -> 200: IndexError: batch 14 is outside 0..6)."""
    path = tmp_path / "data.h5"
    X, y = make_problem("binary", rows_before, 5, seed=2)
    write_dense(path, X, y)
    cfg = make_config(tmp_path, path, data={"test": None})
    assert train(cfg, fault="rank=1,step=7,at=before_allreduce,action=kill").returncode != 0
    X, y = make_problem("binary", rows_after, 5, seed=3)
    write_dense(path, X, y)
    refused = train(cfg)
    assert refused.returncode == 1 and not refused.timed_out
    assert f"data rows: {rows_before} -> {rows_after}" in refused.output, refused.output
    assert "Traceback" not in refused.output and refused.output.count("mpiml: error:") == 1
    allowed = train(cfg, extra=["--set", "checkpoint.allow_data_change=true"])
    assert allowed.returncode == 0, allowed.output
    assert events(cfg, "data_changed") and events(cfg, "resume")[-1]["step"] == 5


def start_job(cfg: Path, extra=(), program=("-m", "mpiml.train")):
    env = single_thread_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return subprocess.Popen(launcher(3) + [*program, str(cfg), "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def stop_job(proc) -> str:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.communicate()[0]


def test_a_second_job_in_the_same_run_directory_fails_before_touching_anything(tmp_path,
                                                                              data_file):
    """Bug 4: job B started 3 s after job A on the same output.dir (--resume never) moved A's
    live checkpoints aside, then both kept writing into one directory."""
    cfg = make_config(tmp_path, data_file, train={"epochs": 100000, "log_every": 10})
    first = start_job(cfg)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        wait_for(lambda: metrics.exists() and metrics.read_text().count('"checkpoint"') >= 2,
                 60, "the first job's checkpoints")
        run_dir = tmp_path / "run"
        before = [(run_dir / name).read_bytes() for name in ("config.yaml",
                                                              "checkpoints/lineage.json")]
        started = time.monotonic()
        second = run_mpi(3, ["-m", "mpiml.train", str(cfg), "--quiet", "--resume", "never"],
                         timeout=60)
        assert second.returncode == 1 and time.monotonic() - started < 20, second.output
        holder = rank_pids(str(cfg))[0]  # rank 0 of the first job holds the lock
        assert "is in use by another run" in second.output and f"pid {holder} on" in (
            second.output), second.output
        assert second.output.count("mpiml: error:") == 1, second.output
        assert not list(run_dir.rglob("replaced-*")), "the second job moved checkpoints aside"
        assert before == [(run_dir / name).read_bytes() for name in ("config.yaml",
                                                                      "checkpoints/lineage.json")]
        first.send_signal(signal.SIGTERM)
        output, _ = first.communicate(timeout=30)
        assert first.returncode == EXIT_STOPPED, output
    finally:
        stop_job(first)
    assert len(events(cfg, "start")) == 1
    assert not (tmp_path / "run" / ".mpiml.lock").exists()


def test_a_lock_left_by_a_killed_job_is_taken_over(tmp_path, data_file):
    """Bug 4, the other half: a job killed with SIGKILL leaves its lock; the next job on this
    host sees its holder is gone, says so, and runs."""
    cfg = make_config(tmp_path, data_file)
    assert train(cfg, fault="rank=0,step=12,at=before_allreduce,action=kill").returncode != 0
    assert (tmp_path / "run" / ".mpiml.lock").exists()
    resumed = train(cfg)
    assert resumed.returncode == 0, resumed.output
    assert "that process is gone" in events(cfg, "lock_taken_over")[0]["note"]


def test_a_stop_without_checkpoints_exits_with_its_own_code(tmp_path, data_file):
    """Bug 5: checkpoint.enabled false + SIGTERM exited 75 (stopped after checkpoint) with no
    checkpoint written, so train.sbatch requeued and restarted from zero up to 50 times."""
    cfg = make_config(tmp_path, data_file, train={"epochs": 100000, "log_every": 10},
                      checkpoint={"enabled": False})
    proc = start_job(cfg)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        wait_for(lambda: metrics.exists() and metrics.read_text().count('"loss"') >= 3, 60,
                 "training to start")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        stop_job(proc)
    assert proc.returncode == EXIT_STOPPED_UNSAVED, output
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert events(cfg, "stopped")[0]["checkpoint"] is None


def test_the_watchdog_stays_on_when_shrink_falls_back_to_restart(tmp_path, data_file):
    """Bug 6: fault.mode shrink without ULFM fell back to restart but turned the stall watchdog
    off: a hung rank hung the job until the stop grace (2 min 20 s) instead of 3.6 s."""
    cfg = make_config(tmp_path, data_file, fault={"mode": "shrink", "stall_seconds": 2})
    job = train(cfg, fault="rank=1,step=9,at=before_allreduce,action=hang", timeout=60)
    assert not job.timed_out and job.returncode != 0 and job.seconds < 20, job.output
    assert "late ranks: [1]" in job.output, job.output
    assert events(cfg, "shrink_unavailable")


def test_a_rank_frozen_while_finishing_ends_the_job(tmp_path, data_file):
    """Found by the fault matrix: rank 0 SIGSTOPped after logging "done" left the other ranks
    waiting in MPI_Finalize (MPICH waits for every rank there) and the job never ended."""
    cfg = make_config(tmp_path, data_file, fault={"stall_seconds": 2})
    job = train(cfg, fault="rank=0,step=52,at=finish,action=stop", timeout=60)
    assert not job.timed_out and job.returncode != 0 and job.seconds < 20, job.output
    assert events(cfg, "done")
    again = train(cfg)
    assert again.returncode == 0 and "already finished" in again.output, again.output


def test_set_asides_in_the_same_second_never_collide(tmp_path):
    """Bug 8: two set-asides in the same second shared replaced-<second>/ and the second
    overwrote the first run's checkpoint."""
    from mpiml.files.checkpoint import Checkpoint

    kept = []
    for value in (1.0, 2.0):
        checkpoint.save(tmp_path, Checkpoint(5, {"params": np.full(3, value)}))
        kept.append(checkpoint.set_aside(tmp_path))
    assert kept[0] != kept[1]
    values = sorted(float(checkpoint.load(d / checkpoint.file_name(5)).arrays["params"][0])
                    for d in kept)
    assert values == [1.0, 2.0]


@pytest.mark.parametrize("writer", ["checkpoint", "model", "estimator", "prediction", "data"])
def test_every_writer_fsyncs_the_closed_file_then_the_directory(tmp_path, monkeypatch, writer):
    """Bug 9: fsync happened before the HDF5 file was closed (HDF5 rewrites its superblock on
    close), and model files and estimator files never fsynced their directory."""
    import mpiml.files.atomic as atomic

    synced = []
    real = atomic.fsync_path

    def recording(path):
        path = Path(path)
        if path.is_file():
            with h5py.File(path, "r"):  # would fail on a file another handle has open for write
                pass
        synced.append(path)
        real(path)

    monkeypatch.setattr(atomic, "fsync_path", recording)
    target = write_with(writer, tmp_path)
    assert any(p.is_dir() and p.resolve() == target.parent.resolve() for p in synced), synced
    assert [p for p in synced if p.name.startswith(f".{target.name}.tmp-")], synced
    assert sorted(p.name for p in target.parent.iterdir() if p.name.startswith(".")) == []


def write_with(writer: str, directory: Path) -> Path:
    """Write one file the way ``writer`` does; returns its path."""
    if writer == "checkpoint":
        from mpiml.files.checkpoint import Checkpoint

        return checkpoint.save(directory, Checkpoint(3, {"params": np.zeros(2)}))
    if writer == "data":
        from mpiml.data.tools import synth

        synth(directory / "d.h5", "binary", 50, 3, seed=0)
        return directory / "d.h5"
    from mpi4py import MPI

    import mpiml.estimators as E

    X, y = make_problem("binary", 60, 3, seed=0)
    model = E.LogisticRegression(comm=MPI.COMM_SELF).fit(X, y)
    if writer == "estimator":
        model.save(directory / "e.h5")
        return directory / "e.h5"
    from mpiml.files.model import save_model

    save_model(directory / "m.h5", model.model_)
    if writer == "model":
        return directory / "m.h5"
    from mpiml.cli.predict import predict

    write_dense(directory / "x.h5", X, y)
    predict(directory / "m.h5", directory / "x.h5", directory / "p.h5", comm=MPI.COMM_SELF)
    return directory / "p.h5"


def test_temporaries_of_dead_writers_are_removed_at_start(tmp_path, data_file):
    """Bug 9, the last part: killed writes left .ckpt-*.tmp-PID files forever."""
    cfg = make_config(tmp_path, data_file)
    assert train(cfg, fault="rank=0,step=10,at=during_checkpoint,action=kill").returncode != 0
    leftovers = list((tmp_path / "run" / "checkpoints").glob(".ckpt-*.tmp-*"))
    assert leftovers, "the killed write should leave its temporary file"
    assert train(cfg).returncode == 0
    assert not list((tmp_path / "run" / "checkpoints").glob(".ckpt-*.tmp-*"))
    removed = events(cfg, "stale_temporaries_removed")
    assert removed and {Path(p).name for p in removed[0]["files"]} == {p.name for p in leftovers}


@pytest.mark.parametrize("program", ["console script", "python -m", "python -m mpiml train"])
def test_the_console_script_keeps_the_stop_protocol(tmp_path, data_file, program):
    """Bug 10: the mpiml-train console script ignored the stop protocol: SIGTERM gave exit 143
    and no checkpoint, while python -m mpiml.train gave 75 and a checkpoint."""
    command = {"console script": (str(Path(sys.executable).parent / "mpiml-train"),),
               "python -m": ("-m", "mpiml.train"),
               "python -m mpiml train": ("-m", "mpiml", "train")}[program]
    cfg = make_config(tmp_path, data_file, train={"epochs": 100000, "log_every": 10},
                      checkpoint={"every_steps": None})
    env_launcher = launcher(3)
    if program == "console script":
        env_launcher = env_launcher[:-1]  # mpiexec -n 3 mpiml-train ...
    env = single_thread_env()
    proc = subprocess.Popen(env_launcher + [*command, str(cfg), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        wait_for(lambda: metrics.exists() and metrics.read_text().count('"loss"') >= 3, 60,
                 "training to start")
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    finally:
        stop_job(proc)
    assert proc.returncode == EXIT_STOPPED, output
    found, _, _ = checkpoint.latest_valid(tmp_path / "run" / "checkpoints")
    assert found is not None and found.step == events(cfg, "stopped")[0]["step"]


def test_a_rank_lost_during_start_up_under_ulfm_ends_the_job(tmp_path, data_file):
    """Bug 11: fault.mode shrink under mpirun --with-ft ulfm, one rank SIGKILLed during
    start-up (before output.dir exists): the two survivors blocked forever."""
    needs_openmpi("openmpi-ulfm")
    cfg = make_config(tmp_path, data_file, fault={"mode": "shrink", "stall_seconds": 3})
    env = single_thread_env(MPIML_FAULT="rank=1,step=0,at=start,action=kill")
    job = run_mpi(3, ["-m", "mpiml.train", str(cfg), "--quiet"], timeout=120,
                  mpi="openmpi-ulfm", env=env)
    assert not job.timed_out and job.returncode != 0 and job.seconds < 30, job.output
    assert not (tmp_path / "run" / "model.h5").exists()
    assert train(cfg).returncode == 0


def test_stall_seconds_must_be_positive():
    """Bug 7: fault.stall_seconds: 0 was accepted and aborted a healthy job at step 113."""
    from mpiml import config

    for value in (0, -1):
        with pytest.raises(config.ConfigError, match="fault.stall_seconds must be greater than 0"):
            config.from_dict({"fault": {"stall_seconds": value}})
    assert config.from_dict({"fault": {"stall_seconds": None}}).fault.stall_seconds is None


def test_the_stop_record_names_the_signal_any_rank_received(tmp_path, data_file):
    """Bug 12, the part outside Slurm: the stop record logged "signal": "" when only a non-root
    rank got the signal."""
    cfg = make_config(tmp_path, data_file, train={"epochs": 100000, "log_every": 10})
    proc = start_job(cfg)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        wait_for(lambda: metrics.exists() and metrics.read_text().count('"loss"') >= 3, 60,
                 "training to start")
        pids = rank_pids(str(cfg))
        os.kill(pids[2], signal.SIGUSR1)
        output, _ = proc.communicate(timeout=30)
    finally:
        stop_job(proc)
    assert proc.returncode == EXIT_STOPPED, output
    assert events(cfg, "stopped")[0]["signal"] == "SIGUSR1"
