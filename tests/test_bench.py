"""CI smoke test of the benchmark runner: `scripts/bench_all.py --quick` runs every benchmark on
small data and writes its tables and plots (the numbers themselves live in docs/benchmarks.md)."""

import re
import sys

from launch import ROOT, run

BLOCKS = ("environment", "targets", "training", "kmeans-hgbt", "allreduce", "data", "checkpoint",
          "out-of-core",
          "startup", "reproducible")


def test_quick_runner_writes_every_table_and_plot(tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text("# Benchmarks\n\nProse kept.\n\n<!-- begin generated: targets -->\nold\n"
                   "<!-- end generated: targets -->\n\nMore prose.\n")
    job = run([sys.executable, str(ROOT / "scripts" / "bench_all.py"), "--quick", "--out",
               str(out)], timeout=170)
    assert job.returncode == 0, job.output
    text = out.read_text()
    assert "Prose kept." in text and "More prose." in text and "\nold\n" not in text
    for name in BLOCKS:
        block = re.search(f"<!-- begin generated: {name} -->(.*?)<!-- end generated: {name} -->",
                          text, re.S)
        assert block is not None, f"no {name} block:\n{text}"
        assert block.group(1).count("\n|") >= 2, f"{name} has no table:\n{block.group(1)}"
    targets = re.search("begin generated: targets -->(.*?)<!--", text, re.S).group(1)
    for row in ("L-BFGS logistic", "L-BFGS softmax", "full-batch gradient", "SGD epoch",
                "K-Means", "per tree", "strong scaling", "allreduce", "per-step overhead",
                "checkpointing"):
        assert row in targets, f"target row {row!r} missing:\n{targets}"
    for plot in ("allreduce_latency.png", "allreduce_bandwidth.png", "time_to_objective.png"):
        assert (tmp_path / "img" / plot).stat().st_size > 1000
