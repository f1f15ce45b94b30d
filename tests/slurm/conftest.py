"""tests/slurm is collected only when MPIML_SLURM_TESTS=1: `make test` sets it when it runs as root
with apt-get (CI), `make test-slurm` always. Any other run ignores the directory (it starts no
daemons and skips no tests) and says why in its summary, from MPIML_SLURM_TESTS_REASON.
"""

from __future__ import annotations

import os

ENABLE_VAR = "MPIML_SLURM_TESTS"
REASON_VAR = "MPIML_SLURM_TESTS_REASON"


def _enabled() -> bool:
    return os.environ.get(ENABLE_VAR) == "1"


def pytest_ignore_collect(collection_path, config):
    if not _enabled() and collection_path.name.startswith("test_"):
        return True
    return None


def pytest_terminal_summary(terminalreporter):
    if not _enabled():
        reason = os.environ.get(REASON_VAR) or f"{ENABLE_VAR} is not 1"
        terminalreporter.write_line(f"Slurm tests (tests/slurm) not run: {reason}", yellow=True)
