"""The simulated cluster as the multi-host tests see it: scripts/ci/local-cluster.sh and the
running cluster's state directory and link counters."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ci" / "local-cluster.sh"


def cluster_script(*args: str, env: dict | None = None,
                   timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=dict(os.environ, **(env or {})))


@dataclass(frozen=True)
class Cluster:
    """A running simulated cluster: its state directory (ssh wrapper, hostfiles) and hosts."""

    prefix: Path
    names: tuple[str, ...]

    @property
    def ssh(self) -> Path:
        return self.prefix / "ssh"

    def link_bytes(self) -> dict[str, tuple[int, int]]:
        """(bytes into the host, bytes out of it) per host, from the bridge side of its link."""
        counters = {}
        for name in self.names:
            stats = Path("/sys/class/net") / f"{name}b" / "statistics"
            counters[name] = (int((stats / "tx_bytes").read_text()),
                              int((stats / "rx_bytes").read_text()))
        return counters
