"""The fault matrix: seeded, bounded runs of a real job disturbed at random moments.

Each case starts a 2-4-rank training job (reproducible mode, so any rank count gives the same
bits) and disturbs it once: a SIGKILL or a SIGSTOP of a random rank after a random delay (from
launch to exit: start-up, data loading, any step, a checkpoint write, the final save), or an
injected exception or kill at a random point (``MPIML_FAULT``). Every disturbed job must end (or,
under ULFM with ``fault.mode: shrink``, survive) within 20 s; a job that ended is resumed with
``--resume auto``, on the same or another rank count, and must end with exactly the bits of a
run never disturbed. The seed and the case are in every failure message: rerun with the same
seed to reproduce.
"""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import h5py
import pytest
import yaml
from datasets import make_problem, write_dense
from launch import launcher, needs_openmpi, run_mpi, single_thread_env

SEED = 20261201
BOUND_SECONDS = 20
STEPS = 4 * 13  # 4 epochs of 13 batches
POINTS = {"start": 0, "load": 0, "before_allreduce": None, "after_checkpoint": None,
          "final_save": STEPS}


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    X, y = make_problem("binary", 701, 5, seed=4)
    path = tmp_path_factory.mktemp("matrix") / "binary.h5"
    write_dense(path, X[:601], y[:601], X[601:], y[601:])
    return path


def make_config(directory: Path, data_file, **fault) -> Path:
    raw = {"data": {"train": str(data_file), "test": str(data_file)},
           "model": {"kind": "logistic", "alpha": 0.001},
           "optimizer": {"name": "momentum", "lr": 0.1},
           "train": {"epochs": 4, "batch_size": 50, "log_every": 1000, "reproducible": True},
           "checkpoint": {"every_steps": 5, "every_seconds": None, "keep": 3},
           "fault": {"stall_seconds": 2, **fault},
           "output": {"dir": str(directory / "run")}}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def params_of(cfg: Path) -> bytes:
    with h5py.File(cfg.parent / "run" / "model.h5") as model:
        return model["model/params"][()].tobytes()


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory, data_file) -> bytes:
    cfg = make_config(tmp_path_factory.mktemp("undisturbed"), data_file)
    job = run_mpi(2, ["-m", "mpiml.train", str(cfg), "--quiet"], timeout=120)
    assert job.returncode == 0, job.output
    return params_of(cfg)


def draw_cases(seed: int, count: int) -> list[dict]:
    """``count`` disturbances drawn from ``seed``: signals at random delays and faults at
    random points, alternating."""
    rng = random.Random(seed)
    cases = []
    for index in range(count):
        ranks = rng.choice([2, 3, 4])
        case = {"ranks": ranks, "victim": rng.randrange(ranks),
                "resume_ranks": rng.choice([ranks, rng.choice([2, 3, 4])])}
        kind = ("kill", "stop", "point")[index % 3]
        if kind == "point":
            point = rng.choice(sorted(POINTS))
            step = POINTS[point]
            if step is None:
                step = (rng.randrange(1, STEPS) if point == "before_allreduce"
                        else 5 * rng.randrange(1, STEPS // 5))
            case.update(kind=rng.choice(["raise", "kill"]), point=point, step=step)
        else:
            case.update(kind=kind, delay=round(rng.uniform(0.0, 2.5), 2))
        cases.append(case)
    return cases


CASES = draw_cases(SEED, 9)


def rank_pids(marker: str) -> dict[int, int]:
    """PIDs of a job's ranks by rank (PMI_RANK under MPICH, OMPI_COMM_WORLD_RANK under Open
    MPI), found in /proc by the config path on their command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() not in cmdline or b"mpiml.train" not in cmdline:
            continue
        for item in environ:
            for name in (b"PMI_RANK=", b"OMPI_COMM_WORLD_RANK="):
                if item.startswith(name):
                    found[int(item[len(name):])] = int(entry.name)
    return found


def finished_but_for_the_stopped_victim(cfg: Path, victim: int) -> bool:
    """Whether a job that has not ended waits only for a rank SIGSTOPped after its last
    collective: the run's work is complete ("done" is logged, after which only a watched
    barrier and the process exit remain) and no other rank is left. No program can end a
    launcher's wait for a process stopped on its way out; that is the one allowed hang."""
    pids = rank_pids(str(cfg))
    if set(pids) != {victim}:
        return False
    metrics = cfg.parent / "run" / "metrics.jsonl"
    return metrics.exists() and '"event": "done"' in metrics.read_text()


def disturbed_run(cfg: Path, case: dict, mpi: str = "mpich") -> tuple[int, str, float]:
    """Start the job, disturb it as ``case`` says; (exit code, output, seconds). A job that
    waits only for a victim stopped after finishing counts as exit 0 at the bound."""
    env = single_thread_env(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if case["kind"] in ("raise", "kill") and "point" in case:
        env["MPIML_FAULT"] = (f"rank={case['victim']},step={case['step']},at={case['point']},"
                              f"action={case['kind']}")
    started = time.monotonic()
    proc = subprocess.Popen(launcher(case["ranks"], mpi) + ["-m", "mpiml.train", str(cfg),
                                                            "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        if "delay" in case:
            time.sleep(case["delay"])
            pid = rank_pids(str(cfg)).get(case["victim"])
            if pid is not None:
                os.kill(pid, signal.SIGKILL if case["kind"] == "kill" else signal.SIGSTOP)
        output, _ = proc.communicate(timeout=BOUND_SECONDS)
    except subprocess.TimeoutExpired:
        finished = (case["kind"] == "stop"
                    and finished_but_for_the_stopped_victim(cfg, case["victim"]))
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        return (0, output, 0.0) if finished else (-1, output, time.monotonic() - started)
    finally:
        for pid in rank_pids(str(cfg)).values():  # a stopped rank the abort did not reach
            os.kill(pid, signal.SIGKILL)
    return proc.returncode, output, time.monotonic() - started


@pytest.mark.parametrize("index", range(len(CASES)))
def test_a_disturbed_job_ends_quickly_and_resumes_to_the_same_bits(tmp_path, data_file,
                                                                   undisturbed, index):
    case = CASES[index]
    what = f"seed {SEED}, case {index}: {case}"
    cfg = make_config(tmp_path, data_file)
    code, output, seconds = disturbed_run(cfg, case)
    assert code != -1 and seconds < BOUND_SECONDS, f"{what}: {seconds:.1f} s\n{output}"
    if code != 0:
        resumed = run_mpi(case["resume_ranks"], ["-m", "mpiml.train", str(cfg), "--quiet"],
                          timeout=120)
        assert resumed.returncode == 0, f"{what}: resume failed\n{resumed.output}"
    assert params_of(cfg) == undisturbed, f"{what}: the final bits differ"


ULFM_CASES = [{"ranks": 3, "victim": 1, "kind": "kill", "delay": 1.5, "resume_ranks": 3},
              {"ranks": 3, "victim": 2, "kind": "kill", "point": "load", "step": 0,
               "resume_ranks": 2},
              {"ranks": 3, "victim": 0, "kind": "kill", "point": "final_save", "step": STEPS,
               "resume_ranks": 3}]


@pytest.mark.parametrize("index", range(len(ULFM_CASES)))
def test_under_ulfm_a_death_is_survived_or_ends_the_job(tmp_path, data_file, undisturbed,
                                                        index):
    needs_openmpi("openmpi-ulfm")
    case = ULFM_CASES[index]
    what = f"ULFM case {index}: {case}"
    cfg = make_config(tmp_path, data_file, mode="shrink")
    code, output, seconds = disturbed_run(cfg, case, mpi="openmpi-ulfm")
    assert code != -1 and seconds < BOUND_SECONDS, f"{what}: {seconds:.1f} s\n{output}"
    if code != 0:  # resumed anywhere: the bits do not depend on the MPI library either
        resumed = run_mpi(case["resume_ranks"], ["-m", "mpiml.train", str(cfg), "--quiet"],
                          timeout=120)
        assert resumed.returncode == 0, f"{what}: resume failed\n{resumed.output}"
    assert params_of(cfg) == undisturbed, f"{what}: the final bits differ"
