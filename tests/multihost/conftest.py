"""tests/multihost is collected only when MPIML_MULTIHOST_TESTS=1: `make test` sets it when it runs
as root (CI), `make test-multihost` always. Any other run ignores the directory (it starts no
hosts and skips no tests) and says why in its summary, from MPIML_MULTIHOST_TESTS_REASON.

The session's simulated cluster (scripts/ci/local-cluster.sh, 2 hosts) is started once by the
``cluster`` fixture and stopped at the end, unless it was already running before the session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from multihost_cluster import Cluster, cluster_script

ENABLE_VAR = "MPIML_MULTIHOST_TESTS"
REASON_VAR = "MPIML_MULTIHOST_TESTS_REASON"
SLURM_VAR = "MPIML_SLURM_TESTS"
HOSTS = 2


def _enabled() -> bool:
    return os.environ.get(ENABLE_VAR) == "1"


def pytest_ignore_collect(collection_path, config):
    if not _enabled() and collection_path.name.startswith("test_"):
        return True
    if collection_path.name.startswith("test_slurm") and os.environ.get(SLURM_VAR) != "1":
        return True  # multi-node Slurm also needs the Slurm layer's gate (tests/slurm)
    return None


def pytest_terminal_summary(terminalreporter):
    if not _enabled():
        reason = os.environ.get(REASON_VAR) or f"{ENABLE_VAR} is not 1"
        terminalreporter.write_line(f"Multi-host tests (tests/multihost) not run: {reason}",
                                    yellow=True)
    elif os.environ.get(SLURM_VAR) != "1":
        terminalreporter.write_line(f"Multi-node Slurm tests (tests/multihost/test_slurm_*) not "
                                    f"run: {SLURM_VAR} is not 1", yellow=True)


@pytest.fixture(scope="session")
def cluster():
    prefix = Path(os.environ.get("MPIML_CLUSTER_PREFIX", "/tmp/mpiml-cluster"))
    already_up = cluster_script("status", str(HOSTS), timeout=60).returncode == 0
    started = cluster_script("start", str(HOSTS), timeout=600)
    assert started.returncode == 0, f"local-cluster.sh start failed:\n{started.stdout}" \
                                    f"{started.stderr}"
    yield Cluster(prefix, tuple(f"mpiml-h{i + 1}" for i in range(HOSTS)))
    if not already_up:
        stopped = cluster_script("stop", timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
