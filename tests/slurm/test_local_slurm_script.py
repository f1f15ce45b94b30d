"""scripts/ci/local-slurm.sh after a start killed halfway: status answers at once, and the next
start cleans up what the killed one left and brings Slurm up. A Slurm of its own (prefix and
ports), so that it never touches the one tests/slurm/test_slurm.py uses."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ci" / "local-slurm.sh"


def _daemons(conf: Path) -> list[int]:
    """slurmctld/slurmd processes started with SLURM_CONF=conf."""
    found = []
    for name in ("slurmctld", "slurmd"):
        pids = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout
        for pid in map(int, pids.split()):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"SLURM_CONF={conf}".encode() in environ:
                found.append(pid)
    return found


def test_a_start_killed_halfway_never_makes_the_next_status_or_start_wait(tmp_path):
    prefix = tmp_path / "slurm"
    conf = prefix / "slurm.conf"
    env = dict(os.environ, MPIML_SLURM_PREFIX=str(prefix), MPIML_SLURM_CTLD_PORT="6837",
               MPIML_SLURM_SLURMD_PORT="6838")

    def script(command: str, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
        began = time.monotonic()
        proc = subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=ROOT)
        return proc, time.monotonic() - began

    try:
        start = subprocess.Popen(["bash", str(SCRIPT), "start"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=env, cwd=ROOT,
                                 start_new_session=True)
        deadline = time.monotonic() + 60
        while not (prefix / "run" / "slurmctld.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(start.pid, signal.SIGKILL)  # the start dies; the daemons it started live on
        start.wait()
        assert _daemons(conf), "the killed start left no daemon: nothing to clean up"
        conf.unlink()  # and the config is gone: Slurm's clients would retry it for 60 s

        status, seconds = script("status", 30)
        assert status.returncode == 1 and "down (no complete" in status.stdout, status
        assert seconds < 15, f"status took {seconds:.1f} s"  # not the 60 s of Slurm retries

        started, seconds = script("start", 120)
        assert started.returncode == 0, started.stdout + started.stderr
        assert "node is up" in started.stdout and seconds < 60, (seconds, started.stdout)
        status, seconds = script("status", 30)
        assert status.returncode == 0 and "up; node state" in status.stdout, status
        assert len(_daemons(conf)) == 2, "the killed start's daemons were not replaced"
    finally:
        stopped, seconds = script("stop", 60)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not _daemons(conf)
    again, seconds = script("stop", 30)
    assert again.returncode == 0 and seconds < 15, (seconds, again.stdout)
