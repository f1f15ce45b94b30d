"""`python -m mpiml.train` and `python -m mpiml.predict` as users run them, under real launchers."""

import json
import re
import sys

import h5py
import numpy as np
import pytest
import yaml
from datasets import make_problem, write_dense
from launch import needs_openmpi, run, run_mpi


@pytest.fixture
def binary_file(tmp_path):
    X, y = make_problem("binary", 1200, 6, seed=5)
    path = tmp_path / "binary.h5"
    write_dense(path, X[:1000], y[:1000], X[1000:], y[1000:])
    return path


def write_config(tmp_path, binary_file, **sections):
    raw = {"data": {"train": str(binary_file), "test": str(binary_file)},
           "model": {"kind": "logistic", "alpha": 0.001},
           "optimizer": {"name": "sgd", "lr": 0.5},
           "train": {"epochs": 3, "batch_size": 64, "log_every": 5},
           "output": {"dir": str(tmp_path / "run")}}
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("mpi", "nprocs"), [("mpich", 2), ("mpich", 3), ("openmpi", 2)])
def test_training_job_writes_config_metrics_and_model(tmp_path, binary_file, mpi, nprocs):
    needs_openmpi(mpi)
    cfg = write_config(tmp_path, binary_file)
    job = run_mpi(nprocs, ["-m", "mpiml.train", str(cfg)], timeout=120, mpi=mpi)
    assert job.returncode == 0, job.output
    run_dir = tmp_path / "run"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["ranks"] == nprocs
    done = records[-1]
    assert done["event"] == "done" and done["steps"] == 3 * 16
    assert done["test"]["accuracy"] > 0.8
    assert sum(1 for r in records if "loss" in r) == 3 * 16 // 5
    assert all(r["bytes_reduced"] > 0 for r in records if "loss" in r)
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["optimizer"]["lr"] == 0.5
    with h5py.File(run_dir / "model.h5") as model:
        assert model.attrs["kind"] == "logistic" and model["model/params"].shape == (7,)
    assert job.output.count("event=done") == 1, "only rank 0 prints"
    steps = [r for r in records if "loss" in r]
    assert all(r["of"] == 48 and r["epochs"] == 3 and r["rows_per_s"] > 0 and r["eta_s"] >= 0
               for r in steps), steps
    assert [r["epoch"] for r in steps][:3] == [1, 1, 1] and steps[-1]["epoch"] == 3
    assert "step=5/48" in job.output and "epoch=1/3" in job.output and "eta=" in job.output


def test_predict_matches_training_accuracy(tmp_path, binary_file):
    cfg = write_config(tmp_path, binary_file)
    assert run_mpi(2, ["-m", "mpiml.train", str(cfg), "--quiet"], timeout=120).returncode == 0
    out = tmp_path / "pred.h5"
    job = run_mpi(3, ["-m", "mpiml.predict", str(tmp_path / "run" / "model.h5"),
                      str(binary_file), "--x", "X_test", "--out", str(out)], timeout=120)
    assert job.returncode == 0, job.output
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    accuracy = json.loads(records[-1])["test"]["accuracy"]
    with h5py.File(out) as pred, h5py.File(binary_file) as src:
        assert pred["prediction"].shape == (200,) and pred["proba"].shape == (200, 2)
        assert np.mean(pred["prediction"][()] == src["y_test"][()]) == pytest.approx(accuracy)
        np.testing.assert_allclose(pred["proba"][()].sum(axis=1), 1.0)


@pytest.mark.parametrize(("override", "message"), [
    ("optimizer.lrr=0.1", "did you mean 'lr'?"),
    ("data.train=/nonexistent/file.h5", "/nonexistent/file.h5"),
    ("data.x=features", "features"),
])
def test_bad_input_ends_every_rank_with_one_clear_message(tmp_path, binary_file, override,
                                                          message):
    cfg = write_config(tmp_path, binary_file)
    job = run_mpi(3, ["-m", "mpiml.train", str(cfg), "--set", override], timeout=60)
    assert not job.timed_out and job.returncode != 0, job.output
    assert job.seconds < 20
    assert message in job.output
    assert job.output.count("mpiml: error:") == 1, job.output


def test_print_config_shows_defaults():
    job = run([sys.executable, "-m", "mpiml.train", "--print-config"], timeout=60)
    assert job.returncode == 0
    assert yaml.safe_load(job.output)["comm"]["mode"] == "sync"


def first_logged_loss(run_dir):
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "loss" in record:
            return record["loss"]
    raise AssertionError("no loss logged")


def test_warm_start_continues_from_saved_model_and_rejects_mismatch(tmp_path, binary_file):
    cfg = write_config(tmp_path, binary_file, train={"log_every": 1, "epochs": 1})
    assert run_mpi(2, ["-m", "mpiml.train", str(cfg), "--quiet"], timeout=120).returncode == 0
    saved = tmp_path / "run" / "model.h5"
    cold = first_logged_loss(tmp_path / "run")
    warm_dir = tmp_path / "warm"
    job = run_mpi(3, ["-m", "mpiml.train", str(cfg), "--quiet", "--set", f"model.init_from={saved}",
                      "--set", f"output.dir={warm_dir}"], timeout=120)
    assert job.returncode == 0, job.output
    warm = first_logged_loss(warm_dir)
    assert cold == pytest.approx(np.log(2), rel=0.05) and warm < 0.6 * cold, (cold, warm)
    job = run_mpi(2, ["-m", "mpiml.train", str(cfg), "--set", f"model.init_from={saved}",
                      "--set", "model.kind=svm", "--set", f"output.dir={tmp_path / 'x'}"],
                  timeout=60)
    assert job.returncode == 1 and "does not match this run: kind logistic (config: svm)" in (
        job.output), job.output


@pytest.mark.parametrize(("kind", "section", "total"), [("kmeans", {"n_clusters": 3, "tol": 0.0,
                                                                    "max_iter": 8}, 8),
                                                        ("hgbt_classifier",
                                                         {"n_estimators": 4}, 4)])
def test_kmeans_and_trees_log_every_round_with_its_pace(tmp_path, binary_file, kind, section,
                                                        total):
    """Issue 17: a 4-tree run with log_every 1 gave 4 lines in all, and the start record of a
    tree run said optimizer=sgd mode=sync."""
    cfg = write_config(tmp_path, binary_file, model={"kind": kind}, train={"log_every": 1},
                       **{"kmeans" if kind == "kmeans" else "hgbt": section})
    job = run_mpi(2, ["-m", "mpiml.train", str(cfg)], timeout=120)
    assert job.returncode == 0, job.output
    records = [json.loads(line)
               for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "optimizer" not in records[0] and "mode" not in records[0]
    rounds = [r for r in records if "of" in r]
    assert rounds and [r["step"] for r in rounds] == list(range(1, len(rounds) + 1))
    assert all(r["of"] == total and r["seconds_per_round"] > 0 and r["eta_s"] >= 0
               for r in rounds)
    if kind == "kmeans":
        assert all(r["inertia"] > 0 for r in rounds)
    else:
        assert len(rounds) == total
    assert f"step=1/{total}" in job.output


def test_records_carry_wall_time_and_identity_and_time_continues_across_a_resume(
        tmp_path, binary_file):
    """Issue 17: no record had the wall-clock time, mpiml version or config digest, and time_s
    restarted in every resumed process."""
    import mpiml
    from mpiml import config as mpiml_config

    cfg = write_config(tmp_path, binary_file)
    assert run_mpi(2, ["-m", "mpiml.train", str(cfg), "--quiet", "--set", "train.epochs=1"],
                   timeout=120).returncode == 0
    assert run_mpi(2, ["-m", "mpiml.train", str(cfg), "--quiet", "--set", "train.epochs=2"],
                   timeout=120).returncode == 0
    records = [json.loads(line)
               for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    times = [r["time_s"] for r in records]
    assert times == sorted(times), "time_s continues across the resume"
    assert all(abs(r["wall"] - records[0]["wall"]) < 600 for r in records)
    starts = [r for r in records if r.get("event") == "start"]
    digest = mpiml_config.load(cfg, ["train.epochs=2"]).digest()
    assert len(starts) == 2 and starts[1]["config_digest"] == digest
    assert all(s["version"] == mpiml.__version__ and s["lineage"] for s in starts)


def files_under(path):
    return {p: p.stat().st_mtime_ns for p in sorted(path.rglob("*"))}


def test_dry_run_prints_what_each_rank_would_hold_and_writes_nothing(tmp_path, binary_file):
    """Issue 17: --print-config checked the config but not the data. 1000 training rows on 3
    ranks: 334, 333, 333; 200 validation and test rows: 67, 67, 66; 64-row batches: 16 steps."""
    cfg = write_config(tmp_path, binary_file, data={
        "validation": str(binary_file), "validation_x": "X_test", "validation_y": "y_test"})
    before = files_under(tmp_path)
    job = run_mpi(3, ["-m", "mpiml.train", str(cfg), "--dry-run"], timeout=60, cwd=tmp_path)
    assert job.returncode == 0, job.output
    assert files_under(tmp_path) == before, "nothing written, output.dir not created"
    lines = job.output.splitlines()
    assert lines[0] == f"mpiml: dry run of {cfg} on 3 ranks (nothing trained or written)"
    assert lines[1:7] == ["train rows: 1000 (rank 0: 334, ranks 1-2: 333)",
                          "validation rows: 200 (ranks 0-1: 67, rank 2: 66)",
                          "test rows: 200 (ranks 0-1: 67, rank 2: 66)",
                          "features: 6",
                          "classes: 2 (0.0, 1.0)",
                          "steps per epoch: 16; steps in all: at most 48 (mini-batches of 64 "
                          "rows)"], job.output
    memory = re.fullmatch(r"memory per rank \(estimate, largest rank\): (.+) = data (.+) \+ "
                          r"model (.+) \+ working arrays (.+)", lines[7])
    assert memory, job.output
    # rank 0's rows: 6 float64 features and an int64 class index each
    assert memory[2] == f"{(334 + 67 + 67) * (6 * 8 + 8) / 1024:.3g} KiB"
    assert memory[3] == f"{2 * 7 * 8} B"  # sgd: the 7 parameters and their gradient
    assert len(lines) == 8, job.output


def test_dry_run_fails_on_bad_data_with_the_error_training_gives(tmp_path, binary_file):
    """The dry run reads every row, as training does: a NaN deep in one rank's rows ends both
    with the same one line, and neither creates output.dir."""
    with h5py.File(binary_file, "a") as data:
        data["X"][700, 2] = np.nan
    cfg = write_config(tmp_path, binary_file)
    errors = []
    for flags in ([], ["--dry-run"]):
        job = run_mpi(3, ["-m", "mpiml.train", str(cfg), *flags], timeout=60)
        assert job.returncode == 1, job.output
        errors.append([line for line in job.output.splitlines() if "mpiml: error:" in line])
    assert errors[0] == errors[1] and len(errors[0]) == 1, errors
    assert "global row 700, column 2" in errors[0][0]
    assert not (tmp_path / "run").exists()
