"""Benchmark scripts keep working (smoke runs; their numbers live in docs/benchmarks.md)."""

import json
import os
import sys

import pytest
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


def test_local_slurm_status_and_stop_never_wait_on_a_missing_or_half_written_config(tmp_path):
    """What a start that failed halfway leaves (a prefix, a stale pid file, no or a truncated
    slurm.conf): status says down and stop succeeds at once, where Slurm's clients would retry
    the missing file for 60 s."""
    prefix = tmp_path / "slurm"
    (prefix / "run").mkdir(parents=True)
    (prefix / "run" / "slurmctld.pid").write_text("999999999\n")
    env = dict(os.environ, MPIML_SLURM_PREFIX=str(prefix))
    script = ["bash", str(ROOT / "scripts" / "ci" / "local-slurm.sh")]
    for conf_text in (None, "ClusterName=mpiml-ci\nSlurmctldHost=vm(127.0.0.1)\n"):
        if conf_text is not None:
            (prefix / "slurm.conf").write_text(conf_text)
        status = run([*script, "status"], timeout=30, env=env)
        assert status.returncode == 1 and "down (no complete" in status.output, status.output
        stop = run([*script, "stop"], timeout=30, env=env)
        assert stop.returncode == 0 and "stopped" in stop.output, stop.output
        assert status.seconds + stop.seconds < 15, (status.seconds, stop.seconds)  # not 60 s
    assert not (prefix / "run" / "slurmctld.pid").exists()


def test_scaling_model_recovers_the_alpha_beta_it_was_given(tmp_path):
    """scripts/scaling_model.py fits ring and tree times made from known alpha and beta (2 and
    4 ranks, 8 B .. 1 MiB) back to those values, and projects a step of every family."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import scaling_model

    alpha, beta = 20e-6, 1 / 1.1e9
    rows = {p: [[m, {"ring": scaling_model.ring_time(p, m, alpha, beta),
                     "tree": scaling_model.tree_time(p, m, 2 * alpha, beta), "native": 1.0,
                     "auto": 1.0}] for m in (8 << i for i in range(18))] for p in (2, 4)}
    path = tmp_path / "allreduce.json"
    path.write_text(json.dumps({"results": [{"ranks": p, "rows": r} for p, r in rows.items()]}))
    model = scaling_model.network_model(str(path))
    assert model["ring"]["alpha"] == pytest.approx(alpha, rel=1e-6)
    assert model["ring"]["beta"] == pytest.approx(beta, rel=1e-6)
    assert model["tree"]["alpha"] == pytest.approx(2 * alpha, rel=1e-6)
    assert model["ring"]["worst"] < 1e-6
    report = scaling_model.report({"test net": model}, scaling_model.FAMILIES)
    for family in scaling_model.FAMILIES:
        assert f"| {family} |" in report
    # the MLP's 1.6 MB per step is bandwidth-bound: the ring wins at 8 ranks
    compute, comm, algorithm = scaling_model.step_time(
        model, scaling_model.FAMILIES["MLP 784-256-10, SGD step (global batch 1,024)"], 8)
    assert algorithm == "ring" and comm > 0
