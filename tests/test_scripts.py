"""Benchmark scripts keep working (smoke runs; their numbers live in docs/benchmarks.md)."""

import sys

from launch import ROOT, run


def test_bench_allreduce_quick_prints_a_table_per_rank_count():
    job = run([sys.executable, str(ROOT / "scripts" / "bench_allreduce.py"), "--quick",
               "--ranks", "2", "3"], timeout=300)
    assert job.returncode == 0, job.output
    assert "### 2 ranks" in job.output and "### 3 ranks" in job.output
    assert job.output.count("| 1 MiB |") == 2, job.output
