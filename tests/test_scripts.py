"""Benchmark scripts keep working (smoke runs; their numbers live in docs/benchmarks.md)."""

import sys

from launch import ROOT, run


def test_bench_allreduce_quick_prints_a_table_per_rank_count():
    job = run([sys.executable, str(ROOT / "scripts" / "bench_allreduce.py"), "--quick",
               "--ranks", "2", "3"], timeout=300)
    assert job.returncode == 0, job.output
    assert "### 2 ranks" in job.output and "### 3 ranks" in job.output
    assert job.output.count("| 1 MiB |") == 2, job.output


def test_bench_checkpoint_prints_a_row_per_size():
    job = run([sys.executable, str(ROOT / "scripts" / "bench_checkpoint.py"), "--sizes-mb", "1",
               "2", "--repeats", "1"], timeout=120)
    assert job.returncode == 0, job.output
    assert "| 1 MB |" in job.output and "| 2 MB |" in job.output


def test_bench_reproducible_quick_prints_both_rows():
    job = run([sys.executable, str(ROOT / "scripts" / "bench_reproducible.py"), "--quick"],
              timeout=300)
    assert job.returncode == 0, job.output
    assert "| full-batch GD step |" in job.output and "| mini-batch SGD step (256) |" in job.output
