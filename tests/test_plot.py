"""`python -m mpiml.plot RUN_DIR` renders a run's curves to PNG."""

import json
import sys

from launch import run

from mpiml.cli.plot import curves, latest_history


def write_run(run_dir, records):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_plot_writes_a_png(tmp_path):
    records = [{"event": "start"}]
    records += [{"step": s, "loss": 1.0 / s, "compute_s": 0.01 * s, "comm_s": 0.002 * s}
                for s in range(1, 30)]
    records += [{"step": 10 * e, "train_loss": 0.5 / e, "test": {"accuracy": 0.8 + 0.01 * e}}
                for e in range(1, 4)]
    records.append({"event": "done", "test": {"accuracy": 0.83}})
    write_run(tmp_path / "run", records)
    job = run([sys.executable, "-m", "mpiml.plot", str(tmp_path / "run")], timeout=120)
    assert job.returncode == 0, job.output
    png = (tmp_path / "run" / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_missing_run_directory_is_a_clear_error(tmp_path):
    job = run([sys.executable, "-m", "mpiml.plot", str(tmp_path / "nothing")], timeout=60)
    assert job.returncode == 1 and "metrics.jsonl does not exist" in job.output


def test_latest_history_keeps_resumed_segments_and_drops_older_runs():
    old = [{"event": "start"}, {"step": 1, "loss": 9.0}]
    fresh = [{"event": "start"}, {"step": 1, "loss": 1.0}]
    resumed = [{"event": "start"}, {"event": "resume", "step": 1}, {"step": 2, "loss": 0.5}]
    assert latest_history(old + fresh + resumed) == fresh + resumed
    assert latest_history(old) == old


def test_every_model_kind_has_curves():
    gradient = [{"step": 5, "loss": 0.7}, {"step": 10, "train_loss": 0.6,
                                            "test": {"accuracy": 0.8},
                                            "validation": {"log_loss": 0.5}}]
    kmeans = [{"step": 1, "of": 9, "inertia": 40.0}, {"step": 2, "of": 9, "inertia": 31.0}]
    boosting = [{"step": 1, "validation_loss": 0.6}, {"step": 2, "validation_loss": 0.55},
                {"step": 2, "train_loss": 0.4, "test": {"accuracy": 0.9}}]
    training, held_out = curves(gradient + [{"event": "done", "step": 10, "test": {"a": 1}}])
    assert training == {"training objective (batch)": [(5, 0.7)], "training loss": [(10, 0.6)]}
    assert held_out == {"test accuracy": [(10, 0.8)], "validation log_loss": [(10, 0.5)]}
    assert curves(kmeans)[0] == {"inertia": [(1, 40.0), (2, 31.0)]}
    training, held_out = curves(boosting)
    assert held_out["validation loss"] == [(1, 0.6), (2, 0.55)]
    assert training == {"training loss": [(2, 0.4)]} and held_out["test accuracy"] == [(2, 0.9)]
