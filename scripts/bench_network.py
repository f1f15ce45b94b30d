"""Which allreduce wins on a network: native, ring, tree and auto across simulated hosts whose
links are shaped, then the alpha-beta model fitted to them (scripts/scaling_model.py).

    sudo python scripts/bench_network.py [--rate 10gbit --rate 1gbit] [--quick]
        [--markdown OUT | --doc docs/scaling.md] [--json-dir DIR]

For each ``--rate`` the script starts its own 2-host cluster (scripts/ci/local-cluster.sh under
the name ``mpimlb`` on 10.78.0.0/24, so that it never touches the tests' cluster), shapes both
directions of every host's link with ``tc tbf`` at that rate, and runs
``scripts/bench_allreduce.py --worker`` across the hosts at 2 ranks (one per host) and 4 ranks
(two per host) with MPICH over TCP (``UCX_TLS=tcp,self``: the simulated hosts share one kernel,
see docs/multi-node.md). It stops the cluster afterwards, also on failure. Needs root.

Latency cannot be added on a kernel without ``tc netem`` (this machine's): the links then have
the latency of a veth pair and a bridge (tens of microseconds through TCP), which the fitted
alpha reports.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import scaling_model

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "scripts" / "ci" / "local-cluster.sh"
CLUSTER_ENV = {"MPIML_CLUSTER_NAME": "mpimlb", "MPIML_CLUSTER_SUBNET": "10.78.0",
               "MPIML_CLUSTER_PREFIX": "/tmp/mpiml-bench-cluster", "MPIML_CLUSTER_SLOTS": "2"}
#: The transport on simulated hosts, and one BLAS thread per rank.
RANK_ENV = {"UCX_TLS": "tcp,self", "UCX_NET_DEVICES": "mpiml0", "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cluster(*args: str) -> None:
    done = subprocess.run(["bash", str(CLUSTER), *args], env=dict(os.environ, **CLUSTER_ENV),
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"local-cluster.sh {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


def measure(rate: str, mpiexec: str, quick: bool) -> dict:
    """bench_allreduce.py's JSON for 2 and 4 ranks across 2 hosts on links shaped to ``rate``."""
    prefix = Path(CLUSTER_ENV["MPIML_CLUSTER_PREFIX"])
    cluster("stop")
    cluster("start", "2", "--rate", rate)
    results = []
    try:
        for ranks, per_host in ((2, 1), (4, 2)):
            cmd = [mpiexec, "-launcher", "ssh", "-launcher-exec", str(prefix / "ssh"),
                   "-f", str(prefix / "hostfile.mpich"), "-ppn", str(per_host), "-n", str(ranks),
                   sys.executable, str(ROOT / "scripts" / "bench_allreduce.py"), "--worker",
                   "--emit-json", "--quick", "--seconds", "0.05" if quick else "0.2",
                   "--rounds", "1" if quick else "2"]
            load = " ".join(f"{value:.2f}" for value in os.getloadavg())
            done = subprocess.run(cmd, env=dict(os.environ, **RANK_ENV), capture_output=True,
                                  text=True, timeout=1800)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
            line = next(text for text in done.stdout.splitlines() if text.startswith("{"))
            results.append(dict(json.loads(line), load_before=load, ranks_per_host=per_host))
    finally:
        cluster("stop")
    return {"rate": rate, "results": results}


def table(name: str, data: dict) -> str:
    """The measured latencies of one network, as bench_allreduce.py prints them."""
    out = []
    for result in data["results"]:
        p = result["ranks"]
        out += ["", f"**{name}, {p} ranks ({result['ranks_per_host']} per host; load "
                    f"{result['load_before']})**", "",
                "| size | native µs | ring µs | tree µs | auto µs | fastest |",
                "|---:|---:|---:|---:|---:|---|"]
        for nbytes, t in result["rows"]:
            fastest = min(("native", "ring", "tree"), key=lambda alg: t[alg])
            out.append(f"| {nbytes:,} B | {t['native'] * 1e6:.1f} | {t['ring'] * 1e6:.1f} | "
                       f"{t['tree'] * 1e6:.1f} | {t['auto'] * 1e6:.1f} | {fastest} |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", action="append", help="link rate for tc (default: 10gbit, "
                        "1gbit)")
    parser.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec"))
    parser.add_argument("--quick", action="store_true", help="shorter measurements")
    parser.add_argument("--markdown", help="write the tables here instead of stdout")
    parser.add_argument("--doc", help="replace the generated 'network' block of this file "
                        "(docs/scaling.md) with the tables")
    parser.add_argument("--json-dir", help="keep each network's bench_allreduce JSON here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: it creates network namespaces (scripts/ci/local-cluster.sh)")
    rates = args.rate or ["10gbit", "1gbit"]
    names = {rate: rate.replace("gbit", " Gb/s").replace("mbit", " Mb/s") for rate in rates}
    json_dir = Path(args.json_dir or tempfile.mkdtemp(prefix="bench-network-"))
    json_dir.mkdir(parents=True, exist_ok=True)
    networks, sections = {}, []
    for rate in rates:
        data = measure(rate, args.mpiexec, args.quick)
        path = json_dir / f"allreduce-{rate}.json"
        path.write_text(json.dumps(data))
        networks[names[rate]] = scaling_model.network_model(str(path))
        sections.append(table(names[rate], data))
    text = ("\n".join(sections) + "\n\n"
            + scaling_model.report(networks, scaling_model.FAMILIES) + "\n")
    if args.doc:
        replace_block(Path(args.doc), "network", text)
    if args.markdown:
        Path(args.markdown).write_text(text)
    elif not args.doc:
        sys.stdout.write(text)
    return 0


def replace_block(path: Path, name: str, text: str) -> None:
    """Put ``text`` between the ``begin generated: name`` / ``end generated`` markers."""
    doc = path.read_text()
    begin, end = f"<!-- begin generated: {name} -->", f"<!-- end generated: {name} -->"
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path} has no generated block '{name}'")
    head, rest = doc.split(begin, 1)
    path.write_text(f"{head}{begin}\n{text.strip()}\n{end}{rest.split(end, 1)[1]}")


if __name__ == "__main__":
    sys.exit(main())
