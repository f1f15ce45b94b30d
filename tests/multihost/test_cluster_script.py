"""scripts/ci/local-cluster.sh on a cluster of its own (name stem, subnet and state directory),
beside the session's: hosts with their own hostnames reached over ssh, status naming a host that
is down, shaped links, and stop removing everything, also after a crash, and twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from multihost_cluster import cluster_script


def leftovers(name: str, prefix: Path) -> list[str]:
    """Whatever a cluster named ``name`` could leave behind: namespaces, links, hosts files,
    its state directory."""
    found = [line for line in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                             text=True).stdout.splitlines()
             if line.startswith(f"{name}-")]
    found += [line for line in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                              text=True).stdout.splitlines()
              if f" {name}-" in line]
    found += [str(path) for path in Path("/etc/netns").glob(f"{name}-*")]
    sshd_alive = subprocess.run(["sh", "-c", "ps -C sshd -o stat= | grep -qv ^Z"]).returncode == 0
    marker = Path("/run/sshd/.made-by-local-cluster")  # removed with the last cluster's sshd
    return found + [str(path) for path in (prefix, marker)
                    if path.exists() and (path != marker or not sshd_alive)]


def test_cluster_lifecycle_status_shaping_and_stop_after_a_crash(tmp_path):
    name, prefix = "mpimlt", tmp_path / "cluster"
    env = {"MPIML_CLUSTER_NAME": name, "MPIML_CLUSTER_SUBNET": "10.77.1",
           "MPIML_CLUSTER_PREFIX": str(prefix)}
    try:
        began = time.monotonic()
        started = cluster_script("start", "2", "--rate", "1gbit", env=env)
        assert started.returncode == 0, started.stdout + started.stderr
        assert time.monotonic() - began < 20, "start of 2 hosts took over 20 s"

        status = cluster_script("status", env=env)
        assert status.returncode == 0, status.stdout
        assert f"{name}-h1 10.77.1.1 up" in status.stdout
        assert f"{name}-h2 10.77.1.2 up" in status.stdout
        remote = subprocess.run([str(prefix / "ssh"), "10.77.1.2", "hostname; cat /etc/hosts"],
                                capture_output=True, text=True, timeout=30)
        assert remote.stdout.startswith(f"{name}-h2\n"), remote.stdout + remote.stderr
        assert f"10.77.1.1 {name}-h1" in remote.stdout  # the hosts resolve each other
        for dev, netns in ((f"{name}-h1b", []), ("mpiml0", ["ip", "netns", "exec", f"{name}-h1"])):
            qdisc = subprocess.run([*netns, "tc", "qdisc", "show", "dev", dev],
                                   capture_output=True, text=True, timeout=30).stdout
            assert "tbf" in qdisc and "rate 1Gbit" in qdisc, qdisc

        more = cluster_script("status", "3", env=env)
        assert more.returncode != 0 and f"{name}-h3 10.77.1.3 down (no namespace" in more.stdout

        # a crash: host 2's sshd dies and the state directory is lost
        os.kill(int((prefix / f"{name}-h2" / "sshd.pid").read_text()), signal.SIGKILL)
        down = cluster_script("status", "2", env=env)
        assert down.returncode != 0 and f"{name}-h2 10.77.1.2 down" in down.stdout, down.stdout
        subprocess.run(["rm", "-rf", str(prefix)], check=True)
        again = cluster_script("start", "2", env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert cluster_script("status", "2", env=env).returncode == 0
    finally:
        stopped = cluster_script("stop", env=env)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not leftovers(name, prefix)
    began = time.monotonic()
    twice = cluster_script("stop", env=env)
    assert twice.returncode == 0 and time.monotonic() - began < 15, twice.stdout + twice.stderr


def test_delay_shapes_the_links_with_netem_or_says_the_kernel_lacks_it(tmp_path):
    name, prefix = "mpimld", tmp_path / "cluster"
    env = {"MPIML_CLUSTER_NAME": name, "MPIML_CLUSTER_SUBNET": "10.77.2",
           "MPIML_CLUSTER_PREFIX": str(prefix)}
    netem = subprocess.run(["sh", "-c", "zcat /proc/config.gz | grep -qx CONFIG_NET_SCH_NETEM=[ym]"
                            " || test -d /sys/module/sch_netem"]).returncode == 0
    try:
        started = cluster_script("start", "1", "--delay", "2ms", "--rate", "1gbit", env=env)
        if netem:
            assert started.returncode == 0, started.stdout + started.stderr
            qdisc = subprocess.run(["tc", "qdisc", "show", "dev", f"{name}-h1b"],
                                   capture_output=True, text=True, timeout=30).stdout
            assert "netem" in qdisc and "delay 2ms" in qdisc and "rate 1Gbit" in qdisc, qdisc
        else:
            assert started.returncode == 1, started.stdout + started.stderr
            assert "--delay needs tc netem, which this kernel lacks" in started.stderr
            assert not leftovers(name, prefix)
    finally:
        assert cluster_script("stop", env=env).returncode == 0
    assert not leftovers(name, prefix)
