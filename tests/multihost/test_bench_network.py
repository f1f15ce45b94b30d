"""scripts/bench_network.py: native, ring, tree and auto across 2 simulated hosts on a shaped
link (its own cluster, beside the session's), then the alpha-beta fit and the projection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_network_measures_across_hosts_and_fits_the_model(tmp_path):
    out = tmp_path / "network.md"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_network.py"), "--rate",
                           "1gbit", "--quick", "--markdown", str(out), "--json-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    text = out.read_text()
    for heading in ("**1 Gb/s, 2 ranks (1 per host", "**1 Gb/s, 4 ranks (2 per host",
                    "### Fitted alpha-beta models", "### Projected time per step: 1 Gb/s"):
        assert heading in text, text
    assert "| 1 Gb/s | ring |" in text and "| 1 Gb/s | tree |" in text
    assert "| 1,048,576 B |" in text  # the largest quick size was measured
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "mpimlb-" not in leftover, leftover
